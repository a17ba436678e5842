"""AppTest fixtures: the real app on the built-in model, with a generous timeout.

Caches (`st.cache_resource`, `st.cache_data`) are module-level, so the model, SAEs and
rankings computed by one test are reused by the next: the suite pays for each once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 180  # a cold run imports torch and ranks on 2 shared cores


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never wait on the network: hub loads fail at once, as on an offline laptop."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FEATURE_LENS_HOSTED", raising=False)


@pytest.fixture
def _navigation_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the app as a live server does once any session has called `st.navigation`.

    With a `pages/` folder beside the entrypoint, Streamlit starts in its legacy multipage mode until the
    first `st.navigation` call switches it off for the process. AppTest resets that switch before every
    run, so each rerun would take the legacy path and drop the sidebar's widget values. `open_page_alone`
    keeps the legacy path on purpose (a deep link that is the first request after a server start).
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def open_app(_navigation_mode: None) -> Callable[..., AppTest]:
    """Open the app at `page` (a file under pages/, or None for the landing page) with query params."""

    def _open(page: str | None = None, **params: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        for key, value in params.items():
            at.query_params[key] = value
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        return at

    return _open


@pytest.fixture
def open_page_alone() -> Callable[..., AppTest]:
    """Run one page file without the entrypoint, as Streamlit serves a deep link right after a start."""

    def _open(page: str, **params: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        for key, value in params.items():
            at.query_params[key] = value
        return at.switch_page(f"pages/{page}.py").run()

    return _open
