"""Attention opened up, on the built-in model (float64 copies): head loadings sum to the direct edge, direct
feature attribution sums to an attention feature's pre-activation."""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.heads import direct_feature_attribution, head_loadings
from feature_lens_core.ranking import FeatureRef, rank
from tests.helpers import cache_of
from tests.integration import test_toy

pytestmark = pytest.mark.integration
PROMPT = test_toy.PROMPT
exact = test_toy.exact  # the float64 copies of the built-in model and SAEs
Q = 20


def test_head_split_sums_to_the_direct_edge_on_the_built_in_model(exact):
    """Transcoders only, so both later attention layers are open and edges cross positions through heads."""
    model, saes = exact
    names = ["L0.resid_pre", "L0.transcoder", "L1.transcoder", "L2.resid_pre"]
    chosen = {n: saes[n] for n in names}
    target = FeatureRef("L2.resid_pre", test_toy.strongest(model, saes["L2.resid_pre"], Q), Q)
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    rows = frame.groupby(["sae", "kind"]).head(2)
    through_heads = 0.0
    for row in rows.itertuples():
        split = head_loadings(model, chosen, PROMPT, FeatureRef(row.sae, row.feature, row.position), target)
        assert split.edge == pytest.approx(row.score, rel=1e-6, abs=1e-12)
        through_heads = max(through_heads, float(split.heads.score.abs().max()))
    assert through_heads > 1e-3


def test_dfa_sums_to_the_pre_activation_on_the_built_in_model(exact):
    model, saes = exact
    sae = saes["L2.attn_z"]
    feature = test_toy.strongest(model, sae, Q)
    dfa = direct_feature_attribution(model, sae, PROMPT, feature=feature, position=Q)
    z = cache_of(model, PROMPT)["blocks.2.attn.hook_z"][0, Q]
    with torch.no_grad():
        _, sae_cache = sae.run_with_cache(z)
    pre = float(sae_cache["hook_sae_acts_pre"][feature])
    assert dfa.terms.score.sum() + dfa.bias == pytest.approx(pre, rel=1e-6)
    assert (dfa.terms[dfa.terms.position < Q].score.abs() > 1e-6).any()  # earlier tokens feed it


def test_qk_terms_rebuild_the_score_and_a_key_feature_is_exact_on_the_built_in_model(exact):
    from feature_lens_core.qk import qk_attribution
    from tests.unit.test_qk import feature_vector, score_without

    model, saes = exact
    layer, head, q, s = 2, 1, Q, 7
    names = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.transcoder"]
    chosen = {n: saes[n] for n in names}
    result = qk_attribution(model, chosen, PROMPT, layer=layer, head=head, query_position=q, key_position=s)
    expected = float(cache_of(model, PROMPT)[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q, s])
    assert result.queries.score.sum() == pytest.approx(expected, rel=1e-5)
    assert result.keys.score.sum() == pytest.approx(expected, rel=1e-5)
    cache = cache_of(model, PROMPT)
    for row in result.keys[result.keys.kind == "feature"].head(3).itertuples():
        vector = feature_vector(model, saes[row.sae], cache, s, row.feature)
        change = result.score - score_without(model, PROMPT, layer, head, q, s, s, vector)
        assert change == pytest.approx(row.score, rel=1e-6, abs=1e-10)
