"""Every method and direction with the model and SAEs loaded onto an explicit device and dtype: the same
ranking as the default float32 load, results back on the CPU as float64 DataFrames."""

from __future__ import annotations

import numpy as np
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core.options import DIRECTIONS, METHODS

pytestmark = pytest.mark.integration
EX = EXAMPLES[0]
NAMES = ("L0.attn_z", "L0.mlp_out", EX.sae, "L2.attn_z")
KEY = ["sae", "kind", "feature", "position"]


def _loaded(**where: str) -> tuple:
    model = flc.load_model("toy", **where)
    return model, {name: flc.load_sae("toy", name, **where) for name in NAMES}


@pytest.fixture(scope="module")
def float32():
    return _loaded()


@pytest.fixture(scope="module")
def float64():
    return _loaded(device="cpu", dtype="float64")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("method", METHODS)
def test_an_explicit_device_and_dtype_give_the_default_ranking(float32, float64, method, direction):
    model, saes = float64
    assert str(model.cfg.device) == "cpu" and all(str(s.W_dec.dtype) == "torch.float64" for s in saes.values())
    target = flc.FeatureRef(EX.sae, EX.feature, EX.position)
    options = {"direction": direction, "method": method, "candidates": 16 if method == "activation" else None}
    if direction == "downstream":
        options.pop("candidates")
    reference = flc.rank(*float32, EX.prompt, target, **options)
    ranked = flc.rank(model, saes, EX.prompt, target, **options)
    assert ranked.score.dtype == np.float64
    top = reference.head(10).merge(ranked, on=KEY, suffixes=("", "_64"))
    assert len(top) == 10
    np.testing.assert_allclose(top["score_64"], top["score"], rtol=2e-3, atol=2e-4 * reference.score.abs().max())
