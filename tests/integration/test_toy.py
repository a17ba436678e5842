"""The proofs of issue 3 on the built-in model (trained weights, 1024-feature SAEs of every kind).

Exactness tests run on a float64 copy of the shared model and SAEs (the originals are never changed);
one test checks that float32, as shipped, stays within float32 rounding. The agreement test measures
what docs/methods.md reports: attribution patching ranks nodes like activation patching.
"""

from __future__ import annotations

import copy

import pytest
import torch

from feature_lens_core import agreement, feature_data
from feature_lens_core.ranking import FeatureRef, activations, rank
from scripts.agreement_table import CASES
from tests.helpers import brute_force, cache_of, leftover

pytestmark = pytest.mark.integration
PROMPT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
KEY = ["sae", "kind", "feature", "position"]


@pytest.fixture(scope="module")
def exact(toy_model, toy_saes):
    """Float64 copies of the built-in model and its SAEs."""
    saes = {name: copy.deepcopy(sae).to(dtype=torch.float64) for name, sae in toy_saes.items()}
    for sae in saes.values():
        if sae.cfg.reshape_activations == "hook_z":
            sae.turn_on_forward_pass_hook_z_reshaping()  # its reshaping closure still points at the original
    return copy.deepcopy(toy_model).to(torch.float64), saes


def strongest(model, sae, position: int, prompt: str = PROMPT) -> int:
    acts = activations(model, sae, prompt)
    return int(acts[acts.position == position].iloc[0].feature)


@pytest.mark.parametrize("target_sae", ["L2.resid_pre", "L2.attn_z", "L2.transcoder"])
def test_activation_patching_equals_brute_force(exact, target_sae):
    model, saes = exact
    target = FeatureRef(target_sae, strongest(model, saes[target_sae], 20), 20)
    frame = rank(model, saes, PROMPT, target, direction="upstream", method="activation")
    rows = frame.groupby(["sae", "kind"]).head(4)  # the largest nodes of every source SAE and kind
    assert {"L0.resid_pre", "L1.attn_z", "L1.mlp_out", "L1.transcoder"} <= set(rows.sae)
    expected = [
        brute_force(model, PROMPT, saes[r.sae], r.position, r.feature, saes[target.sae], 20, target.feature)
        for r in rows.itertuples()
    ]
    scale = max(abs(e) for e in expected)
    torch.testing.assert_close(
        torch.tensor(rows.score.to_numpy()),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5 * scale,
    )


def test_float32_as_shipped_agrees_with_float64(toy_model, toy_saes, exact):
    target = FeatureRef("L2.resid_pre", strongest(toy_model, toy_saes["L2.resid_pre"], 20), 20)
    single = rank(toy_model, toy_saes, PROMPT, target, direction="upstream", method="activation").set_index(KEY).score
    double = rank(*exact, PROMPT, target, direction="upstream", method="activation").set_index(KEY).score
    # float32 rounding near a ReLU threshold can add or drop a tiny node; compare the nodes both have
    shared = single.index.intersection(double.index)
    assert len(shared) > 0.99 * len(double)
    assert (single[shared] - double[shared]).abs().max() < 1e-4 * double.abs().max()


def test_three_methods_agree_on_the_linear_path(exact):
    model, saes = exact
    target = FeatureRef("L2.resid_pre", strongest(model, saes["L2.resid_pre"], 12), 12)
    picked = {"L1.mlp_out": saes["L1.mlp_out"], target.sae: saes[target.sae]}
    scores = {
        m: rank(model, picked, PROMPT, target, direction="upstream", method=m).set_index(KEY).score
        for m in ("activation", "attribution", "direct")
    }
    clean = float(
        activations(model, saes[target.sae], PROMPT)
        .query("position == 12 and feature == @target.feature")
        .activation.iloc[0]
    )
    stays_active = scores["activation"] < clean - 1e-9
    assert stays_active.mean() > 0.8
    for method in ("attribution", "direct"):
        estimate = scores[method].loc[scores["activation"].index][stays_active]
        torch.testing.assert_close(
            torch.tensor(estimate.to_numpy()),
            torch.tensor(scores["activation"][stays_active].to_numpy()),
            rtol=1e-4,
            atol=0,
        )


