"""Activation patching equals a brute-force ablation written here with plain TransformerLens hooks."""

from __future__ import annotations

import pytest
import torch

from feature_lens_core import feature_data
from feature_lens_core.ranking import FeatureRef, rank
from tests.helpers import CORRUPT, PROMPT, brute_force, cache_of, node_change, write_hook

pytestmark = pytest.mark.unit
RTOL = 1e-5


def assert_matches_brute_force(model, saes, frame, target: FeatureRef, limit: int | None = None, **baseline):
    """Every row (or the `limit` largest) equals g(clean) - g(ablated) from its own full forward pass."""
    rows = frame if limit is None else frame.head(limit)
    assert len(rows) > 0
    expected = [
        brute_force(
            model,
            PROMPT,
            saes[row.sae],
            row.position,
            row.feature,
            saes[target.sae],
            target.position,
            target.feature,
            **{k: v(row) for k, v in baseline.items()},
        )
        for row in rows.itertuples()
    ]
    scale = max(abs(e) for e in expected)
    torch.testing.assert_close(
        torch.tensor(rows.score.to_numpy()),
        torch.tensor(expected, dtype=torch.float64),
        rtol=RTOL,
        atol=RTOL * scale,
    )


@pytest.mark.parametrize(
    ("source", "all_positions"),
    [
        ("L0.resid_pre", True),
        ("L1.resid_pre", True),  # layer 1's attention reads after it: earlier positions reach the target
        ("L1.attn_z", False),  # written after layer 1's attention read, and layer 2's comes after the target
        ("L1.mlp_out", False),
        ("L1.transcoder", False),
    ],
)
def test_every_node_of_each_source_kind_matches_brute_force(model, saes, strongest, source, all_positions):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 12), 12)
    frame = rank(
        model,
        {source: saes[source], target.sae: saes[target.sae]},
        PROMPT,
        target,
        direction="upstream",
        method="activation",
    )
    # Exhaustive: every active feature at every position that can reach the target, one error node each.
    positions = list(range(target.position + 1)) if all_positions else [target.position]
    with torch.no_grad():
        acts = saes[source].encode(cache_of(model, PROMPT)[saes[source].cfg.metadata.hook_name][0])
    assert (frame.kind == "feature").sum() == int((acts[positions] != 0).sum())
    assert sorted(frame[frame.kind == "error"].position) == positions
    assert_matches_brute_force(model, saes, frame, target)


@pytest.mark.parametrize("target_sae", ["L2.attn_z", "L2.transcoder", "L2.mlp_out", "L2.resid_post", "L1.resid_pre"])
def test_each_target_kind_matches_brute_force(model, saes, strongest, target_sae):
    target = FeatureRef(target_sae, strongest(target_sae, 9), 9)
    frame = rank(model, saes, PROMPT, target, direction="upstream", method="activation")
    assert_matches_brute_force(model, saes, frame, target, limit=40)
    # The smallest scores too: they are where a sloppy batched run would show its noise.
    assert_matches_brute_force(model, saes, frame.iloc[::-1], target, limit=10)


def test_chunked_batches_give_the_same_scores(model, saes, strongest, monkeypatch):
    target = FeatureRef("L2.attn_z", strongest("L2.attn_z", 8), 8)
    whole = rank(model, saes, PROMPT, target, direction="upstream", method="activation")
    monkeypatch.setattr("feature_lens_core.methods.activation.batch_size", lambda *args: 3)
    chunked = rank(model, saes, PROMPT, target, direction="upstream", method="activation")
    torch.testing.assert_close(torch.tensor(chunked.score.to_numpy()), torch.tensor(whole.score.to_numpy()))


@pytest.mark.parametrize("source", ["L0.attn_z", "L0.transcoder", "L1.resid_pre", "L1.mlp_out"])
def test_downstream_one_pass_matches_brute_force(model, saes, strongest, source):
    feature = FeatureRef(source, strongest(source, 5), 5)
    frame = rank(model, saes, PROMPT, feature, direction="downstream", method="activation")
    assert frame.position.min() >= feature.position
    assert (frame.kind == "feature").all()
    for row in frame.head(25).itertuples():
        expected = brute_force(
            model,
            PROMPT,
            saes[source],
            feature.position,
            feature.feature,
            saes[row.sae],
            row.position,
            row.feature,
        )
        assert row.score == pytest.approx(expected, rel=RTOL, abs=1e-9)


def test_mean_baseline_matches_brute_force(model, saes, strongest, monkeypatch):
    means = {name: torch.rand(sae.cfg.d_sae, generator=torch.Generator().manual_seed(7)) for name, sae in saes.items()}
    by_id = {id(sae): means[name] for name, sae in saes.items()}
    monkeypatch.setattr(feature_data, "mean_activations", lambda sae: by_id[id(sae)].to(sae.W_dec.dtype))
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 10), 10)
    picked = {"L1.attn_z": saes["L1.attn_z"], target.sae: saes[target.sae]}
    frame = rank(model, picked, PROMPT, target, direction="upstream", method="activation", baseline="mean")
    mean_of = {n: means[n] for n in picked}
    assert_matches_brute_force(
        model,
        saes,
        frame,
        target,
        baseline=lambda row: float(mean_of[row.sae][row.feature]) if row.feature >= 0 else 0.0,
    )


def test_corrupt_baseline_matches_brute_force(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 14), 14)
    source = "L1.transcoder"
    frame = rank(
        model,
        {source: saes[source], target.sae: saes[target.sae]},
        PROMPT,
        target,
        direction="upstream",
        method="activation",
        baseline="corrupt",
        corrupt_prompt=CORRUPT,
    )
    sae = saes[source]
    corrupt = cache_of(model, CORRUPT)
    with torch.no_grad():
        corrupt_acts = sae.encode(corrupt[sae.cfg.metadata.hook_name][0])
        clean_acts = sae.encode(cache_of(model, PROMPT)[sae.cfg.metadata.hook_name][0])
    # A feature active only on the corrupt prompt is a node too (its ablation switches it on).
    features = frame[frame.kind == "feature"]
    assert (clean_acts[features.position.tolist(), features.feature.tolist()] == 0).any()

    def error_baseline(row):
        return -node_change(sae, corrupt, row.position, -1) if row.feature < 0 else None

    assert_matches_brute_force(
        model,
        saes,
        frame,
        target,
        baseline=lambda row: float(corrupt_acts[row.position, row.feature]) if row.feature >= 0 else 0.0,
        error_baseline=error_baseline,
    )


def test_brute_force_helper_writes_where_the_issue_says(saes):
    """The test's own reference: a transcoder's change goes to hook_mlp_out, every other SAE's to its hook."""
    assert write_hook(saes["L1.transcoder"]) == "blocks.1.hook_mlp_out"
    assert write_hook(saes["L1.attn_z"]) == "blocks.1.attn.hook_z"
