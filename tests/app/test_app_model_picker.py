"""The app's model picker on a real (synthesised) Hugging Face cache, offline: cached hub models are offered
and marked with their size, uncached ones are not offered, and the sidebar says which device runs the model."""

from __future__ import annotations

import pytest

from feature_lens_app import resources
from tests.app.helpers import assert_healthy

pytestmark = [pytest.mark.app, pytest.mark.slow]


def _picker(open_app):
    resources.cached_models.clear()  # the list is cached for a minute per process; each test has its own cache
    at = open_app()
    assert_healthy(at)
    return at, at.selectbox(key="model")


def test_offline_the_picker_offers_the_cached_gpt2_with_its_size(hub_cache, open_app):
    at, picker = _picker(open_app)
    # The cache holds repo `gpt2`, TransformerLens's `gpt2-small`, at 0.56 MB; nothing else of the hub is offered.
    assert picker.options[1:] == ["gpt2-small (in the local cache, 0.6 MB)"], picker.options
    assert any(caption.value == "Runs on: cpu" for caption in at.sidebar.caption)


def test_offline_with_an_empty_cache_only_the_built_in_model_is_offered(empty_cache, open_app):
    _, picker = _picker(open_app)
    assert len(picker.options) == 1 and "built-in" in picker.options[0]
