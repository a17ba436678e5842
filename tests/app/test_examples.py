"""The worked examples work on the shipped model: every target fires where the example says."""

from __future__ import annotations

import pytest

from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_core import catalog
from feature_lens_core.loading import load_model, load_sae

pytestmark = [pytest.mark.app, pytest.mark.slow]


def test_default_saes_are_shipped() -> None:
    assert set(DEFAULT_SAES) <= set(catalog.builtin_sae_names())


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_example_target_is_active(example) -> None:
    from feature_lens_core.ranking import activations

    model = load_model(catalog.BUILTIN_MODEL)
    acts = activations(model, load_sae(catalog.BUILTIN_MODEL, example.sae), example.prompt)
    here = acts[(acts["position"] == example.position) & (acts["feature"] == example.feature)]
    assert len(here) == 1 and float(here["activation"].iloc[0]) > 0


def test_landing_token_is_the_top_prediction() -> None:
    from feature_lens_app.examples import LANDING_TOKEN
    from feature_lens_app.state import DEFAULT
    from feature_lens_core.ranking import predictions

    top = predictions(load_model(catalog.BUILTIN_MODEL), DEFAULT.prompt, DEFAULT.pos, count=1)
    assert DEFAULT.kind == "logit" and DEFAULT.token == LANDING_TOKEN == top["token"].iloc[0]
