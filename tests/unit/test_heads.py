"""Head loadings: a direct edge split by the last attention head on each path (plus the residual part), and a
hook_z feature's pre-activation split by source position and head (direct feature attribution).

The split must sum to the direct score `rank(..., method="direct")` gives the same node; a head's term must
equal what holding that head's output at its clean value removes from `tests.helpers.frozen_derivative` (an
independent frozen-model reference) where every path passes one attention layer at most.
"""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.heads import direct_feature_attribution, head_loadings
from feature_lens_core.ranking import rank
from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef
from tests.helpers import PROMPT, cache_of, frozen_derivative, head_held, write_hook

pytestmark = pytest.mark.unit
Q = 10
MEDIATING = ("attn_z", "mlp_out", "transcoder")


def _target(name: str, strongest) -> FeatureRef | LogitRef | LogitDiffRef:
    if name == "logit":
        return LogitRef(5, Q)
    if name == "logit-diff":
        return LogitDiffRef(5, 7, Q)
    return FeatureRef(name, strongest(name, Q), Q)


@pytest.mark.parametrize(
    ("sources", "target_name"),
    [
        (["L0.resid_pre"], "L2.resid_pre"),  # two uncovered attention layers (and MLPs) on the way
        (["L0.attn_z", "L1.transcoder"], "L2.resid_pre"),  # L1's attention uncovered, L0's is the source
        (["L0.transcoder", "L1.resid_pre"], "L2.attn_z"),  # into an attention target: its own heads
        (["L1.mlp_out"], "L2.transcoder"),  # L2's attention uncovered, into a transcoder
        (["L0.resid_pre", "L1.transcoder"], "logit"),
        (["L1.resid_pre"], "logit-diff"),
    ],
)
def test_head_split_sums_to_the_direct_edge(model, saes, strongest, sources, target_name):
    target = _target(target_name, strongest)
    own = [target.sae] if isinstance(target, FeatureRef) else []
    chosen = {n: saes[n] for n in [*sources, *own]}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    rows = [*frame[frame.kind == "feature"].head(4).itertuples(), *frame[frame.kind == "error"].head(2).itertuples()]
    crossed = False
    for row in rows:
        split = head_loadings(model, chosen, PROMPT, FeatureRef(row.sae, row.feature, row.position), target)
        assert split.edge == pytest.approx(row.score, rel=1e-6, abs=1e-12)
        assert split.residual + split.heads.score.sum() == pytest.approx(split.edge, rel=1e-12, abs=1e-15)
        crossed |= bool((split.heads.score.abs() > 1e-6).any())
        if row.position < Q:  # only attention moves a change across positions
            assert split.residual == 0
    assert crossed  # some edge really runs through heads
    if target_name == "L2.attn_z":  # an attention target reads through its heads: nothing bypasses them
        assert split.residual == 0


def test_covered_attention_carries_nothing(model, saes, strongest):
    """With every attention layer's hook_z SAE in the set, the heads mediate: their terms are 0, the residual is
    the whole edge."""
    target = _target("L2.resid_pre", strongest)
    names = ["L0.transcoder", "L1.attn_z", "L1.transcoder", "L2.resid_pre"]
    chosen = {n: saes[n] for n in names}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    for row in frame[frame.sae == "L0.transcoder"].head(4).itertuples():
        split = head_loadings(model, chosen, PROMPT, FeatureRef(row.sae, row.feature, row.position), target)
        assert split.heads.covered.all() and (split.heads.score == 0).all()
        assert set(split.heads.layer) == {1}
        assert split.residual == pytest.approx(row.score, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("sources", "target_name"),
    [
        (["L0.transcoder", "L1.transcoder"], "L2.resid_pre"),  # through L1's attention only
        (["L1.mlp_out"], "L2.transcoder"),  # through L2's attention only
        (["L1.transcoder"], "L2.attn_z"),  # the target's own heads
    ],
)
def test_a_head_term_is_what_holding_that_head_removes(model, saes, strongest, sources, target_name):
    target = _target(target_name, strongest)
    chosen = {n: saes[n] for n in [*sources, target.sae]}
    covered = {write_hook(saes[n]) for n in sources if n.split(".")[1] in MEDIATING}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    source_sae = sources[0]
    rows = frame[(frame.kind == "feature") & (frame.sae == source_sae)]
    checked = []
    for row in [*rows[rows.position < Q].head(2).itertuples(), *rows[rows.position == Q].head(1).itertuples()]:
        split = head_loadings(model, chosen, PROMPT, FeatureRef(row.sae, row.feature, row.position), target)
        args = (model, PROMPT, saes[row.sae], row.position, row.feature, saes[target.sae], Q, target.feature)
        full = frozen_derivative(*args, covered)
        for term in split.heads.head(2).itertuples():
            with head_held(model, PROMPT, term.layer, term.head):
                without = frozen_derivative(*args, covered)
            assert full - without == pytest.approx(term.score, rel=1e-5, abs=1e-8)
            checked.append(abs(term.score))
    assert len(checked) >= 4 and max(checked) > 1e-4