def test_direct_contributions_sum_to_the_pre_activation(exact):
    model, saes = exact
    names = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.mlp_out"]
    target = FeatureRef("L2.resid_pre", strongest(model, saes["L2.resid_pre"], 15), 15)
    sae = saes[target.sae]
    frame = rank(
        model, {n: saes[n] for n in [*names, target.sae]}, PROMPT, target, direction="upstream", method="direct"
    )
    encoder = sae.W_enc[:, target.feature].detach()
    rest = (leftover(model, saes, names) - sae.b_dec.detach()) @ encoder + sae.b_enc[target.feature].detach()
    with torch.no_grad():
        activation = float(sae.encode(cache_of(model, PROMPT)["blocks.2.hook_resid_pre"][0, 15])[target.feature])
    assert float(frame.score.sum() + rest) == pytest.approx(activation, rel=1e-10)


@pytest.mark.parametrize("method", ["activation", "attribution", "direct"])
def test_upstream_equals_downstream_and_corrupt_equal_to_clean_is_zero(toy_model, toy_saes, method):
    target = FeatureRef("L2.attn_z", strongest(toy_model, toy_saes["L2.attn_z"], 18), 18)
    up = rank(toy_model, toy_saes, PROMPT, target, direction="upstream", method=method)
    for row in up[up.kind == "feature"].head(5).itertuples():
        down = rank(
            toy_model,
            toy_saes,
            PROMPT,
            FeatureRef(row.sae, row.feature, row.position),
            direction="downstream",
            method=method,
        )
        match = down[(down.sae == target.sae) & (down.feature == target.feature) & (down.position == 18)]
        assert match.score.iloc[0] == pytest.approx(row.score, rel=1e-4, abs=1e-6)
    same = rank(
        toy_model,
        toy_saes,
        PROMPT,
        target,
        direction="upstream",
        method=method,
        baseline="corrupt",
        corrupt_prompt=PROMPT,
    )
    assert (same.score == 0).all()


def test_mean_baseline_uses_the_shipped_means(toy_model, toy_saes):
    if not feature_data.has_feature_data(toy_saes["L1.mlp_out"]):
        pytest.skip("the built-in SAEs' feature data (means) is not built yet")
    target = FeatureRef("L2.resid_pre", strongest(toy_model, toy_saes["L2.resid_pre"], 10), 10)
    picked = {"L1.mlp_out": toy_saes["L1.mlp_out"], target.sae: toy_saes[target.sae]}
    frame = rank(toy_model, picked, PROMPT, target, direction="upstream", method="activation", baseline="mean")
    means = feature_data.mean_activations(toy_saes["L1.mlp_out"])
    for row in frame[frame.kind == "feature"].head(5).itertuples():
        expected = brute_force(
            toy_model, PROMPT, toy_saes["L1.mlp_out"], row.position, row.feature, toy_saes[target.sae], 10,
            target.feature, baseline=float(means[row.feature]),
        )  # fmt: skip
        assert row.score == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES[:3])
def test_attribution_ranks_like_activation_patching(toy_model, toy_saes, case):
    """Exhaustive activation patching upstream of the strongest feature at the second-to-last token, against
    attribution patching over every source node of every earlier SAE (docs/methods.md has the full table)."""
    table = agreement.measure(toy_model, toy_saes, [case]).set_index("method")
    assert table.loc["attribution", "nodes"] > 1000  # every node of every earlier SAE, paired
    assert table.loc["attribution", "spearman"] > 0.9, table
    assert table.loc["attribution", "recall_at_3k"] >= 0.8, table
