"""Untrusted SAE folders: weights are read from safetensors only, every broken folder gets a message naming the file
and what is wrong with it, and hosted mode never reads a path from the server's disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import feature_lens_core as flc
from feature_lens_app import hosting, resources
from feature_lens_core.errors import FeatureLensError

ROOT = Path(__file__).resolve().parents[2]
BROKEN = {
    "truncated": "sae_weights.safetensors could not be read (SafetensorError",
    "garbage_header": "sae_weights.safetensors could not be read (SafetensorError",
    "empty_weights": "sae_weights.safetensors could not be read (SafetensorError",
    "weights_link": "sae_weights.safetensors could not be read (SafetensorError",
    "bad_cfg": "cfg.json could not be read as JSON (JSONDecodeError",
    "cfg_not_object": "cfg.json must hold a JSON object",
    "cfg_without_keys": "its weights do not fit its cfg.json (KeyError: 'dtype')",
    "weights_not_cfg": "its weights do not fit its cfg.json (RuntimeError: Error(s) in loading state_dict",
    "pickle_only": "lacks sae_weights.safetensors. feature-lens reads SAE-Lens's format",
}
# Ways to read a pickle; none may appear in the core, whose loaders read user-supplied folders.
UNPICKLING = re.compile(
    r"torch\.load\(|\bpickle\b|\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_folder_says_which_file_and_what(name: str, sae_folders: dict[str, str]) -> None:
    with pytest.raises(FeatureLensError) as raised:
        flc.load_sae("toy", sae_folders[name])
    message = str(raised.value)
    assert message.startswith(f"SAE folder '{sae_folders[name]}'") and BROKEN[name] in message


@pytest.mark.integration
def test_a_pickle_beside_cfg_json_is_never_unpickled(sae_folders: dict[str, str]) -> None:
    """The folder's sae_weights.pt creates a file when unpickled: refusing the folder must leave no such file."""
    marker = Path(sae_folders["pickle_only"]).parent / "UNPICKLED"
    with pytest.raises(FeatureLensError, match="never unpickles .pt files"):
        flc.load_sae("toy", sae_folders["pickle_only"])
    assert not marker.exists()


@pytest.mark.unit
def test_no_code_of_feature_lens_can_unpickle() -> None:
    """A guard beside the behavioural tests: no torch.load, pickle, joblib or allow_pickle in the core or the app."""
    sources = [*(ROOT / "feature_lens_core").rglob("*.py"), *(ROOT / "feature_lens_app").rglob("*.py")]
    sources += [*(ROOT / "pages").glob("*.py"), ROOT / "streamlit_app.py"]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources for m in UNPICKLING.finditer(p.read_text())]
    assert len(sources) > 20 and not found, found


@pytest.mark.unit
def test_the_shipped_zoo_is_safetensors_and_json_only() -> None:
    files = [p for p in (ROOT / "feature_lens_core" / "zoo" / "toy").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".json"}


@pytest.mark.integration
def test_hosted_mode_never_loads_a_path(monkeypatch: pytest.MonkeyPatch, sae_folders: dict[str, str]) -> None:
    """The URL check (tests/app/test_bad_input.py) is one guard; the loader the whole app goes through is another."""
    good = sae_folders["narrow"]  # loads fine locally
    assert resources.sae("toy", good) is not None
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    for path in (good, "/etc", "../../etc/passwd", "~/.ssh"):
        with pytest.raises(FeatureLensError, match=re.escape(hosting.NO_LOCAL)):
            resources.sae("toy", path)
    assert resources.sae("toy", "L0.mlp_out") is not None  # catalog names still load


@pytest.mark.app
def test_hosted_sidebar_accepts_no_typed_path(monkeypatch: pytest.MonkeyPatch, open_app) -> None:
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    at = open_app()
    assert not at.sidebar.multiselect(key="saes").proto.accept_new_options
