"""The server operator's settings read from the environment (`feature_lens_app/hosting.py`)."""

from __future__ import annotations

import pytest

from feature_lens_app import hosting
from feature_lens_core.errors import FeatureLensError

pytestmark = pytest.mark.app


def _environment(monkeypatch, name: str, value: str | None) -> None:
    """Set `name` to `value` for the test, or unset it for None."""
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(("value", "seconds"), [(None, 30.0), ("", 30.0), (" 5 ", 5.0), ("1", 1.0), ("90.5", 90.5)])
def test_the_graph_abandon_time_is_read_from_the_environment(monkeypatch, value, seconds) -> None:
    _environment(monkeypatch, "FEATURE_LENS_GRAPH_ABANDON_S", value)
    assert hosting.graph_abandon_s() == seconds


@pytest.mark.parametrize("value", ["0.5", "0", "-3", "nan", "inf", "soon", "1e400"])
def test_a_graph_abandon_time_that_would_cancel_builds_in_use_is_refused(monkeypatch, value) -> None:
    monkeypatch.setenv("FEATURE_LENS_GRAPH_ABANDON_S", value)
    with pytest.raises(FeatureLensError, match=r"FEATURE_LENS_GRAPH_ABANDON_S is .*1 or more"):
        hosting.graph_abandon_s()


@pytest.mark.parametrize(
    ("value", "address"), [(None, None), ("  ", None), ("auto", "auto"), (" 10.0.0.2:6379", "10.0.0.2:6379")]
)
def test_the_ray_address_is_read_from_the_environment(monkeypatch, value, address) -> None:
    _environment(monkeypatch, "FEATURE_LENS_RAY_ADDRESS", value)
    assert hosting.ray_address() == address
