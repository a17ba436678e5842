"""Whole-prompt attribution graphs: every row is the direct ranking of its target, token nodes are the frozen
derivative through the embedding, influence is the matrix series, pruning keeps what it promises, the scores
are the shares they claim, and circuit-tracer's own pruning and scores (where installed) agree on the same
adjacency."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_lens_core import cli
from feature_lens_core.attribution_graph import AttributionGraph, adjacency, attribution_graph
from feature_lens_core.connectome import EDGE_COLUMNS, NODE_COLUMNS, faithfulness
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods.linear import covered_blocks
from feature_lens_core.ranking import has_side, rank
from feature_lens_core.targets import FeatureRef, LogitRef
from tests.helpers import PROMPT, cache_of, frozen_change

pytestmark = pytest.mark.unit
RTOL = 1e-6  # the tiny model runs in float64
SETS = {
    "blocks": ["L0.attn_z", "L0.mlp_out", "L1.attn_z", "L1.mlp_out", "L2.attn_z", "L2.mlp_out"],
    "transcoders": ["L0.transcoder", "L1.transcoder", "L2.transcoder"],
    "partial": ["L0.attn_z", "L1.resid_pre", "L2.mlp_out"],
}


@pytest.fixture(scope="module", params=list(SETS))
def built(request, model, saes) -> tuple[dict, AttributionGraph]:
    chosen = {name: saes[name] for name in SETS[request.param]}
    return chosen, adjacency(model, chosen, PROMPT, max_logits=3, batch_size=7)


def _row(graph: AttributionGraph, node: str) -> dict[str, float]:
    index = int(np.flatnonzero(graph.nodes.id.to_numpy() == node)[0])
    return dict(zip(graph.nodes.id, graph.adjacency[index].tolist(), strict=True))


def _assert_row_is_the_ranking(model, chosen, graph: AttributionGraph, node: str, target) -> None:
    frame = rank(model, chosen, PROMPT, target, method="direct", direction="upstream")
    row = _row(graph, node)
    frame["id"] = [f"{r.sae}:{'error' if r.feature < 0 else r.feature}@{r.position}" for r in frame.itertuples()]
    # A feature whose pre-activation is zero to float rounding (1e-16) can be active in one pass and not in
    # the other (the ranking's pass stops at the target's position); nothing else may differ.
    only_ranked = frame.loc[~frame.id.isin(list(row))]
    assert (only_ranked.activation.abs() < 1e-9).all(), only_ranked
    shared = frame.loc[frame.id.isin(list(row))]
    got = torch.tensor([row[i] for i in shared.id], dtype=torch.float64)
    expected = torch.tensor(shared.score.to_numpy())
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=RTOL * scale)
    # Every other SAE column of the row (sources the ranking does not list) is zero.
    others = graph.nodes.loc[graph.nodes.kind.isin(["feature", "error"]) & ~graph.nodes.id.isin(list(frame.id))]
    assert all(abs(row[i]) <= RTOL * scale for i in others.id)


def test_each_logit_row_is_the_direct_ranking_of_that_logit(model, built):
    chosen, graph = built
    logits = graph.nodes.loc[graph.nodes.kind == "logit"]
    assert len(logits) == 3
    for node in logits.itertuples():
        _assert_row_is_the_ranking(model, chosen, graph, node.id, LogitRef(int(node.feature), int(node.position)))


def test_each_feature_row_is_the_direct_ranking_of_that_feature(model, built):
    chosen, graph = built
    features = graph.nodes.loc[graph.nodes.kind == "feature"]
    checked = 0
    for name in chosen:
        mine = features.loc[features.sae == name]
        for node in mine.iloc[:: max(1, len(mine) // 3)].head(3).itertuples():
            target = FeatureRef(name, int(node.feature), int(node.position))
            if not has_side(chosen, target, "upstream"):
                # No SAE upstream: only the token embeddings have edges into it.
                tokens = graph.n_features + graph.n_errors
                assert not graph.adjacency[int(node.Index), :tokens].any()
                assert graph.adjacency[int(node.Index), tokens : tokens + graph.n_tokens].any()
                continue
            _assert_row_is_the_ranking(model, chosen, graph, node.id, target)
            checked += 1
    assert checked >= 3


def test_token_nodes_are_the_frozen_derivative_through_the_embedding(model, built):
    chosen, graph = built
    clean = cache_of(model, PROMPT)
    covered = covered_blocks(chosen.values())
    top = graph.nodes.loc[graph.nodes.kind == "logit"].iloc[0]
    read = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    direction = model.W_U[:, int(top.feature)] - model.W_U.mean(1)
    last = int(top.position)
    scale = clean["ln_final.hook_scale"][:, last]

    def logit(x):  # the centred logit with ln_final at its clean scale (the offset drops out of a derivative)
        with model.hooks(fwd_hooks=[("ln_final.hook_scale", lambda act, hook: scale)]):
            return model.ln_final(x[:, last])[0] @ direction

    row = _row(graph, str(top.id))
    for position in (0, last - 1, last):
        change = -clean["hook_embed"][0, position]  # ablating a token node removes its embedding
        expected = frozen_change(model, PROMPT, "hook_embed", position, change, read, logit, covered)
        assert row[f"tokens@{position}"] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_errors_and_tokens_are_sources_only_and_no_edge_runs_backwards_in_time(built):
    _, graph = built
    first_source_only = graph.n_features
    last_source_only = graph.n_features + graph.n_errors + graph.n_tokens
    assert not graph.adjacency[first_source_only:last_source_only].any()
    targets, sources = graph.adjacency.nonzero(as_tuple=True)
    positions = torch.tensor(graph.nodes.position.to_numpy())
    assert (positions[sources] <= positions[targets]).all()
    assert (targets != sources).all()
    assert not graph.adjacency[:, len(graph.adjacency) - graph.n_logits :].any()  # nothing reads a logit


def test_influence_is_the_series_of_the_normalised_matrix(built):
    _, graph = built
    magnitude = graph.adjacency.abs()
    normalised = magnitude / magnitude.sum(-1, keepdim=True).clamp(min=1e-10)
    eye = torch.eye(len(normalised), dtype=normalised.dtype)
    closed_form = graph.logit_weights() @ (torch.linalg.inv(eye - normalised) - eye)
    torch.testing.assert_close(graph.influence(), closed_form, rtol=1e-9, atol=1e-12)


def test_pruning_keeps_tokens_logits_and_only_connected_features(built):
    _, graph = built
    pruning = graph.prune()
    n = len(graph.adjacency)
    assert pruning.nodes[graph.n_features + graph.n_errors :].all()
    assert int(pruning.nodes[: graph.n_features].sum()) < graph.n_features
    kept_features = pruning.nodes[: graph.n_features].nonzero().flatten()
    assert pruning.edges[kept_features].any(1).all()  # an incoming edge each
    assert pruning.edges[:, kept_features].any(0).all()  # an outgoing edge each
    assert not pruning.edges[~pruning.nodes].any() and not pruning.edges[:, ~pruning.nodes].any()
    assert not (pruning.edges & (graph.adjacency == 0)).any()
    assert pruning.edges.shape == (n, n)


def test_a_higher_threshold_keeps_more(built):
    _, graph = built
    counts = [int(graph.prune(node_threshold=t, edge_threshold=1.0).nodes.sum()) for t in (0.5, 0.8, 0.95)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_the_scores_are_shares_and_one_without_errors(built):
    _, graph = built
    for scores in (graph.scores(), graph.scores(graph.prune())):
        assert 0 <= scores.replacement <= 1 and 0 <= scores.completeness <= 1
    without_errors = graph.adjacency.clone()
    without_errors[:, graph.n_features : graph.n_features + graph.n_errors] = 0
    perfect = dataclasses.replace(graph, adjacency=without_errors).scores()
    assert perfect.replacement == pytest.approx(1.0) and perfect.completeness == pytest.approx(1.0)


def test_attribution_graph_is_a_pruned_graph_on_the_top_logit(model, saes, tmp_path: Path):
    chosen = {name: saes[name] for name in SETS["blocks"]}
    graph = attribution_graph(model, chosen, PROMPT, max_logits=3)
    assert list(graph.nodes.columns) == NODE_COLUMNS and list(graph.edges.columns) == EDGE_COLUMNS
    assert graph.target == graph.nodes.loc[graph.nodes.kind == "logit"].id.iloc[0]
    assert set(graph.edges.source) | set(graph.edges.target) <= set(graph.nodes.id)
    assert graph.scores is not None and graph.pruned_scores is not None and graph.faithfulness is not None
    assert (graph.nodes.loc[graph.nodes.kind != "logit"].hop >= 1).all()
    assert set(graph.nodes.kind) <= {"feature", "error", "token", "logit"}
    text = graph.to_circuit_tracer_json(tmp_path / "graph.json")
    exported = json.loads(text)
    assert len(exported["nodes"]) == len(graph.nodes) and len(exported["links"]) == len(graph.edges)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"logit_probability": 1.5}, "logit_probability must be a number from 0 to 1"),
        ({"max_logits": 0}, "max_logits must be a whole number of at least 1"),
        ({"node_threshold": -0.1}, "node_threshold must be a number from 0 to 1"),
        ({"edge_threshold": "high"}, "edge_threshold must be a number from 0 to 1"),
    ],
)
def test_bad_options_are_clear_errors(model, saes, options, message):
    with pytest.raises(FeatureLensError, match=message):
        attribution_graph(model, {"L0.mlp_out": saes["L0.mlp_out"]}, PROMPT, **options)


CHECK = """
import json, sys, types
import numpy as np, torch
from circuit_tracer.graph import compute_graph_scores, prune_graph
data = np.load(sys.argv[1])
n_tokens, n_logits = int(data["n_tokens"]), len(data["probabilities"])
graph = types.SimpleNamespace(
    adjacency_matrix=torch.from_numpy(data["adjacency"]),
    logit_probabilities=torch.from_numpy(data["probabilities"]),
    input_tokens=torch.zeros(n_tokens, dtype=torch.long),
    logit_targets=[None] * n_logits,
    selected_features=torch.zeros(int(data["n_features"]), dtype=torch.long),
    cfg=types.SimpleNamespace(n_layers=int(data["n_errors"]) // n_tokens),
)
pruned = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
replacement, completeness = compute_graph_scores(graph)
print(json.dumps({"nodes": pruned.node_mask.tolist(), "edges": pruned.edge_mask.nonzero().tolist(),
                  "replacement": replacement, "completeness": completeness}))
"""


@pytest.mark.skipif(
    not os.environ.get("FEATURE_LENS_CIRCUIT_TRACER_PYTHON"),
    reason="set FEATURE_LENS_CIRCUIT_TRACER_PYTHON to a Python with circuit-tracer==0.5.0 to run its own check",
)
def test_circuit_tracers_pruning_and_scores_agree(built, tmp_path: Path):
    _, graph = built
    single = dataclasses.replace(
        graph, adjacency=graph.adjacency.float(), logit_probabilities=graph.logit_probabilities.float()
    )  # circuit-tracer computes in float32
    path = tmp_path / "graph.npz"
    np.savez(
        path,
        adjacency=single.adjacency.numpy(),
        probabilities=single.logit_probabilities.numpy(),
        n_features=graph.n_features,
        n_errors=graph.n_errors,
        n_tokens=graph.n_tokens,
    )
    python = os.environ["FEATURE_LENS_CIRCUIT_TRACER_PYTHON"]
    done = subprocess.run([python, "-c", CHECK, str(path)], capture_output=True, text=True, timeout=600, check=True)
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = single.prune()
    assert ours.nodes.tolist() == theirs["nodes"]
    assert ours.edges.nonzero().tolist() == theirs["edges"]
    scores = single.scores()
    assert scores.replacement == pytest.approx(theirs["replacement"], rel=1e-5)
    assert scores.completeness == pytest.approx(theirs["completeness"], rel=1e-5)


def test_the_cli_builds_the_prediction_graph(toy_model, capsys):
    transcoders = "L0.transcoder,L1.transcoder,L2.transcoder"
    status = cli.main(
        ["graph", "--model", "toy", "--prompt", "To be, or not to be", "--prediction", "--saes", transcoders]
        + ["--format", "json"]
    )
    assert status == 0
    found = json.loads(capsys.readouterr().out)
    assert found["target"].startswith("logit[")
    assert 0 <= found["pruned_scores"]["replacement"] <= 1 and 0 <= found["scores"]["completeness"] <= 1
    assert {node["kind"] for node in found["nodes"]} <= {"feature", "error", "token", "logit"}
    assert (
        cli.main(
            [
                "graph",
                "--model",
                "toy",
                "--prompt",
                "To be",
                "--prediction",
                "--saes",
                transcoders,
                "--node-threshold",
                "2",
            ]
        )
        == 2
    )
    assert "node_threshold must be a number from 0 to 1" in capsys.readouterr().err


def test_frozen_faithfulness_is_exact_at_the_ends_and_linear_after_the_last_sae(model, saes):
    """In the local replacement model (patterns, LayerNorm scales and errors at their clean values) keeping every
    feature is the clean run, keeping none is the empty run, and dropping one feature of the last SAE changes the
    logit by exactly its direct edge: nothing between its write and the logit responds any more."""
    chosen = {name: saes[name] for name in SETS["blocks"]}
    graph = adjacency(model, chosen, PROMPT, max_logits=1)
    top = graph.nodes.loc[graph.nodes.kind == "logit"].iloc[0]
    target = LogitRef(int(top.feature), int(top.position))
    features = graph.nodes.loc[graph.nodes.kind == "feature"]
    every = faithfulness(model, chosen, PROMPT, target, features, frozen=True)
    assert every.kept == pytest.approx(every.full, rel=1e-9) and every.score == pytest.approx(1.0, rel=1e-9)
    none = faithfulness(model, chosen, PROMPT, target, features.head(0), frozen=True)
    assert none.kept == pytest.approx(none.empty, rel=1e-9)
    last = features.loc[(features.sae == "L2.mlp_out") & (features.position == top.position)]
    edges = _row(graph, str(top.id))
    for node in last.head(3).itertuples():
        without = faithfulness(model, chosen, PROMPT, target, features.loc[features.id != node.id], frozen=True)
        assert without.full - without.kept == pytest.approx(edges[node.id], rel=1e-6, abs=1e-9)
