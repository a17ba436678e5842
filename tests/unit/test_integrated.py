"""Integrated gradients: completeness against a whole-SAE ablation written here, and its special cases."""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods import attribution, integrated
from feature_lens_core.methods.types import Anchor, Baseline
from feature_lens_core.ranking import FeatureRef, activations, rank
from tests.helpers import PROMPT, write_hook

pytestmark = pytest.mark.unit
TARGET_SAE, Q = "L2.resid_pre", 9


def whole_sae_ablated(model, saes, source: str, target: FeatureRef) -> float:
    """g(clean) - g(every node of `source` at positions <= q ablated to zero at once): its output there
    becomes what it decodes from no features, b_dec (features to 0, error to 0)."""
    sae, read = saes[source], saes[target.sae].cfg.metadata.hook_name
    seen = {}

    def replace(act, hook):
        act = act.clone()
        act[:, : target.position + 1] = sae.decode(torch.zeros(sae.cfg.d_sae, dtype=act.dtype)).reshape(act.shape[2:])
        return act

    def grab(act, hook):
        seen.setdefault(len(seen), act)

    with torch.no_grad():
        tokens = model.to_tokens(PROMPT)
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(read, grab)])
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(write_hook(sae), replace), (read, grab)])
        g = [float(saes[target.sae].encode(seen[i][0, target.position])[target.feature]) for i in (0, 1)]
    return g[0] - g[1]


@pytest.fixture(scope="module")
def target(model, saes):
    acts = activations(model, saes[TARGET_SAE], PROMPT)
    return FeatureRef(TARGET_SAE, int(acts[acts.position == Q].iloc[0].feature), Q)


def ig_sum(model, saes, source: str, target: FeatureRef, steps: int) -> float:
    anchor = Anchor(target.sae, saes[target.sae], target.position, target.feature)
    (scored,) = integrated.upstream(model, model.to_tokens(PROMPT), {source: saes[source]}, anchor, Baseline(), steps)
    return float(scored.score.sum())


@pytest.mark.parametrize("source", ["L0.resid_pre", "L0.attn_z", "L1.attn_z", "L1.transcoder", "L1.mlp_out"])
def test_completeness_summed_scores_tend_to_the_whole_sae_ablation(model, saes, target, source):
    exact = whole_sae_ablated(model, saes, source, target)
    errors = {n: abs(ig_sum(model, saes, source, target, n) - exact) for n in (1, 10, 100)}
    # A left Riemann sum: the error shrinks like 1/N (measured: 3.6% of the effect at N = 100 for L0.attn_z,
    # 0.4% at N = 1000), and is float rounding where the path is linear (L1.mlp_out).
    assert errors[100] <= 0.05 * abs(exact)
    assert errors[100] <= 0.1 * errors[1] or errors[1] <= 1e-12


def test_one_step_is_attribution_patching(model, saes, target, strongest):
    anchor = Anchor(target.sae, saes[target.sae], Q, target.feature)
    sources = {n: saes[n] for n in ("L0.attn_z", "L1.transcoder", "L1.resid_pre")}
    tokens = model.to_tokens(PROMPT)
    for a, i in zip(
        attribution.upstream(model, tokens, sources, anchor, Baseline()),
        integrated.upstream(model, tokens, sources, anchor, Baseline(), steps=1),
        strict=True,
    ):
        torch.testing.assert_close(i.score, a.score, rtol=1e-12, atol=1e-15)
    source = Anchor("L0.attn_z", saes["L0.attn_z"], 4, strongest("L0.attn_z", 4))
    targets = {n: saes[n] for n in ("L1.resid_pre", "L2.attn_z")}
    for a, i in zip(
        attribution.downstream(model, tokens, source, targets, Baseline()),
        integrated.downstream(model, tokens, source, targets, Baseline(), steps=1),
        strict=True,
    ):
        torch.testing.assert_close(i.score, a.score, rtol=1e-12, atol=1e-15)


def test_on_a_linear_path_it_is_the_exact_score(model, saes):
    """L0.mlp_out -> L1.resid_pre is the identity: where the target stays active along the whole path (from
    clean to all of L0.mlp_out ablated), every node's integrated gradient is its exact score."""
    picked = {n: saes[n] for n in ("L0.mlp_out", "L1.resid_pre")}
    acts = activations(model, saes["L1.resid_pre"], PROMPT)
    checked = 0
    for row in acts.itertuples():
        target = FeatureRef("L1.resid_pre", int(row.feature), int(row.position))
        if row.activation - whole_sae_ablated(model, saes, "L0.mlp_out", target) <= 0:
            continue  # the target switches off somewhere along the path: its gradient is not constant
        exact = rank(model, picked, PROMPT, target, direction="upstream", method="activation").set_index(
            ["kind", "feature"]
        )
        ig = rank(model, picked, PROMPT, target, direction="upstream", method="integrated").set_index(
            ["kind", "feature"]
        )
        stays = exact.score < row.activation - 1e-12  # a target switched off by one node scores its activation
        torch.testing.assert_close(
            torch.tensor(ig.score.loc[exact.index][stays].to_numpy()),
            torch.tensor(exact.score[stays].to_numpy()),
            rtol=1e-9,
            atol=1e-12,
        )
        checked += int(stays.sum())
        if checked > 30:
            break
    assert checked > 30


@pytest.mark.parametrize("target_sae", ["L2.attn_z", "L2.transcoder"])
def test_upstream_and_downstream_give_the_same_score(model, saes, strongest, target_sae):
    target = FeatureRef(target_sae, strongest(target_sae, 10), 10)
    saes = {n: saes[n] for n in ("L0.resid_pre", "L0.attn_z", "L1.transcoder", "L1.mlp_out", target_sae)}
    up = rank(model, saes, PROMPT, target, direction="upstream", method="integrated")
    for row in up[up.kind == "feature"].groupby("sae").head(1).itertuples():
        down = rank(
            model,
            saes,
            PROMPT,
            FeatureRef(row.sae, row.feature, row.position),
            direction="downstream",
            method="integrated",
        )
        match = down[(down.sae == target.sae) & (down.feature == target.feature) & (down.position == 10)]
        assert match.score.iloc[0] == pytest.approx(row.score, rel=1e-9, abs=1e-12)


def test_bad_step_counts_are_refused(model, saes, target):
    anchor = Anchor(target.sae, saes[target.sae], Q, target.feature)
    with pytest.raises(FeatureLensError, match="steps must be"):
        integrated.upstream(model, model.to_tokens(PROMPT), {"L0.attn_z": saes["L0.attn_z"]}, anchor, Baseline(), 0)
