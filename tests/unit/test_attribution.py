"""Attribution patching is the first-order term of the ablation: it equals a central finite difference."""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.ranking import FeatureRef, rank
from tests.helpers import PROMPT, cache_of, node_change, target_after, write_hook

pytestmark = pytest.mark.unit
EPS = 1e-5


def finite_difference(model, saes, source: str, position: int, feature: int, target: FeatureRef) -> float:
    """-(d/dt) g(x + t * change) at t = 0, by a central difference of two full forward passes."""
    sae = saes[source]
    with torch.no_grad():
        change = node_change(sae, cache_of(model, PROMPT), position, feature)
        args = (saes[target.sae], target.position, target.feature)
        up = target_after(model, PROMPT, write_hook(sae), position, EPS * change, *args)
        down = target_after(model, PROMPT, write_hook(sae), position, -EPS * change, *args)
    return -(up - down) / (2 * EPS)


@pytest.mark.parametrize(
    ("target_sae", "same_layer"),
    [
        ("L2.resid_pre", set()),
        ("L2.attn_z", {"L2.resid_pre"}),
        ("L2.transcoder", {"L2.resid_pre", "L2.attn_z"}),
        ("L2.mlp_out", {"L2.resid_pre", "L2.attn_z"}),  # not L2.transcoder: it writes where the target reads
    ],
)
def test_upstream_equals_finite_differences(model, saes, strongest, target_sae, same_layer):
    target = FeatureRef(target_sae, strongest(target_sae, 11), 11)
    frame = rank(model, saes, PROMPT, target, direction="upstream", method="attribution")
    # The largest nodes of every kind, features and errors alike.
    rows = frame.groupby(["sae", "kind"]).head(2)
    assert set(rows.sae) == {n for n in saes if n.startswith(("L0", "L1"))} | same_layer
    scale = frame.score.abs().max()
    for row in rows.itertuples():
        expected = finite_difference(model, saes, row.sae, row.position, row.feature, target)
        assert row.score == pytest.approx(expected, rel=1e-6, abs=1e-7 * scale)


@pytest.mark.parametrize("source", ["L0.resid_pre", "L0.attn_z", "L1.transcoder", "L1.mlp_out"])
def test_downstream_equals_finite_differences(model, saes, strongest, source):
    feature = FeatureRef(source, strongest(source, 6), 6)
    frame = rank(model, saes, PROMPT, feature, direction="downstream", method="attribution")
    scale = frame.score.abs().max()
    for row in frame.groupby("sae").head(3).itertuples():
        target = FeatureRef(row.sae, row.feature, row.position)
        expected = finite_difference(model, saes, source, feature.position, feature.feature, target)
        assert row.score == pytest.approx(expected, rel=1e-6, abs=1e-7 * scale)
