"""Each browser test gets a fresh browser context; the server and chromium are shared (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def page(browser):
    """A fresh browser context per test: a new Streamlit session, as when a link is opened elsewhere."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    yield context.new_page()
    context.close()
