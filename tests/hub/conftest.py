"""Fixtures for the hub tests: a synthesised Hugging Face cache that huggingface_hub (and so transformers,
TransformerLens and SAE-Lens) reads, offline, during each test.

The cache is built once per session (tests/hf_cache.py); `hub_cache` points huggingface_hub at it for one
test and sets offline mode, so nothing can reach the network even when the session was started online.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from transformer_lens import HookedTransformer, HookedTransformerConfig

from feature_lens_core import loading
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.tokenizer import load_tokenizer
from tests.app.conftest import _navigation_mode, open_app  # noqa: F401 (fixtures, reused as they are)
from tests.hf_cache import HubCache, add_gemma_scope, add_gpt2, add_sae_lens_release

GPT2_SAES = ["gpt2-small-res-jb/blocks.0.hook_resid_pre", "gpt2-small-res-jb/blocks.1.hook_resid_pre"]
GPT2_D_MODEL, GPT2_D_SAE = 64, 128
GEMMA_SAES = [
    "gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical",  # JumpReLU, blocks.0.hook_resid_post
    "gemma-scope-2b-pt-transcoders/layer_1/width_16k/average_l0_65",  # ln2.hook_normalized -> hook_mlp_out
]


def point_at(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make `root` the hub cache for the rest of the test, offline (huggingface_hub reads both at call time)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def gpt2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with `gpt2` (2 layers, d_model 64) and two `gpt2-small-res-jb` SAEs (128 features)."""
    cache = HubCache(tmp_path_factory.mktemp("hf") / "hub")
    add_gpt2(cache, n_layers=2, d_model=GPT2_D_MODEL, n_heads=4)
    for seed, name in enumerate(GPT2_SAES):
        release, sae_id = name.split("/", 1)
        add_sae_lens_release(cache, release, sae_id, d_in=GPT2_D_MODEL, d_sae=GPT2_D_SAE, hook=sae_id, seed=seed)
    return cache.root


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, gpt2_cache: Path) -> Path:
    """The synthesised GPT-2 cache, offline, for this test."""
    point_at(monkeypatch, gpt2_cache)
    return gpt2_cache


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty hub cache, offline: every hub name must fail at once."""
    point_at(monkeypatch, tmp_path / "hub")
    monkeypatch.setattr(loading, "_hub_down_until", 0.0)
    return tmp_path / "hub"


@pytest.fixture(scope="session")
def gemma_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with a Gemma Scope JumpReLU SAE and a Gemma Scope transcoder, at their real shapes (2304 x 16384)."""
    cache = HubCache(tmp_path_factory.mktemp("hf_gemma") / "hub")
    for seed, name in enumerate(GEMMA_SAES):
        add_gemma_scope(cache, *name.split("/", 1), seed=seed)
    return cache.root


@pytest.fixture
def gemma_cache(monkeypatch: pytest.MonkeyPatch, gemma_files: Path) -> Path:
    point_at(monkeypatch, gemma_files)
    return gemma_files


@pytest.fixture(scope="session")
def gemma_shaped_model() -> Iterator[HookedTransformer]:
    """A 2-layer model with Gemma 2's architecture and width (d_model 2304), random weights.

    TransformerLens hard-codes Gemma 2's config (26 layers, 256k vocabulary: 2.6B parameters), so no reduced
    `google/gemma-2-2b` can stand in; Gemma Scope's loaders fix d_in at 2304, so the width must stay. Heads and
    MLP are narrow, the vocabulary is the built-in model's. Embeddings have unit scale (Gemma scales them by
    sqrt(d_model)), so residual activations are about unit size per dimension, as the SAEs' thresholds assume.
    """
    tokenizer = load_tokenizer(paths.TOKENIZER_DIR)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=2304,
        n_heads=2,
        d_head=64,
        d_mlp=256,
        n_ctx=64,
        d_vocab=len(tokenizer),
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=64,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        attn_scores_soft_cap=50.0,
        output_logits_soft_cap=30.0,
        n_key_value_heads=1,
        use_attn_scale=True,
        original_architecture="Gemma2ForCausalLM",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        model.embed.W_E.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    yield model.eval()
