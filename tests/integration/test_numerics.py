"""Numerical health on the built-in model: non-finite values are refused with a message, an inactive target is
refused, and SAEs in another dtype than the model give the float32 result (to their precision), never garbage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import feature_lens_core as flc
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_core.errors import FeatureLensError

pytestmark = pytest.mark.integration
EX = EXAMPLES[0]
TARGET = flc.FeatureRef(EX.sae, EX.feature, EX.position)
KEY = ["sae", "kind", "feature", "position"]


@pytest.fixture(scope="module")
def model():
    return flc.load_model("toy")


@pytest.fixture(scope="module")
def saes() -> dict:
    return {name: flc.load_sae("toy", name) for name in dict.fromkeys([*DEFAULT_SAES, EX.sae])}


def _broken(saes: dict, name: str, weight: str, value: float) -> dict:
    sae = copy.deepcopy(saes[name])
    with torch.no_grad():
        getattr(sae, weight).fill_(value)
    return {**saes, name: sae}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_encoder_is_refused_by_activations_and_rank(model, saes: dict, value: float) -> None:
    broken = _broken(saes, EX.sae, "b_enc", value)
    with pytest.raises(FeatureLensError, match="activations on this prompt contains NaN or infinite values"):
        flc.activations(model, broken[EX.sae], EX.prompt)
    with pytest.raises(FeatureLensError, match="contains NaN or infinite values. Check the model and SAE weights"):
        flc.rank(model, broken, EX.prompt, TARGET, direction="upstream", method="attribution")


@pytest.mark.parametrize("method", ["activation", "attribution", "direct"])
def test_a_decoder_that_overflows_never_reaches_a_chart(model, saes: dict, method: str) -> None:
    """Finite activations, infinite decoder rows: every score would be NaN; the ranking is refused instead."""
    broken = _broken(saes, "L0.mlp_out", "W_dec", float("inf"))
    with pytest.raises(FeatureLensError, match="The ranking contains NaN or infinite values"):
        flc.rank(model, broken, EX.prompt, TARGET, direction="upstream", method=method)


def test_a_target_whose_activation_is_zero_is_refused(model, saes: dict) -> None:
    silenced = _broken(saes, EX.sae, "b_enc", -1e4)  # the target SAE fires nowhere
    with pytest.raises(FeatureLensError, match=r"is not active at position 8 .* Active there: none"):
        flc.rank(model, silenced, EX.prompt, TARGET, direction="downstream", method="attribution")


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    [(torch.float64, 1e-4, 1e-5), (torch.float16, 0.02, 0.01), (torch.bfloat16, 0.05, 0.03)],
    ids=["float64", "float16", "bfloat16"],
)
@pytest.mark.parametrize("method", ["activation", "attribution", "direct"])
def test_saes_in_another_dtype_give_the_float32_result(model, saes: dict, dtype, rtol, atol, method: str) -> None:
    """The float32 model with SAEs in float64, float16 or bfloat16: the same nodes, scores to the SAE's precision.

    Features whose activation is within rounding of zero may flip on or off in low precision, so the strong
    nodes are compared: the top 20 of the float32 ranking must all be found, with close scores.
    """
    some = {name: saes[name] for name in ("L0.attn_z", "L0.mlp_out", EX.sae)}  # fewer nodes: quicker patching
    reference = flc.rank(model, some, EX.prompt, TARGET, direction="upstream", method=method)
    cast = {name: copy.deepcopy(sae).to(dtype) for name, sae in some.items()}
    other = flc.rank(model, cast, EX.prompt, TARGET, direction="upstream", method=method)
    assert np.isfinite(other["score"]).all()
    top = reference.head(20).merge(other, on=KEY, suffixes=("", "_cast"))
    assert len(top) == 20
    np.testing.assert_allclose(top["score_cast"], top["score"], rtol=rtol, atol=atol)
