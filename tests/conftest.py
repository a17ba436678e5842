"""Fixtures shared by the browser and reliability tiers: one `streamlit run` server and one chromium per session.

Without /usr/bin/chromium the tests using them skip and say why, unless FEATURE_LENS_REQUIRE_BROWSER=1
(as in `.ci/run`), where a missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.streamlit_server import CHROMIUM, CHROMIUM_ARGS, need_browser, streamlit_server


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """The app (local mode) on a free port; yields its base URL."""
    need_browser()
    with streamlit_server() as running:
        os.environ["FEATURE_LENS_TEST_SERVER_STARTED"] = str(running.started)
        yield running.url


@pytest.fixture(scope="session")
def browser(server: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
