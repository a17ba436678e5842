"""A real `streamlit run` server and Debian's chromium driven by Playwright.

Without /usr/bin/chromium the browser tests skip and say why, unless FEATURE_LENS_REQUIRE_BROWSER=1
(as in `.ci/run`), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 90


def _need_browser() -> None:
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


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """The app on a free port; yields its base URL. Output goes to a file (a full pipe would block it)."""
    _need_browser()
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="streamlit-", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("FEATURE_LENS_HOSTED", None)
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
        env=env,
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
        os.environ["FEATURE_LENS_TEST_SERVER_STARTED"] = str(started)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def browser(server: str):  # noqa: ANN201, ARG001 (the server is started first so its clock runs from launch)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # noqa: ANN001, ANN201
    """A fresh browser context per test: a new Streamlit session, as when a link is opened elsewhere."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    yield context.new_page()
    context.close()
