"""ranking.rank and ranking.activations: the shared output, the identities between methods, validation."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import torch

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.ranking import COLUMNS, FeatureRef, activations, rank
from tests.helpers import CORRUPT, OTHER_LENGTH, PROMPT

pytestmark = pytest.mark.unit
METHODS = ("activation", "attribution", "direct")


def test_output_is_the_tidy_frame(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 9), 9)
    for method in METHODS:
        frame = rank(model, saes, PROMPT, target, direction="upstream", method=method)
        assert list(frame.columns) == COLUMNS
        assert frame.score.abs().is_monotonic_decreasing
        assert set(frame.kind) == {"feature", "error"}
        assert (frame[frame.kind == "error"].feature == -1).all()
        assert (frame[frame.kind == "feature"].activation > 0).all()
        tokens = model.to_str_tokens(PROMPT)
        assert all(tokens[p] == t for p, t in zip(frame.position, frame.token, strict=True))
        assert frame.attrs["note"] == ""
        assert set(frame.layer) == {0, 1}
        top = rank(model, saes, PROMPT, target, direction="upstream", method=method, top_k=7)
        pd.testing.assert_frame_equal(top, frame.head(7))


def test_sides_other_than_the_asked_one_are_skipped(model, saes, strongest):
    feature = FeatureRef("L1.resid_pre", strongest("L1.resid_pre", 4), 4)
    up = rank(model, saes, PROMPT, feature, direction="upstream", method="attribution")
    down = rank(model, saes, PROMPT, feature, direction="downstream", method="attribution")
    assert set(up.sae) == {"L0.resid_pre", "L0.attn_z", "L0.mlp_out", "L0.transcoder"}
    assert set(down.sae) == {n for n in saes if n.startswith("L2")} | {
        "L1.attn_z",
        "L1.mlp_out",
        "L1.transcoder",
    }
    assert (up.position <= 4).all() and (down.position >= 4).all()


@pytest.mark.parametrize("method", METHODS)
def test_upstream_and_downstream_give_the_same_score_for_a_pair(model, saes, strongest, method):
    target = FeatureRef("L2.attn_z", strongest("L2.attn_z", 10), 10)
    up = rank(model, saes, PROMPT, target, direction="upstream", method=method)
    pairs = up[up.kind == "feature"].groupby("sae").head(2)
    assert len(pairs) >= 8
    for row in pairs.itertuples():
        down = rank(
            model, saes, PROMPT, FeatureRef(row.sae, row.feature, row.position), direction="downstream", method=method
        )
        match = down[(down.sae == target.sae) & (down.feature == target.feature) & (down.position == 10)]
        assert len(match) == 1
        assert match.score.iloc[0] == pytest.approx(row.score, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("source", "target_sae"), [("L0.mlp_out", "L1.resid_pre"), ("L1.mlp_out", "L2.resid_pre")])
def test_three_methods_agree_where_the_path_is_linear(model, saes, strongest, source, target_sae):
    """mlp_out of layer L to resid_pre of L + 1 is the identity: all three methods are the same number
    wherever the ablation leaves the target active (a ReLU on its linear side)."""
    target = FeatureRef(target_sae, strongest(target_sae, 7), 7)
    picked = {source: saes[source], target_sae: saes[target_sae]}
    frames = {
        m: rank(model, picked, PROMPT, target, direction="upstream", method=m).set_index(["kind", "feature"])
        for m in METHODS
    }
    exact = frames["activation"].score
    clean = float(
        activations(model, saes[target_sae], PROMPT)
        .query("position == 7 and feature == @target.feature")
        .activation.iloc[0]
    )
    stays_active = exact < clean - 1e-12  # a target switched off scores exactly its clean value
    assert stays_active.mean() > 0.8
    for method in ("attribution", "direct"):
        estimate = frames[method].score.loc[exact.index]
        torch.testing.assert_close(
            torch.tensor(estimate[stays_active].to_numpy()),
            torch.tensor(exact[stays_active].to_numpy()),
            rtol=1e-4,
            atol=0,
        )


@pytest.mark.parametrize("direction", ["upstream", "downstream"])
@pytest.mark.parametrize("method", METHODS)
def test_corrupt_baseline_equal_to_the_prompt_gives_zeros(model, saes, strongest, direction, method):
    feature = FeatureRef("L1.attn_z", strongest("L1.attn_z", 8), 8)
    frame = rank(
        model, saes, PROMPT, feature, direction=direction, method=method, baseline="corrupt", corrupt_prompt=PROMPT
    )
    assert len(frame) > 0
    assert (frame.score == 0).all()


def test_corrupt_baseline_differs_from_zero(model, saes, strongest):
    feature = FeatureRef("L1.attn_z", strongest("L1.attn_z", 14), 14)  # the prompts differ at positions 11-12
    zero = rank(model, saes, PROMPT, feature, direction="upstream", method="attribution")
    corrupt = rank(
        model,
        saes,
        PROMPT,
        feature,
        direction="upstream",
        method="attribution",
        baseline="corrupt",
        corrupt_prompt=CORRUPT,
    )
    assert len(corrupt) > len(zero)  # features active only on the corrupt prompt are nodes too
    assert (corrupt.score != 0).any()


def test_candidates_patch_only_the_best_by_attribution(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 9), 9)
    full = rank(model, saes, PROMPT, target, direction="upstream", method="activation")
    some = rank(model, saes, PROMPT, target, direction="upstream", method="activation", candidates=20)
    assert len(some) == 20
    assert "20 of" in some.attrs["note"] and "attribution" in some.attrs["note"]
    estimate = rank(model, saes, PROMPT, target, direction="upstream", method="attribution").head(20)
    key = ["sae", "kind", "feature", "position"]
    assert set(map(tuple, some[key].to_numpy())) == set(map(tuple, estimate[key].to_numpy()))
    merged = some.merge(full, on=key, suffixes=("", "_full"))
    torch.testing.assert_close(torch.tensor(merged.score.to_numpy()), torch.tensor(merged.score_full.to_numpy()))
    everything = rank(model, saes, PROMPT, target, direction="upstream", method="activation", candidates=10_000)
    assert len(everything) == len(full) and everything.attrs["note"] == ""


def test_no_hooks_left_and_weights_untouched(model, saes, strongest):
    before = copy.deepcopy(model.state_dict())
    target = FeatureRef("L2.attn_z", strongest("L2.attn_z", 10), 10)
    for method in METHODS:
        for direction in ("upstream", "downstream"):
            feature = target if direction == "upstream" else FeatureRef("L0.attn_z", strongest("L0.attn_z", 3), 3)
            rank(model, saes, PROMPT, feature, direction=direction, method=method)
            acts = activations(model, saes[feature.sae], PROMPT)
            silent = min(set(range(48)) - set(acts[acts.position == feature.position].feature))
            with pytest.raises(FeatureLensError, match="not active"):  # raised mid-pass, inside a hook
                rank(
                    model,
                    saes,
                    PROMPT,
                    FeatureRef(feature.sae, silent, feature.position),
                    direction=direction,
                    method=method,
                )
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_threads_sharing_one_model_get_the_results_they_would_get_alone(model, saes, strongest):
    """The app shares one model between visitors: hooks of one thread must never reach another's pass."""
    target = FeatureRef("L2.attn_z", strongest("L2.attn_z", 10), 10)
    jobs = [(direction, method) for direction in ("upstream", "downstream") for method in METHODS] * 3

    def one(job: tuple[str, str]) -> pd.DataFrame:
        direction, method = job
        feature = target if direction == "upstream" else FeatureRef("L0.attn_z", strongest("L0.attn_z", 3), 3)
        return rank(model, saes, PROMPT, feature, direction=direction, method=method)

    alone = [one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(one, jobs))
    for a, b in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_activations_lists_what_fires_where(model, saes):
    frame = activations(model, saes["L1.attn_z"], PROMPT)
    assert list(frame.columns) == ["position", "token", "feature", "activation"]
    assert (frame.activation > 0).all()
    assert frame.position.is_monotonic_increasing
    assert all(group.activation.is_monotonic_decreasing for _, group in frame.groupby("position"))
    assert frame.position.nunique() == len(model.to_str_tokens(PROMPT))


