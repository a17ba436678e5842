"""Neuronpedia links for hub SAEs: `https://www.neuronpedia.org/{model}/{sae}/{feature}` from the directory's ids."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from feature_lens_core import catalog

pytestmark = pytest.mark.unit
PAGE = re.compile(r"^https://www\.neuronpedia\.org/([a-z0-9][\w.-]*)/([\w.-]+)/(\d+)$")


def test_every_directory_id_gives_a_model_sae_feature_page() -> None:
    """Every Neuronpedia id in SAE-Lens's directory is `{model}/{sae}`, so the page is three path segments."""
    with_ids = [e for e in catalog.hub_saes().values() if e.neuronpedia_id]
    assert len(with_ids) > 2000
    for entry in with_ids:
        url = catalog.neuronpedia_page(entry.name, 123)
        match = PAGE.match(url or "")
        assert match, url
        assert f"{match.group(1)}/{match.group(2)}" == entry.neuronpedia_id and match.group(3) == "123"


@pytest.mark.parametrize(
    ("name", "feature", "url"),
    [
        ("gpt2-small-res-jb/blocks.8.hook_resid_pre", 5, "https://www.neuronpedia.org/gpt2-small/8-res-jb/5"),
        (
            "gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical",
            0,
            "https://www.neuronpedia.org/gemma-2-2b/0-gemmascope-res-16k/0",
        ),
        (
            "gemma-scope-2b-pt-transcoders/layer_1/width_16k/average_l0_65",
            16383,
            "https://www.neuronpedia.org/gemma-2-2b/1-gemmascope-transcoder-16k/16383",
        ),
    ],
)
def test_known_pages(name: str, feature: int, url: str) -> None:
    assert catalog.neuronpedia_page(name, feature) == url
    assert urlsplit(url).path.count("/") == 3


def test_saes_without_an_id_have_no_page() -> None:
    assert catalog.hub_sae("gemma-scope-2b-pt-res/layer_0/width_16k/average_l0_105").neuronpedia_id is None
    assert catalog.neuronpedia_page("gemma-scope-2b-pt-res/layer_0/width_16k/average_l0_105", 1) is None
    assert catalog.neuronpedia_page("L0.resid_pre", 1) is None  # built-in SAEs are not on Neuronpedia
    assert catalog.neuronpedia_page("no-such-release/x", 1) is None
