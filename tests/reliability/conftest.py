"""Fixtures of the reliability tests: SAE folders a user might bring, the CLI run in-process, the app's AppTest
fixtures (reused from tests/app) and a hosted-mode server (the shared server fixture runs in local mode)."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from feature_lens_core import cli, loading
from feature_lens_core.zoo import paths
from tests.app.conftest import _navigation_mode, _offline, open_app  # noqa: F401 (fixtures, reused as they are)
from tests.streamlit_server import Server, need_browser, streamlit_server

WEIGHTS = "sae_weights.safetensors"


class _Touch:
    """Unpickling this creates a file: proof, if the file appears, that someone unpickled a user's weights."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _copy(root: Path, name: str, source: str = "L0.mlp_out") -> Path:
    folder = root / name
    shutil.copytree(paths.SAES_DIR / source, folder)
    return folder


def _edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = load_file(str(folder / WEIGHTS))
    edit(weights)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / WEIGHTS))


def _build_folders(root: Path) -> dict[str, Path]:
    folders: dict[str, Path] = {}

    narrow = _copy(root, "narrow", "L1.mlp_out")  # a consistent SAE, but for a model with d_model 64
    cfg = json.loads((narrow / "cfg.json").read_text())
    (narrow / "cfg.json").write_text(json.dumps({**cfg, "d_in": 64}))
    _edit_weights(narrow, lambda w: w.update(W_enc=w["W_enc"][:64], b_dec=w["b_dec"][:64], W_dec=w["W_dec"][:, :64]))
    folders["narrow"] = narrow

    nan = _copy(root, "nan_encoder")
    _edit_weights(nan, lambda w: w["W_enc"].fill_(float("nan")))
    folders["nan_encoder"] = nan

    inf = _copy(root, "inf_decoder")
    _edit_weights(inf, lambda w: w["W_dec"].fill_(float("inf")))
    folders["inf_decoder"] = inf

    truncated = _copy(root, "truncated")
    data = (truncated / WEIGHTS).read_bytes()
    (truncated / WEIGHTS).write_bytes(data[: len(data) // 2])
    folders["truncated"] = truncated

    header = _copy(root, "garbage_header")
    (header / WEIGHTS).write_bytes(b"\xff" * 64)
    folders["garbage_header"] = header

    empty = _copy(root, "empty_weights")
    (empty / WEIGHTS).write_bytes(b"")
    folders["empty_weights"] = empty

    not_json = _copy(root, "bad_cfg")
    (not_json / "cfg.json").write_text('{"d_in": 128, "d_sae": ')
    folders["bad_cfg"] = not_json

    not_object = _copy(root, "cfg_not_object")
    (not_object / "cfg.json").write_text("[1, 2, 3]")
    folders["cfg_not_object"] = not_object

    no_keys = _copy(root, "cfg_without_keys")
    (no_keys / "cfg.json").write_text("{}")
    folders["cfg_without_keys"] = no_keys

    mismatch = _copy(root, "weights_not_cfg")
    _edit_weights(mismatch, lambda w: w.update(W_dec=w["W_dec"][:, :7], W_enc=w["W_enc"][:, :7]))
    folders["weights_not_cfg"] = mismatch

    elsewhere = _copy(root, "weights_link")
    (elsewhere / WEIGHTS).unlink()
    (elsewhere / WEIGHTS).symlink_to(elsewhere / "cfg.json")  # a weights "file" that points at another file
    folders["weights_link"] = elsewhere

    pickled = root / "pickle_only"
    pickled.mkdir()
    (pickled / "cfg.json").write_text((paths.SAES_DIR / "L0.mlp_out" / "cfg.json").read_text())
    (pickled / "sae_weights.pt").write_bytes(pickle.dumps(_Touch(root / "UNPICKLED")))
    folders["pickle_only"] = pickled
    return folders


@pytest.fixture(scope="session")
def sae_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """SAE folders broken in the ways a downloaded or hand-made one can be, by name (paths as strings).

    `pickle_only` holds a pickle that creates `UNPICKLED` beside the folders if anything ever unpickles it.
    """
    return {name: str(path) for name, path in _build_folders(tmp_path_factory.mktemp("sae_folders")).items()}


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`python -m feature_lens_core ARGS` in this process (the real loaders): returns (status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def hub_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub is unreachable the way feature-lens is told so (FEATURE_LENS_OFFLINE=1, HF_HUB_OFFLINE unset)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("FEATURE_LENS_OFFLINE", "1")


@pytest.fixture
def sockets_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """No offline flag set, but every connection off loopback fails, as on a machine without a network."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FEATURE_LENS_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_hub_down_until", 0.0)  # forget what earlier tests learnt about the hub
    connect, create = socket.socket.connect, socket.create_connection

    def local_only(address: object) -> bool:
        host = address[0] if isinstance(address, tuple) else ""
        return host in ("127.0.0.1", "localhost", "::1") or not isinstance(address, tuple)

    def guarded_connect(self: socket.socket, address: object) -> None:
        if not local_only(address):
            raise OSError(f"network blocked by the test (connect to {address!r})")
        connect(self, address)

    def guarded_create(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        if not local_only(address):
            raise OSError(f"network blocked by the test (connect to {address!r})")
        return create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create)


@pytest.fixture(scope="session")
def hosted_server() -> Iterator[Server]:
    """The app in hosted mode (FEATURE_LENS_HOSTED=1), as on a public server shared by every visitor."""
    need_browser()
    with streamlit_server(hosted=True) as running:
        yield running
