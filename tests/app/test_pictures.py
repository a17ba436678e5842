"""The worked examples' chart pictures are pictures of the very charts the page draws now, and nothing else is kept."""

from __future__ import annotations

import base64
import threading

import pytest
from streamlit.testing.v1 import AppTest

from feature_lens_app import pictures, shipped, state, warmup
from tests.app.helpers import assert_healthy, charts
from tests.fixtures.app import APP, TIMEOUT

pytestmark = pytest.mark.app


@pytest.mark.usefixtures("_navigation_mode")
def test_every_shipped_chart_shows_its_picture_and_no_picture_is_left_over(monkeypatch) -> None:
    # As on a fresh server: the built-in model is still loading (in a loader that never ends), so the page draws
    # the shipped results.
    monkeypatch.setattr(warmup, "_ready", threading.Event())
    monkeypatch.setattr(warmup, "_started", [threading.Thread()])
    shown: set[bytes] = set()
    for view in shipped.views():
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        for key, value in state.to_params(view).items():
            at.query_params[key] = value
        at.run()
        assert_healthy(at)
        assert any("Precomputed" in caption.value for caption in at.caption)
        drawn = [key for key in charts(at) if key.startswith("bars_")]
        found = shipped.lookup(view)
        assert found is not None
        assert len(drawn) == len(found.rankings)
        images = [m.value for m in at.markdown if m.value.startswith(f"![{pictures.ALT}](data:image/png;base64,")]
        assert len(images) == len(drawn), "a chart has no picture: run `python -m scripts.draw_pictures`"
        data = [image.split(";base64,", 1)[1].strip().removesuffix(")") for image in images]
        shown |= {base64.b64decode(encoded, validate=True) for encoded in data}
    kept = {path.read_bytes() for path in pictures.FOLDER.glob("*.png")}
    assert kept == shown, "a picture no chart shows is kept: run `python -m scripts.draw_pictures`"


def test_a_view_without_a_picture_draws_its_chart_alone(open_app) -> None:
    at = open_app(**(state.to_params(shipped.views()[0]) | {"method": "direct"}))
    assert_healthy(at)
    assert [key for key in charts(at) if key.startswith("bars_")]
    assert not [m for m in at.markdown if m.value.startswith(f"![{pictures.ALT}]")]
