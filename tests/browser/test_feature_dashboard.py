"""The Feature page's dashboard in chromium: both histograms draw their bars, every example is shaded token
by token with its own token outlined, and Next moves to the next feature in the address bar."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from feature_lens_app.examples import EXAMPLES

from . import helpers
from .helpers import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_feature_page_draws_histograms_and_shaded_examples(page, server: str) -> None:
    example = EXAMPLES[0]
    query = {"prompt": example.prompt, "sae": example.sae, "feature": example.feature, "pos": example.position}
    page.goto(f"{server}/feature?{urlencode(query)}")
    page.get_by_text("Nearest features by decoder direction").wait_for(timeout=WAIT_MS)
    helpers.wait_idle(page)
    # The chart component's code loads on first use, after the run has ended: wait for the bars themselves (a
    # count taken at once found no chart on the loaded CI machine).
    for chart in range(2):  # the activation histogram, then the logit histogram
        helpers.bars(page, chart).first.wait_for(timeout=WAIT_MS)
        assert helpers.bars(page, chart).count() >= 10
    assert page.get_by_test_id("stVegaLiteChart").count() == 2
    # The visible tab's examples: ten, each with its own token outlined and its tokens shaded.
    examples = page.locator("div[style*='display:flex'] span[style*='outline:2px solid']")
    assert examples.count() >= 10
    shaded = page.locator("span[style*='background:rgba(255,127,14,']")
    assert shaded.count() > 10 * 5
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    page.get_by_role("button", name="Next").click()
    page.wait_for_function(
        "f => new URLSearchParams(location.search).get('feature') === f", arg=str(example.feature + 1), timeout=WAIT_MS
    )
    page.get_by_text(f"Feature #{example.feature + 1} of {example.sae}").first.wait_for(timeout=WAIT_MS)
    helpers.wait_idle(page)
    assert page.get_by_test_id("stException").count() == 0
