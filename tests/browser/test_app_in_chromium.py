"""The app in a real browser: the landing page draws its charts, a click on a bar walks the circuit,
and a copied URL reopens the same view in a new session.

Charts are Vega-Lite rendered as SVG with ARIA labels, so each bar is a `path` whose aria-label
lists its datum (SAE, feature, position, kind): tests click bars by what they show, not by pixels.
"""

from __future__ import annotations

import re

import pytest

from . import helpers
from .helpers import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _open_landing(page, server: str) -> None:
    page.goto(server + "/?kind=feature")
    helpers.wait_idle(page)
    # The token strip, then the upstream and downstream rankings.
    for chart in (1, 2):
        helpers.bars(page, chart).first.wait_for(timeout=WAIT_MS)


def test_landing_page_renders_its_charts(page, server: str) -> None:
    _open_landing(page, server)
    # How soon: measured, not asserted (benchmarks/bench_app.py, benchmarks/RESULTS.md).
    assert page.get_by_test_id("stVegaLiteChart").count() >= 3
    assert helpers.bars(page, 1).count() > 0 and helpers.bars(page, 2).count() > 0
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    assert {"model", "saes", "prompt", "sae", "feature", "pos", "method"} <= set(helpers.params(page))


def test_clicking_a_bar_moves_the_target(page, server: str) -> None:
    _open_landing(page, server)
    before = helpers.params(page)
    bars = helpers.bars(page, 1)
    labels = [bars.nth(i).get_attribute("aria-label") or "" for i in range(bars.count())]
    data = [helpers.datum(label) for label in labels]
    index, datum = next((i, d) for i, d in enumerate(data) if d.get("kind") == "feature")
    bars.nth(index).click()
    page.wait_for_function(
        "([f, p]) => { const q = new URL(location.href).searchParams;"
        " return q.get('feature') === f && q.get('pos') === p; }",
        arg=[datum["feature"], datum["position"]],
        timeout=WAIT_MS,
    )
    after = helpers.params(page)
    assert (after["sae"], after["feature"], after["pos"]) == (datum["SAE"], datum["feature"], datum["position"])
    assert (after["feature"], after["pos"]) != (before["feature"], before["pos"])
    assert after["prompt"] == before["prompt"]  # walking the circuit keeps the prompt
    helpers.wait_idle(page)
    number = page.get_by_test_id("stSidebar").get_by_label("Feature", exact=True)
    assert number.input_value() == datum["feature"]


def test_a_copied_url_restores_the_view(page, browser, server: str) -> None:
    _open_landing(page, server)
    page.get_by_test_id("stSidebar").get_by_text("Direct attribution", exact=False).click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('method') === 'direct'", timeout=WAIT_MS)
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)
    link = page.url
    first_bar = helpers.bars(page, 1).first.get_attribute("aria-label")

    other = browser.new_context(viewport={"width": 1400, "height": 1400})  # a new visitor, a new session
    try:
        fresh = other.new_page()
        fresh.goto(link)
        helpers.wait_idle(fresh)
        helpers.bars(fresh, 1).first.wait_for(timeout=WAIT_MS)
        assert helpers.params(fresh) == helpers.params(page)
        radio = fresh.get_by_test_id("stSidebar").get_by_role("radio", name=re.compile("Direct attribution"))
        assert radio.is_checked()
        assert helpers.bars(fresh, 1).first.get_attribute("aria-label") == first_bar
    finally:
        other.close()


def test_clicking_a_token_lists_the_features_active_there(page, server: str) -> None:
    _open_landing(page, server)
    tokens = helpers.bars(page, 0)  # the token strip: one bar per token
    datum = helpers.datum(tokens.nth(2).get_attribute("aria-label") or "")
    tokens.nth(2).click()
    heading = page.get_by_text(re.compile(rf"active at .*\(position {datum['position']}\)"))
    heading.wait_for(timeout=WAIT_MS)
    assert helpers.params(page)["pos"] != datum["position"]  # looking at a token does not move the target
