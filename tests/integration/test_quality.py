"""The zoo's quality floors, re-measured on a slice of the held-out plays."""

from __future__ import annotations

import pytest
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.quality import FLOORS, _ce, sae_quality, unigram_entropy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLICE_TOKENS = 16_000


@pytest.fixture(scope="module")
def windows(toy_model: HookedTransformer):
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()[:SLICE_TOKENS]
    return consecutive_windows(held_out, toy_model.cfg.n_ctx, toy_model.tokenizer.bos_token_id)


def test_unigram_entropy_of_a_uniform_stream() -> None:
    import math

    import torch

    assert unigram_entropy(torch.arange(64).repeat(3)) == pytest.approx(math.log(64))


def test_model_beats_unigram_by_the_floor(toy_model: HookedTransformer, windows) -> None:
    ce = _ce(toy_model, windows)
    assert unigram_entropy(windows[:, 1:].flatten()) - ce >= FLOORS["ce_below_unigram"]


def test_every_sae_meets_the_floors(toy_model: HookedTransformer, toy_saes: dict[str, SAE], windows) -> None:
    clean = _ce(toy_model, windows)
    failures = []
    for name, sae in toy_saes.items():
        q = sae_quality(toy_model, sae, windows, clean)
        # The dead fraction is a whole-text statistic; a slice sees fewer features fire, so it gets slack.
        ok = (
            q["fve"] >= FLOORS["fve_min"]
            and FLOORS["l0_min"] <= q["l0"] <= FLOORS["l0_max"]
            and q["dead"] <= FLOORS["dead_max"] + 0.1
            and q["splice_ce_increase"] <= FLOORS["splice_ce_increase_max"]
        )
        if not ok:
            failures.append((name, q))
    assert not failures, failures
