"""A real `streamlit run` server of the app, for the browser and reliability tiers (see tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Server:
    """A running server: its base URL, its process id (to measure its memory) and when it was launched."""

    url: str
    pid: int
    started: float


def need_browser() -> None:
    """Skip (or, with FEATURE_LENS_REQUIRE_BROWSER=1 as in `.ci/run`, fail) when chromium is missing."""
    if Path(CHROMIUM).exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`) to run browser tests"
    if os.environ.get("FEATURE_LENS_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (FEATURE_LENS_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(hosted: bool = False, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """The app on a free loopback port, offline, in hosted mode or not, with the settings `env` adds to the
    environment. Output goes to a file (a full pipe would block it) that is shown if the server fails to start."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="streamlit-", suffix=".log", delete=False)  # noqa: SIM115
    settings = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    settings.pop("FEATURE_LENS_HOSTED", None)
    if hosted:
        settings["FEATURE_LENS_HOSTED"] = "1"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env=settings,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - started > START_TIMEOUT_S:
                log.seek(0)
                pytest.fail(f"streamlit did not start:\n{log.read()[-3000:]}")
            time.sleep(0.2)
        yield Server(url, proc.pid, started)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)