def test_head_split_refuses_what_is_not_an_edge(model, saes, strongest):
    target = _target("L2.resid_pre", strongest)
    chosen = {n: saes[n] for n in ["L1.transcoder", "L2.resid_pre", "L2.transcoder"]}
    acts = cache_of(model, PROMPT)
    with pytest.raises(FeatureLensError, match="does not write before"):
        head_loadings(model, chosen, PROMPT, FeatureRef("L2.transcoder", 0, Q), target)
    with pytest.raises(FeatureLensError, match="not among the SAEs"):
        head_loadings(model, chosen, PROMPT, FeatureRef("L0.resid_pre", 0, Q), target)
    with pytest.raises(FeatureLensError, match="cannot reach"):
        head_loadings(model, chosen, PROMPT, FeatureRef("L1.transcoder", -1, Q + 1), target)
    codes = saes["L1.transcoder"].encode(acts["blocks.1.ln2.hook_normalized"][0, Q])
    inactive = int((codes == 0).nonzero()[0])
    with pytest.raises(FeatureLensError, match="not active"):
        head_loadings(model, chosen, PROMPT, FeatureRef("L1.transcoder", inactive, Q), target)


@pytest.mark.parametrize("layer", [0, 2])
def test_dfa_terms_sum_to_the_pre_activation(model, saes, strongest, layer):
    sae = saes[f"L{layer}.attn_z"]
    feature = strongest(f"L{layer}.attn_z", Q)
    dfa = direct_feature_attribution(model, sae, PROMPT, feature=feature, position=Q)
    z = cache_of(model, PROMPT)[f"blocks.{layer}.attn.hook_z"][0, Q]
    with torch.no_grad():
        _, sae_cache = sae.run_with_cache(z)
    pre = float(sae_cache["hook_sae_acts_pre"][feature])
    assert dfa.pre_activation == pytest.approx(pre, rel=1e-12)
    assert dfa.terms.score.sum() + dfa.bias == pytest.approx(pre, rel=1e-6, abs=1e-12)
    expected_bias = sae.b_enc[feature] - sae.b_dec @ sae.W_enc[:, feature]  # the SAE subtracts b_dec from its input
    assert dfa.bias == pytest.approx(float(expected_bias), rel=1e-12)
    assert dfa.grid().shape == (Q + 1, model.cfg.n_heads)
    assert list(dfa.terms.position.unique()) == list(range(Q + 1))


def test_dfa_head_sums_are_the_heads_direct_effects(model, saes, strongest):
    """Summed over source positions, a head's DFA is that head's z at q read by the encoder."""
    feature = strongest("L1.attn_z", Q)
    sae = saes["L1.attn_z"]
    dfa = direct_feature_attribution(model, sae, PROMPT, feature=feature, position=Q)
    z = cache_of(model, PROMPT)["blocks.1.attn.hook_z"][0, Q]  # [head, d_head]
    encoder = sae.W_enc[:, feature].detach().reshape(model.cfg.n_heads, model.cfg.d_head)
    expected = (z * encoder).sum(-1)
    got = torch.tensor(dfa.grid().sum(0))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_dfa_refuses_other_saes_and_bad_positions(model, saes):
    with pytest.raises(FeatureLensError, match="attention"):
        direct_feature_attribution(model, saes["L1.transcoder"], PROMPT, feature=0, position=Q)
    with pytest.raises(FeatureLensError, match="out of range"):
        direct_feature_attribution(model, saes["L1.attn_z"], PROMPT, feature=0, position=99)


