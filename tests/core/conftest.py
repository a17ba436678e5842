"""Fixtures for the compute core: a tiny random model with every SAE kind, and the built-in model."""

from __future__ import annotations

import pytest
from sae_lens import SAE
from transformer_lens import HookedTransformer

from feature_lens_core import catalog
from feature_lens_core.loading import list_saes, load_model, load_sae
from feature_lens_core.ranking import activations
from tests.helpers import PROMPT, make_saes, tiny_model


@pytest.fixture(scope="session")
def model() -> HookedTransformer:
    return tiny_model()


@pytest.fixture(scope="session")
def saes(model: HookedTransformer) -> dict[str, SAE]:
    return make_saes(model)


@pytest.fixture(scope="session")
def strongest(model: HookedTransformer, saes: dict[str, SAE]):
    """The strongest feature of an SAE at a position on PROMPT: strongest(name, position) -> int."""

    def pick(name: str, position: int) -> int:
        acts = activations(model, saes[name], PROMPT)
        return int(acts[acts.position == position].iloc[0].feature)

    return pick


@pytest.fixture(scope="session")
def toy_model() -> HookedTransformer:
    if len(catalog.builtin_sae_names()) < 13:
        pytest.skip("the built-in model zoo is not built yet (python -m feature_lens_core.zoo.build)")
    return load_model("toy")


@pytest.fixture(scope="session")
def toy_saes(toy_model: HookedTransformer) -> dict[str, SAE]:
    return {name: load_sae("toy", name) for name in list_saes("toy")}