# ---------------------------------------------------------------- validation


def bad(model, saes, feature=None, **overrides):
    args = dict(prompt=PROMPT, direction="upstream", method="attribution")
    args |= overrides
    feature = feature or FeatureRef("L2.resid_pre", 0, 5)
    return lambda: rank(model, saes, args.pop("prompt"), feature, **args)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "   "}, "empty"),
        ({"prompt": "to be " * 40}, "at most 40"),
        ({"direction": "sideways"}, "Unknown direction 'sideways'. Use one of: upstream, downstream"),
        ({"method": "magic"}, "Unknown method"),
        ({"baseline": "median"}, "Unknown baseline"),
        ({"baseline": "corrupt"}, "needs a corrupt prompt"),
        ({"baseline": "corrupt", "corrupt_prompt": OTHER_LENGTH}, "same token length"),
        ({"candidates": 0}, "candidates must be a whole number"),
        ({"candidates": 5}, "only applies to method 'activation'"),
        ({"top_k": -1}, "top_k must be"),
    ],
)
def test_bad_arguments_are_refused(model, saes, overrides, message):
    with pytest.raises(FeatureLensError, match=message):
        bad(model, saes, **overrides)()


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (FeatureRef("L9.resid_pre", 0, 1), "not among the SAEs given"),
        (FeatureRef("L2.resid_pre", -1, 1), "out of range: SAE 'L2.resid_pre' has features 0 to 47"),
        (FeatureRef("L2.resid_pre", 48, 1), "features 0 to 47"),
        (FeatureRef("L2.resid_pre", 0, 27), "Position 27 is out of range: the prompt has 27 tokens"),
        (FeatureRef("L2.resid_pre", 0, -1), "out of range"),
    ],
)
def test_bad_features_are_refused(model, saes, feature, message):
    with pytest.raises(FeatureLensError, match=message):
        bad(model, saes, feature)()


