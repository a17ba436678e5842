"""Devices and dtypes in the loaders: the default device, FEATURE_LENS_DEVICE, explicit choices, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import feature_lens_core as flc
from feature_lens_core import loading
from feature_lens_core.errors import FeatureLensError
from tests.fixtures.hub import GPT2_SAES

pytestmark = pytest.mark.integration


def _expected_default() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def test_default_device_is_the_best_one_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loading.DEVICE_ENV, raising=False)
    assert loading.default_device().type == _expected_default()


def test_feature_lens_device_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loading.DEVICE_ENV, "cpu")
    assert loading.default_device() == torch.device("cpu")
    assert flc.load_model("toy").cfg.device == "cpu"
    monkeypatch.setenv(loading.DEVICE_ENV, "gpu0")
    with pytest.raises(FeatureLensError, match="FEATURE_LENS_DEVICE='gpu0'.*Use 'cpu', 'cuda'"):
        loading.default_device()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "", "meta"])
def test_devices_that_do_not_exist_are_refused(device: str) -> None:
    with pytest.raises(FeatureLensError, match="Use 'cpu'"):
        flc.load_model("toy", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so() -> None:
    for load in (
        lambda: flc.load_model("toy", device="cuda"),
        lambda: flc.load_sae("toy", "L0.resid_pre", device="cuda:1"),
    ):
        with pytest.raises(FeatureLensError, match="needs CUDA, which is not available here"):
            load()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_device_is_refused() -> None:
    with pytest.raises(FeatureLensError, match="CUDA device"):
        flc.load_model("toy", device=f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("dtype", [torch.float64, "float64", "torch.float64", torch.bfloat16, "float16"])
def test_builtin_model_and_sae_follow_the_dtype(dtype: object) -> None:
    model = flc.load_model("toy", device="cpu", dtype=dtype)  # type: ignore[arg-type]
    sae = flc.load_sae("toy", "L1.mlp_out", device=model.cfg.device, dtype=model.cfg.dtype)
    want = loading.resolve_dtype(dtype)  # type: ignore[arg-type]
    assert model.cfg.dtype == want and model.W_E.dtype == want
    assert sae.W_enc.dtype == want and sae.dtype == want and sae.W_enc.device.type == "cpu"
    assert flc.load_model("toy", device="cpu") is flc.load_model("toy", device="cpu")  # the shared float32 one
    assert flc.load_model("toy", device="cpu").cfg.dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float8", "int8", torch.int64, 3])
def test_unknown_dtypes_are_refused(dtype: object) -> None:
    with pytest.raises(FeatureLensError, match="Unknown dtype.*float32, float16, bfloat16, float64"):
        flc.load_model("toy", dtype=dtype)  # type: ignore[arg-type]


def test_hub_model_and_sae_load_on_the_device_and_dtype_asked(hub_cache: Path) -> None:
    model = flc.load_model("gpt2-small", device="cpu", dtype="float64")
    sae = flc.load_sae("gpt2-small", GPT2_SAES[0], device=model.cfg.device, dtype=model.cfg.dtype)
    assert model.cfg.dtype == torch.float64 and model.W_E.dtype == torch.float64
    assert sae.W_enc.dtype == torch.float64 and sae.cfg.device == "cpu"
    frame = flc.activations(model, sae, "The quick brown fox")
    assert len(frame) > 0


def test_local_folder_follows_the_dtype(tmp_path: Path) -> None:
    sae = flc.load_sae("toy", "L0.resid_pre", device="cpu")
    sae.save_model(tmp_path / "copy")
    again = flc.load_sae("toy", str(tmp_path / "copy"), device="cpu", dtype=torch.float64)
    assert again.W_dec.dtype == torch.float64
    torch.testing.assert_close(again.W_dec, sae.W_dec.double())