@pytest.mark.parametrize("baseline", ["zero", "corrupt"])
def test_many_edges_at_once_equal_each_alone(model, saes, strongest, baseline):
    """One shared backward pass and one batched forward-mode pass per source SAE give each edge's own split."""
    from feature_lens_core.heads import head_loadings_many
    from tests.helpers import CORRUPT

    target = _target("L2.resid_pre", strongest)
    chosen = {n: saes[n] for n in ["L0.resid_pre", "L0.transcoder", "L1.transcoder", "L2.resid_pre"]}
    options = {"baseline": baseline, "corrupt_prompt": CORRUPT if baseline == "corrupt" else None}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct", **options)
    rows = frame.groupby(["sae", "kind"]).head(2)
    sources = [FeatureRef(r.sae, r.feature, r.position) for r in rows.itertuples()]
    together = head_loadings_many(model, chosen, PROMPT, sources, target, **options)
    for source, row, split in zip(sources, rows.itertuples(), together, strict=True):
        alone = head_loadings(model, chosen, PROMPT, source, target, **options)
        assert split.source == str(source)
        assert split.edge == pytest.approx(row.score, rel=1e-6, abs=1e-12)
        assert split.residual == pytest.approx(alone.residual, rel=1e-9, abs=1e-14)
        got, expected = (torch.tensor(s.heads.score.to_numpy()) for s in (split, alone))
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(
    "names",
    [
        ["L0.transcoder", "L1.transcoder", "L2.transcoder"],  # every attention layer open
        ["L0.transcoder", "L1.resid_pre", "L1.transcoder", "L2.attn_z"],  # L2's heads: open into L2.attn_z only
    ],
)
def test_a_graphs_edges_split_at_once_equal_each_split_alone(model, saes, names):
    """A whole-prompt graph's edges into many targets at once (sources batched across targets, targets batched by
    read hook) give each edge's own split, and the split sums to the graph's own edge."""
    from feature_lens_core.attribution_graph import attribution_graph
    from feature_lens_core.heads import edge_head_loadings
    from feature_lens_core.targets import parse_target

    chosen = {n: saes[n] for n in names}
    graph = attribution_graph(model, chosen, PROMPT, max_logits=3, node_threshold=0.9, edge_threshold=0.99)
    nodes = graph.nodes.set_index("id")
    edges = graph.edges.loc[graph.edges.source.map(nodes.kind).isin(["feature", "error"])]
    edges = edges.groupby("target").head(4)  # every target, a few sources each
    pairs = [
        (FeatureRef(str(nodes.sae[s]), int(nodes.feature[s]), int(nodes.position[s])), parse_target(t))
        for s, t in zip(edges.source, edges.target, strict=True)
    ]
    assert len({t for _, t in pairs}) >= 3 and len(pairs) >= 10
    together = edge_head_loadings(model, chosen, PROMPT, pairs)
    through_heads = 0
    for (source, target), score, split in zip(pairs, edges.score, together, strict=True):
        alone = head_loadings(model, chosen, PROMPT, source, target)
        assert (split.source, split.target) == (str(source), str(target))
        assert split.edge == pytest.approx(score, rel=1e-6, abs=1e-12)
        assert split.residual == pytest.approx(alone.residual, rel=1e-9, abs=1e-14)
        assert split.covered == alone.covered and split.layers == alone.layers
        torch.testing.assert_close(torch.tensor(split.terms), torch.tensor(alone.terms), rtol=1e-9, atol=1e-14)
        assert [(layer, head) for layer, head, _ in split.top(3)] == [
            (r.layer, r.head) for r in alone.heads.head(3).itertuples() if r.score != 0
        ]
        through_heads += bool(split.top(1))
    assert through_heads >= len(pairs) // 3