def test_an_inactive_target_lists_active_ones(model, saes):
    acts = activations(model, saes["L2.resid_pre"], PROMPT)
    silent = sorted(set(range(48)) - set(acts[acts.position == 5].feature))[0]
    with pytest.raises(FeatureLensError, match=r"not active at position 5 \(token .*\)\. Active there: \d+ \("):
        bad(model, saes, FeatureRef("L2.resid_pre", silent, 5))()


def test_wrong_side_and_bad_saes_are_refused(model, saes, strongest):
    first = FeatureRef("L0.resid_pre", strongest("L0.resid_pre", 3), 3)
    with pytest.raises(FeatureLensError, match="Nothing to rank upstream of 'L0.resid_pre'"):
        rank(model, saes, PROMPT, first, direction="upstream", method="direct")
    last = FeatureRef("L2.resid_post", strongest("L2.resid_post", 3), 3)
    with pytest.raises(FeatureLensError, match="Nothing to rank downstream"):
        rank(model, saes, PROMPT, last, direction="downstream", method="direct")
    with pytest.raises(FeatureLensError, match="No other SAE was given"):
        rank(model, {"L2.resid_post": saes["L2.resid_post"]}, PROMPT, last, direction="upstream", method="direct")
    wide = copy.deepcopy(saes["L1.mlp_out"])
    wide.cfg.metadata.hook_name = "blocks.1.attn.hook_z"
    wide.cfg.reshape_activations = "hook_z"
    wide.W_dec = torch.nn.Parameter(torch.zeros(48, 40, dtype=torch.float64))
    with pytest.raises(FeatureLensError, match="writes vectors of size 40"):
        rank(model, {**saes, "wide": wide}, PROMPT, last, direction="upstream", method="direct")


def test_non_finite_activations_are_refused(model, saes, strongest):
    broken = copy.deepcopy(saes["L1.mlp_out"])
    with torch.no_grad():
        broken.W_enc[0, :] = float("nan")
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 6), 6)
    with pytest.raises(FeatureLensError, match="NaN or infinite"):
        rank(
            model,
            {"L1.mlp_out": broken, target.sae: saes[target.sae]},
            PROMPT,
            target,
            direction="upstream",
            method="activation",
        )


def test_mean_baseline_needs_shipped_means(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 6), 6)
    with pytest.raises(FeatureLensError, match="ships none"):
        rank(model, saes, PROMPT, target, direction="upstream", method="direct", baseline="mean")
