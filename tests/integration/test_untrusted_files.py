"""Untrusted SAE folders: weights are read from safetensors only, every broken folder gets a message naming the file
and what is wrong with it, and hosted mode never reads a path from the server's disk."""

from __future__ import annotations

import io
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format
from safetensors.torch import save as safetensors_save

import feature_lens_core as flc
from feature_lens_app import hosting, resources
from feature_lens_core.directions import MAX_DIRECTION_BYTES
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
    "weights_not_cfg": "its weights do not fit its cfg.json (W_enc is 128 x 7, but d_in 128 and d_sae 1024 make it",
    "pickle_only": "lacks sae_weights.safetensors. feature-lens reads SAE-Lens's format",
    "cfg_deep": "cfg.json is nested 50000 levels deep; at most 64 are read",
    "cfg_deep_value": "cfg.json is nested 50001 levels deep; at most 64 are read",
    "cfg_huge": "cfg.json is 3 MiB; at most 1 MiB is read",
    "cfg_long_int": "cfg.json could not be read as JSON (ValueError: an integer of 5000 digits; at most 18 are read",
    "cfg_d_sae_huge": "do not fit its cfg.json (W_enc is 128 x 1024, but d_in 128 and d_sae 1000000000000000",
    "cfg_d_in_text": "cfg.json: d_in must be a whole number of at least 1, not '128'",
    "metadata_list": "cfg.json's metadata must be a JSON object, not [1, 2]",
    "hook_int": "cfg.json: hook_name must be a hook name such as 'blocks.0.hook_resid_pre' (a string), not 5",
    "hook_list": "cfg.json: hook_name must be a hook name such as 'blocks.0.hook_resid_pre' (a string), not [",
    "topk_k_zero": "cfg.json's k (how many features a TopK SAE keeps per token) is 0; it must be a whole number from 1",
    "topk_k_over_d_sae": "k (how many features a TopK SAE keeps per token) is 5000; it must be a whole number from 1",
    "topk_k_fraction": "k (how many features a TopK SAE keeps per token) is 2.5; it must be a whole number",
    "data_not_safetensors": "feature_data.safetensors could not be read (SafetensorError",
    "data_short": "feature_data.safetensors: 'density' must be floating-point of shape [d_sae] with d_sae = 1024",
    "data_missing_key": "feature_data.safetensors: 'mean_activation' must be floating-point of shape [d_sae] with",
    "data_wrong_type": "feature_data.safetensors: 'top_index' must be integer of shape [d_sae, k] with d_sae = 1024",
    "labels_short": "labels.json must be a list of 1024 strings, one label per feature (found a list of 2)",
    "labels_not_a_list": "labels.json must be a list of 1024 strings, one label per feature (found a JSON dict)",
    "labels_not_strings": "labels.json must be a list of 1024 strings, one label per feature (found a list of 1024)",
    "labels_deep": "labels.json is nested 50000 levels deep; at most 64 are read",
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


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A .npy header alone: it promises an array whose data never follows."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _safetensors(tensor: torch.Tensor) -> bytes:
    return safetensors_save({"v": tensor})


MUST = "It must hold one vector of float16, float32 or float64 numbers"
DIRECTION_FILES = {
    "header claiming 10**12 elements": (_npy_header((10**12,)) + b"\0" * 64, "has 1000000000000 elements"),
    "strings": (_npy(np.array(["a"] * 128)), f"holds <U1 values. {MUST}"),
    "datetimes": (_npy(np.array(["2020-01-01"] * 128, dtype="datetime64[D]")), "holds datetime64[D] values"),
    "records": (_npy(np.zeros(128, dtype=[("a", "f4"), ("b", "i4")])), "holds [('a', '<f4'), ('b', '<i4')] values"),
    "objects": (_npy(np.array([{"a": 1}] * 128, dtype=object)), f"holds object values. {MUST}"),
    "integers": (_npy(np.arange(128)), "holds int64 values"),
    "complex numbers": (_npy(np.ones(128, complex)), "holds complex128 values"),
    "an empty array": (_npy(np.zeros(0)), f"is empty (shape (0,)). {MUST}"),
    "a cut-off array": (_npy(np.ones(128))[:-8], "is cut short or has bytes to spare"),
    "a header only": (_npy_header((128,)), "its header promises 1024 bytes of data, and 0 follow"),
    "float8 safetensors": (_safetensors(torch.ones(128).to(torch.float8_e4m3fn)), "holds float8_e4m3fn values"),
    "integer safetensors": (_safetensors(torch.arange(128)), "holds int64 values"),
    "over the size cap": (b"\0" * (MAX_DIRECTION_BYTES + 1), "is 16 MiB; at most 16 MiB is read"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(DIRECTION_FILES))
def test_a_bad_direction_file_is_refused_before_anything_is_allocated(case: str, tmp_path: Path) -> None:
    data, message = DIRECTION_FILES[case]
    fmt = "safetensors" if "safetensors" in case else "npy"
    path = tmp_path / f"direction.{fmt}"
    path.write_bytes(data)
    for source in (data, path):  # an upload's bytes, and a file on disk
        tracemalloc.start()
        with pytest.raises(FeatureLensError, match=re.escape(message)):
            flc.load_direction(source, fmt=fmt)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 3 * len(data) + 2**20, f"{peak} bytes allocated"


@pytest.mark.unit
def test_float_direction_files_of_every_kind_still_load(tmp_path: Path) -> None:
    vector = np.linspace(-1, 1, 128)
    for dtype in (np.float16, np.float32, np.float64, np.dtype(">f8")):
        loaded = flc.load_direction(_npy(vector.astype(dtype)), fmt="npy")
        np.testing.assert_allclose(loaded.double().numpy(), vector.astype(dtype), rtol=0)
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(flc.load_direction(_npy(fortran), fmt="npy").numpy(), fortran)
    bfloat = torch.linspace(-1, 1, 128).to(torch.bfloat16)
    assert torch.equal(flc.load_direction(_safetensors(bfloat), fmt="safetensors"), bfloat)
