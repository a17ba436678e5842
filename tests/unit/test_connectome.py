"""connectome: the multi-hop graph, and faithfulness checked against a brute-force ablation written here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from feature_lens_core import connectome
from feature_lens_core.connectome import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    build_graph,
    faithfulness,
    graph_rankings,
    node_id,
)
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.ranking import FeatureRef, activations, has_side, rank
from tests.helpers import CORRUPT, PROMPT, cache_of, make_saes

pytestmark = pytest.mark.unit
# Two SAEs write blocks.0.hook_mlp_out (the transcoder, then the MLP-output SAE reading its result), and a
# hook_z SAE: the cases where the order and shape of the ablations matter.
UNIVERSE = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L0.mlp_out", "L1.attn_z", "L1.transcoder"]
TARGET_SAE, Q = "L2.resid_pre", 9


def brute_force_outside(model, saes, names, target: FeatureRef, kept: set[tuple[str, int, int]]) -> float:
    """The target in one full forward pass where, at every SAE's output hook in forward order, the model's
    activation is replaced by decode(features) + error with every node not in `kept` zeroed."""
    reads: dict[str, torch.Tensor] = {}
    n_pos = model.to_tokens(PROMPT).shape[1]
    masks = {name: torch.zeros(n_pos, saes[name].cfg.d_sae + 1, dtype=torch.bool) for name in names}
    for source, feature, position in kept:
        masks[source][position, feature + 1] = True

    def splice(act, hook):
        for name in names:
            sae = saes[name]
            if (sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name) != hook.name:
                continue
            x = reads[name] if sae.cfg.metadata.hook_name_out else act
            feats = sae.encode(x)
            error = act - sae.decode(feats).reshape(act.shape)
            mask = masks[name]
            feats = feats * mask[None, :, 1:]
            error = error * mask[None, :, :1].reshape(1, n_pos, *[1] * (act.dim() - 2))
            act = sae.decode(feats).reshape(act.shape) + error
        return act

    def read(name):
        def grab(act, hook):
            reads[name] = act

        return grab

    seen = {}
    fwd = [(saes[n].cfg.metadata.hook_name, read(n)) for n in names if saes[n].cfg.metadata.hook_name_out]
    fwd += [
        (h, splice)
        for h in dict.fromkeys(saes[n].cfg.metadata.hook_name_out or saes[n].cfg.metadata.hook_name for n in names)
    ]
    fwd.append((saes[target.sae].cfg.metadata.hook_name, lambda act, hook: seen.update(x=act)))
    with torch.no_grad():
        model.run_with_hooks(model.to_tokens(PROMPT), return_type=None, fwd_hooks=fwd)
        return float(saes[target.sae].encode(seen["x"][0, target.position])[target.feature])


def strongest(model, sae, position: int) -> int:
    acts = activations(model, sae, PROMPT)
    return int(acts[acts.position == position].iloc[0].feature)


@pytest.fixture(scope="module")
def strong(model):
    """SAEs whose features carry more than their error nodes (decoder rows of norm 1), so graphs mix both."""
    return make_saes(model, decoder_norm=1.0)


@pytest.fixture(scope="module")
def setting(model, strong):
    picked = {name: strong[name] for name in [*UNIVERSE, TARGET_SAE]}
    return picked, FeatureRef(TARGET_SAE, strongest(model, strong[TARGET_SAE], Q), Q)


def every_node(model, saes, names) -> set[tuple[str, int, int]]:
    n_pos = model.to_tokens(PROMPT).shape[1]
    return {(n, f, p) for n in names for f in range(-1, saes[n].cfg.d_sae) for p in range(n_pos)}


def frame_of(nodes: set[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(sorted(nodes), columns=["sae", "feature", "position"])


def test_faithfulness_equals_brute_force_ablation(model, setting):
    saes, target = setting
    graph = build_graph(model, saes, PROMPT, target, method="attribution", hops=2, node_budget=10)
    kept = {(r.sae, r.feature, r.position) for r in graph.nodes.itertuples() if r.side == "upstream"}
    assert len(kept) == 10 and any(f == -1 for _, f, _ in kept)
    rng = np.random.default_rng(0)
    everything = sorted(every_node(model, saes, UNIVERSE))
    random = {everything[i] for i in rng.choice(len(everything), size=len(everything) // 3, replace=False)}
    full = brute_force_outside(model, saes, UNIVERSE, target, every_node(model, saes, UNIVERSE))
    empty = brute_force_outside(model, saes, UNIVERSE, target, set())
    for nodes in (kept, random):
        got = faithfulness(model, saes, PROMPT, target, frame_of(nodes))
        graph_value = brute_force_outside(model, saes, UNIVERSE, target, nodes)
        torch.testing.assert_close(
            torch.tensor([got.full, got.empty, got.kept], dtype=torch.float64),
            torch.tensor([full, empty, graph_value], dtype=torch.float64),
            rtol=1e-9,
            atol=1e-12,
        )
        assert got.score == pytest.approx((graph_value - empty) / (full - empty), rel=1e-9)
    assert graph.faithfulness == faithfulness(model, saes, PROMPT, target, graph.nodes)


def test_faithfulness_is_one_for_every_active_node_and_zero_for_none(model, setting):
    saes, target = setting
    with torch.no_grad():
        clean = cache_of(model, PROMPT)
        read = clean[saes[TARGET_SAE].cfg.metadata.hook_name][0, Q]
        g = float(saes[TARGET_SAE].encode(read)[target.feature])
    active = set()
    for name in UNIVERSE:
        acts = activations(model, saes[name], PROMPT)
        active |= {(name, f, p) for f, p in zip(acts.feature, acts.position, strict=True) if p <= Q}
        active |= {(name, -1, p) for p in range(Q + 1)}
    whole = faithfulness(model, saes, PROMPT, target, frame_of(active))
    assert whole.full == pytest.approx(g, rel=1e-12)
    assert whole.kept == pytest.approx(whole.full, rel=1e-12) and whole.score == pytest.approx(1.0, rel=1e-12)
    assert faithfulness(model, saes, PROMPT, target, frame_of(set())).score == 0.0


def test_graph_is_expanded_hop_by_hop_within_the_budget(model, setting):
    saes, target = setting
    graph = build_graph(model, saes, PROMPT, target, method="attribution", hops=2, node_budget=9)
    nodes, edges = graph.nodes, graph.edges
    assert list(nodes.columns) == NODE_COLUMNS and list(edges.columns) == EDGE_COLUMNS
    assert graph.target == node_id(target.sae, target.feature, Q) == nodes.id.iloc[0]
    assert len(nodes) == 10 and nodes.id.is_unique
    assert list(nodes.hop.value_counts().sort_index()) == [1, 5, 4]  # ceil(9 / 2) nodes, then the rest
    assert set(edges.source) | set(edges.target) <= set(nodes.id)
    assert not edges.duplicated(["source", "target"]).any()
    assert (edges[edges.hop == 1].target == graph.target).all()
    errors = set(nodes[nodes.kind == "error"].id)
    assert not errors & set(edges.target)  # error nodes are leaves
    assert (nodes[nodes.kind == "error"].label == "error").all() and (nodes[nodes.kind == "error"].feature == -1).all()
    first = rank(model, saes, PROMPT, target, direction="upstream", method="attribution")
    assert list(edges[edges.hop == 1].score) == list(first.score.head(5))
    for edge in edges[edges.hop == 2].itertuples():
        parent = nodes.set_index("id").loc[edge.target]
        scores = rank(
            model,
            saes,
            PROMPT,
            FeatureRef(parent.sae, int(parent.feature), int(parent.position)),
            direction="upstream",
            method="attribution",
        )
        source = nodes.set_index("id").loc[edge.source]
        match = scores[
            (scores.sae == source.sae) & (scores.feature == source.feature) & (scores.position == source.position)
        ]
        assert match.score.iloc[0] == edge.score
    weakest = edges[edges.hop == 2].score.abs().min()
    strict = build_graph(model, saes, PROMPT, target, hops=2, node_budget=9, threshold=float(weakest) * 2)
    assert (strict.edges.score.abs() >= weakest * 2).all()


def test_downstream_and_both(model, strong):
    saes = strong
    source = FeatureRef("L0.resid_pre", strongest(model, saes["L0.resid_pre"], 3), 3)
    down = build_graph(model, saes, PROMPT, source, method="direct", direction="downstream", hops=2, node_budget=6)
    assert down.faithfulness is None
    assert (down.edges[down.edges.hop == 1].source == down.target).all()
    assert set(down.nodes.side) == {"target", "downstream"} and (down.nodes.kind == "feature").all()
    middle = FeatureRef("L1.resid_pre", strongest(model, saes["L1.resid_pre"], 8), 8)
    both = build_graph(model, saes, PROMPT, middle, direction="both", hops=1, node_budget=7)
    assert both.nodes.side.value_counts().to_dict() == {"upstream": 4, "downstream": 3, "target": 1}
    assert both.faithfulness is not None and math.isfinite(both.faithfulness.score)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"direction": "sideways"}, "Unknown direction"),
        ({"hops": 0}, "hops must be"),
        ({"node_budget": 0}, "node_budget must be"),
        ({"node_budget": 10**6, "hops": 3}, "node_budget=1000000 is more than this can finish"),
        ({"hops": 11}, "hops=11 is more than this can finish"),
        ({"threshold": -1.0}, "threshold must be"),
        ({"method": "magic"}, "Unknown method"),
    ],
)
def test_bad_graph_arguments_are_refused(model, setting, arguments, message):
    saes, target = setting
    with pytest.raises(FeatureLensError, match=message):
        build_graph(model, saes, PROMPT, target, **arguments)


@pytest.mark.parametrize(("direction", "hops", "budget"), [("upstream", 3, 9), ("both", 2, 8), ("upstream", 1, 5)])
def test_the_cost_model_bounds_the_rankings_a_graph_runs(model, setting, monkeypatch, direction, hops, budget):
    saes, target = setting
    calls, real = [], connectome.rank

    def counted(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(connectome, "rank", counted)
    graph = build_graph(model, saes, PROMPT, target, direction=direction, hops=hops, node_budget=budget)
    assert len(calls) <= graph_rankings(hops, budget, direction)
    # Exactly: the target once per side, then every feature node added before the last hop that has that side.
    ranked = [
        row
        for row in graph.nodes.itertuples()
        if row.kind == "feature"
        and 1 <= row.hop < hops
        and has_side(saes, FeatureRef(row.sae, int(row.feature), int(row.position)), row.side)
    ]
    assert len(calls) == len(graph.nodes.side.unique()) - 1 + len(ranked)


def test_progress_counts_each_ranking_and_candidates_reach_every_upstream_ranking(model, setting, monkeypatch):
    saes, target = setting
    seen, real = [], connectome.rank

    def counted(*args, **kwargs):
        seen.append(kwargs["candidates"])
        return real(*args, **kwargs)

    monkeypatch.setattr(connectome, "rank", counted)
    reports: list[tuple[int, int]] = []
    settings = {"hops": 3, "node_budget": 9, "method": "activation"}
    capped = build_graph(model, saes, PROMPT, target, candidates=4, progress=lambda *r: reports.append(r), **settings)
    most = graph_rankings(3, 9)
    assert reports == [(done, most) for done in range(1, len(seen) + 1)] and 1 <= len(seen) <= most
    assert set(seen) == {4}
    # Patching only the 4 strongest candidates is the attribution-chosen subset of the exact ranking's edges.
    assert len(capped.edges) <= 4 * len(seen)


def test_faithfulness_with_a_corrupt_prompt_equal_to_the_prompt_changes_nothing(model, setting):
    saes, target = setting
    same = faithfulness(model, saes, PROMPT, target, frame_of(set()), baseline="corrupt", corrupt_prompt=PROMPT)
    assert same.empty == pytest.approx(same.full, rel=1e-12) and math.isnan(same.score)
    later = FeatureRef(TARGET_SAE, strongest(model, saes[TARGET_SAE], 14), 14)  # the prompts differ at 11-12
    other = faithfulness(model, saes, PROMPT, later, frame_of(set()), baseline="corrupt", corrupt_prompt=CORRUPT)
    assert other.empty != pytest.approx(other.full)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (pd.DataFrame({"sae": ["L0.attn_z"], "feature": [3]}), "position missing"),
        (pd.DataFrame({"sae": ["L0.attn_z"], "feature": [48], "position": [1]}), "outside -1"),
    ],
)
def test_bad_faithfulness_nodes_are_refused(model, setting, nodes, message):
    saes, target = setting
    with pytest.raises(FeatureLensError, match=message):
        faithfulness(model, saes, PROMPT, target, nodes)
