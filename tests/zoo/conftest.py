"""Fixtures for the built-in model zoo: loaded once per test session."""

from __future__ import annotations

import pytest
from sae_lens import SAE
from transformer_lens import HookedTransformer

from feature_lens_core.loading import list_saes, load_model, load_sae


@pytest.fixture(scope="session")
def toy_model() -> HookedTransformer:
    return load_model("toy")


@pytest.fixture(scope="session")
def toy_saes() -> dict[str, SAE]:
    return {name: load_sae("toy", name) for name in list_saes("toy")}
