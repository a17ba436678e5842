"""Hub names fail fast and clearly offline; unknown names and bad folders give a clear FeatureLensError."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from sae_lens import SAE

from feature_lens_core import load_model, load_sae
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.zoo import paths

pytestmark = pytest.mark.integration


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_model_offline_fails_at_once_and_names_the_model(offline: None) -> None:
    start = time.perf_counter()
    with pytest.raises(FeatureLensError, match=r"gpt2-small.*built-in model.*'toy'"):
        load_model("gpt2-small")
    assert time.perf_counter() - start < 5


def test_hub_sae_offline_fails_clearly(offline: None) -> None:
    with pytest.raises(FeatureLensError, match=r"gpt2-small-res-jb/blocks.8.hook_resid_pre.*built-in"):
        load_sae("gpt2-small", "gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(FeatureLensError, match=r"Unknown model 'gpt2-smal'.*Did you mean.*gpt2-small"):
        load_model("gpt2-smal")


def test_unknown_sae_lists_options() -> None:
    with pytest.raises(FeatureLensError, match=r"Unknown SAE 'L9.resid_pre'.*L0.resid_pre"):
        load_sae("toy", "L9.resid_pre")


def test_sae_of_another_model_is_refused() -> None:
    with pytest.raises(FeatureLensError, match="belongs to model 'gpt2-small'"):
        load_sae("toy", "gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_local_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(paths.SAES_DIR / "L1.mlp_out", folder)
    sae = load_sae("toy", str(folder))
    assert isinstance(sae, SAE) and sae.cfg.metadata.hook_name == "blocks.1.hook_mlp_out"


def test_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": 128, "d_sae": 8}))
    (tmp_path / "sae_weights.pt").write_bytes(b"\x80\x04not a safe file")
    with pytest.raises(FeatureLensError, match="never unpickles"):
        load_sae("toy", str(tmp_path))


def test_truncated_weights_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(paths.SAES_DIR / "L0.resid_pre", folder)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FeatureLensError, match="could not be read"):
        load_sae("toy", str(folder))


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FeatureLensError, match="does not exist"):
        load_sae("toy", str(tmp_path / "nowhere"))
