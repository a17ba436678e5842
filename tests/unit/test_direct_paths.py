"""Direct attribution through blocks no chosen SAE covers: attention through its frozen pattern and OV
circuit, MLPs through their Jacobian; blocks a chosen SAE covers mediate (their paths are not direct).

Checked against `tests.helpers.frozen_derivative`, an independent implementation with plain TransformerLens
hooks that replaces patterns, LayerNorm scales and covered block outputs by their clean values.
"""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.ranking import rank
from feature_lens_core.targets import FeatureRef
from tests.helpers import PROMPT, frozen_derivative, write_hook

pytestmark = pytest.mark.unit
MEDIATING = ("attn_z", "mlp_out", "transcoder")


@pytest.mark.parametrize(
    ("sources", "target_sae"),
    [
        (["L0.resid_pre"], "L2.resid_pre"),  # nothing covered: two attention layers and two MLPs pass it on
        (["L0.attn_z", "L1.transcoder"], "L2.resid_pre"),  # L0's MLP and L1's attention uncovered
        (["L0.transcoder", "L1.resid_pre"], "L2.attn_z"),  # L1's blocks uncovered, into an attention target
        (["L1.mlp_out"], "L2.transcoder"),  # L2's attention uncovered, into a transcoder
    ],
)
def test_direct_through_uncovered_blocks_equals_the_frozen_reference(model, saes, strongest, sources, target_sae):
    q = 10
    target = FeatureRef(target_sae, strongest(target_sae, q), q)
    chosen = {n: saes[n] for n in [*sources, target_sae]}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    covered = {write_hook(saes[n]) for n in sources if n.split(".")[1] in MEDIATING}
    rows = frame[frame.kind == "feature"].head(8)
    expected = [
        frozen_derivative(
            model, PROMPT, saes[r.sae], r.position, r.feature, saes[target_sae], q, target.feature, covered
        )
        for r in rows.itertuples()
    ]
    assert len(rows) > 0
    torch.testing.assert_close(
        torch.tensor(rows.score.to_numpy()), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )


def test_uncovered_blocks_carry_cross_position_edges(model, saes, strongest):
    """With no attention SAE, a source at an earlier position reaches the target through uncovered attention."""
    q = 10
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", q), q)
    chosen = {n: saes[n] for n in ["L0.transcoder", "L1.transcoder", "L2.resid_pre"]}
    frame = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    earlier = frame[frame.position < q]
    assert len(earlier) > 0 and earlier.score.abs().max() > 1e-6


def test_direct_upstream_equals_downstream_through_uncovered_blocks(model, saes, strongest):
    q = 9
    target = FeatureRef("L2.transcoder", strongest("L2.transcoder", q), q)
    chosen = {n: saes[n] for n in ["L0.resid_pre", "L1.transcoder", "L2.transcoder"]}
    up = rank(model, chosen, PROMPT, target, direction="upstream", method="direct")
    for row in up[up.kind == "feature"].head(5).itertuples():
        source = FeatureRef(row.sae, row.feature, row.position)
        down = rank(model, chosen, PROMPT, source, direction="downstream", method="direct")
        mine = down[(down.sae == target.sae) & (down.feature == target.feature) & (down.position == q)]
        assert float(mine.score.iloc[0]) == pytest.approx(row.score, rel=1e-9, abs=1e-12)
