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
