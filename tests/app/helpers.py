"""Assertions and lookups shared by the AppTest tests."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from feature_lens_app.boundary import BUG_PREFIX


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def assert_healthy(at: AppTest) -> None:
    """No traceback on the page and no error from our own bugs (user-input errors are allowed)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [m for m in errors(at) if m.startswith(BUG_PREFIX)], errors(at)


def charts(at: AppTest) -> dict[str, dict]:
    """Vega-Lite specs the page sent, by widget key (charts without a key get `chart<index>`)."""
    return {
        element.key or f"chart{index}": json.loads(element.proto.spec)
        for index, element in enumerate(at.get("vega_lite_chart"))
    }


def sidebar_values(at: AppTest) -> dict[str, object]:
    """The user's inputs, by widget key."""
    keys = ["model", "saes", "prompt", "sae", "feature", "pos", "method", "baseline", "direction", "corrupt"]
    return {key: at.session_state[key] for key in keys if key in at.session_state}


def open_expander(at: AppTest, key: str) -> AppTest:
    """Open the expander keyed `key` (one that tracks its state and reruns the page), as a click on it does."""
    at.session_state[key] = True
    return at.run()
