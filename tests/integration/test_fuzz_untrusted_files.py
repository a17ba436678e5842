"""Fuzzing the files a stranger can hand feature-lens: crafted cfg.json files in an SAE folder, and crafted .npy and
safetensors direction files. Each must give a working SAE or a `FeatureLensError`, never another exception."""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

import feature_lens_core as flc
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.zoo import paths

pytestmark = pytest.mark.integration
SOURCE = paths.SAES_DIR / "L0.mlp_out"
PROMPT = "O Romeo, Romeo, wherefore art thou Romeo?"
CFG_KEYS = ["d_in", "d_sae", "d_out", "architecture", "k", "dtype", "apply_b_dec_to_input", "metadata", "hook_name"]
CFG_KEYS += ["normalize_activations", "reshape_activations", "metadata.hook_name", "metadata.hook_name_out"]
# JSON values of every type, the sizes and names cfg.json holds among them, and integers far past any size.
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 2048)
    | st.sampled_from([0, 128, 1024, 5000, 10**12, 10**18, -(10**18)])
    | st.floats(allow_nan=False)
    | st.sampled_from(["standard", "topk", "jumprelu", "gated", "transcoder", "float32", "bfloat16", "float8"])
    | st.sampled_from(["blocks.0.hook_mlp_out", "blocks.0.hook_resid_pre", "blocks.9.hook_mlp_out", "hook_z", ""])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


KEEP = object()  # leave the key as the real cfg.json has it


def _cfg_text(changes: dict[str, object]) -> str:
    cfg = json.loads((SOURCE / "cfg.json").read_text())
    for key, value in changes.items():
        if value is KEEP:
            continue
        if key.startswith("metadata.") and isinstance(cfg.get("metadata"), dict):
            cfg["metadata"][key.removeprefix("metadata.")] = value
        else:
            cfg[key] = value
    return json.dumps(cfg)


CHANGES = st.dictionaries(st.sampled_from(CFG_KEYS), st.one_of(st.just(KEEP), st.just(KEEP), VALUES), max_size=4)
CFG_TEXTS = (
    CHANGES.map(_cfg_text)
    | CHANGES.map(_cfg_text)
    | st.one_of(
        st.text(max_size=200),  # anything at all
        st.integers(1, 200).map(lambda depth: '{"d_in": ' + "[" * depth + "]" * depth + "}"),
        st.integers(1, 30).map(lambda digits: '{"d_in": 128, "d_sae": ' + "7" * digits + "}"),
    )
)


def _kind(exc: FeatureLensError) -> str:
    """What a refusal says, without the names and numbers of the example (for --hypothesis-show-statistics)."""
    return re.sub(r"'[^']*'|\(.*|\d+", "_", str(exc))[:70]


@pytest.fixture(scope="module")
def model():
    return flc.load_model("toy")


@settings(max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=CFG_TEXTS)
def test_a_crafted_cfg_json_gives_a_working_sae_or_a_clear_error(model, text: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "sae"
        shutil.copytree(SOURCE, folder)
        (folder / "cfg.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            sae = flc.load_sae("toy", str(folder), device="cpu")
            frame = flc.activations(model, sae, PROMPT)
        except FeatureLensError as exc:
            assert str(exc).strip()
            event(_kind(exc))
            return
        event("loaded and ran")
        assert list(frame.columns) == ["position", "token", "feature", "activation"]


DESCRS = st.sampled_from(["<f8", "<f4", "<f2", ">f8", "<i8", "|b1", "<U3", "|O", "<M8[D]", "<c16", "|V8", "<f16"])
DESCRS |= st.text(st.characters(max_codepoint=255), max_size=12) | st.just([("a", "<f4"), ("b", "<i4")])
SHAPES = st.lists(st.sampled_from([0, 1, 2, 127, 128, 129, 10**6, 10**12]), max_size=3).map(tuple)


def _npy(descr: object, shape: tuple[int, ...], fortran: bool, data: bytes) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    try:
        npy_format.write_array_header_1_0(buffer, header)
    except ValueError:  # a header too long for format 1.0
        npy_format.write_array_header_2_0(buffer, header)
    return buffer.getvalue() + data


NPY_FILES = st.builds(_npy, DESCRS, SHAPES, st.booleans(), st.binary(max_size=1100) | st.just(b"\x01" * 1024))
FLOATS = st.sampled_from(["<f2", "<f4", "<f8", ">f8"])  # a well-formed float vector of the hook's width
NPY_FILES |= FLOATS.flatmap(
    lambda descr: st.binary(min_size=128 * int(descr[2]), max_size=128 * int(descr[2])).map(
        lambda data: _npy(descr, (128,), False, data)
    )
)
NPY_FILES |= st.binary(max_size=300)  # not a .npy file at all
MAGICS = st.sampled_from([b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x03\x00", b"\x93NUMPY\x09\x09"])
NPY_FILES |= st.builds(bytes.__add__, MAGICS, st.binary(max_size=64))  # the magic of a version, then garbage


@settings(max_examples=150, derandomize=True, deadline=None)
@given(data=NPY_FILES)
def test_a_crafted_npy_direction_gives_a_direction_or_a_clear_error(model, data: bytes) -> None:
    try:
        vector = flc.load_direction(data, fmt="npy")
        sae = flc.direction_sae(model, "blocks.0.hook_resid_pre", vector)
    except FeatureLensError as exc:
        assert str(exc).strip()
        event(_kind(exc))
        return
    event("loaded")
    assert sae.cfg.d_sae == 1 and vector.is_floating_point() and vector.numel() == 128


@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.binary(max_size=400) | st.binary(max_size=200).map(lambda tail: b"\x40\0\0\0\0\0\0\0" + tail))
def test_a_crafted_safetensors_direction_gives_a_direction_or_a_clear_error(model, data: bytes) -> None:
    try:
        flc.direction_sae(model, "blocks.0.hook_resid_pre", flc.load_direction(data, fmt="safetensors"))
    except FeatureLensError as exc:
        assert str(exc).strip()


def test_the_fuzzed_float_vectors_load_as_saved(model) -> None:
    """The fuzz's valid corner: a float .npy of the hook's width loads exactly and makes a direction."""
    vector = np.random.default_rng(0).normal(size=128)
    sae = flc.direction_sae(
        model, "blocks.0.hook_resid_pre", flc.load_direction(_npy("<f8", (128,), False, vector.tobytes()), fmt="npy")
    )
    np.testing.assert_allclose(sae.W_dec[0].detach().double().numpy(), vector / np.linalg.norm(vector), rtol=1e-6)
