"""Across prompts in chromium: clicking an edge's point makes its feature the target on Explore, on a prompt
where it fires."""

from __future__ import annotations

import pytest

from feature_lens_app import circuits

from . import helpers
from .helpers import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PROMPTS = 12  # the page's default number of held-out prompts


def test_clicking_an_edge_opens_its_feature_on_explore(page, server: str) -> None:
    page.goto(f"{server}/prompts?direction=upstream")
    helpers.wait_idle(page)
    chart = page.get_by_test_id("stVegaLiteChart").first
    points = chart.locator("path[aria-roledescription='point'], path[aria-roledescription='symbol']")
    points.first.wait_for(timeout=WAIT_MS)
    data = [helpers.datum(points.nth(index).get_attribute("aria-label") or "") for index in range(points.count())]
    # An error node's point is not a feature to open (its label shows the feature as "−1", a typographic minus).
    index = next(i for i, datum in enumerate(data) if datum.get("node") != "error")
    points.nth(index).click()
    page.wait_for_function(
        "(f) => location.pathname === '/' && new URL(location.href).searchParams.get('feature') === f",
        arg=data[index]["feature"],
        timeout=WAIT_MS,
    )
    helpers.wait_idle(page)
    query = helpers.params(page)
    assert query["sae"] == data[index]["SAE"] and query["kind"] == "feature"
    assert query["prompt"] in circuits.prompts("held-out", PROMPTS, "")  # the prompt's text, not its index in the set
    assert page.get_by_test_id("stHeading").first.inner_text() == "A feature's causes and effects"
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)  # the feature fires on the prompt it was opened on
