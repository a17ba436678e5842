"""Explaining a prediction in chromium: switching the Explore page to a logit target, picking one of the model's
predictions and clicking a bar are each one history entry, and Back walks them in reverse."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from feature_lens_app.examples import EXAMPLES

from . import helpers
from .helpers import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
POSITION = "7"  # ' art' in "wherefore art thou": the model predicts ' thou' at 91%


def _most_active_there() -> str:
    """The landing SAE's feature most active at `POSITION`, so that the feature view has bars before the switch."""
    import feature_lens_core as flc

    acts = flc.activations(flc.load_model("toy"), flc.load_sae("toy", EXAMPLES[0].sae), EXAMPLES[0].prompt)
    here = acts.loc[acts["position"] == int(POSITION)]
    return str(int(here.loc[here["activation"].idxmax(), "feature"]))


def _title(page) -> str:
    return page.get_by_test_id("stHeading").first.inner_text()


def test_switching_to_a_logit_and_back(page, server: str) -> None:
    # No token yet: the switch picks the top one.
    page.goto(f"{server}/?kind=feature&token=&pos={POSITION}&feature={_most_active_there()}")
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)

    page.get_by_test_id("stMain").get_by_text("A next-token logit").click()
    helpers.wait_for_params(page, {"kind": "logit", "token": " thou"})
    assert _title(page) == "Why the model predicts a token"
    choices = page.get_by_role("button", name=re.compile(r"^'.*' \d+%$"))
    expect(choices).to_have_count(8)
    expect(choices.first).to_have_text(re.compile(r"^' thou' 9\d%$"))
    upstream = helpers.bars(page, 0)  # no token strip for a logit: the first chart is the upstream one
    upstream.first.wait_for(timeout=WAIT_MS)
    assert page.get_by_test_id("stVegaLiteChart").count() == 1  # nothing is downstream of a logit

    choices.nth(1).click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('token') !== ' thou'", timeout=WAIT_MS)
    second = helpers.params(page)["token"]
    helpers.wait_for_params(page, {"kind": "logit", "token": second})

    bars = helpers.bars(page, 0)
    bars.first.wait_for(timeout=WAIT_MS)
    data = [helpers.datum(bars.nth(index).get_attribute("aria-label") or "") for index in range(bars.count())]
    index = next(i for i, datum in enumerate(data) if datum.get("kind") == "feature")
    bars.nth(index).click()
    helpers.wait_for_params(
        page, {"kind": "feature", "feature": data[index]["feature"], "pos": data[index]["position"]}
    )
    assert _title(page) == "A feature's causes and effects"

    page.go_back()
    helpers.wait_for_params(page, {"kind": "logit", "token": second})
    assert page.get_by_test_id("stMain").get_by_label("Token", exact=True).input_value() == second.replace("\n", "⏎")
    page.go_back()
    helpers.wait_for_params(page, {"kind": "logit", "token": " thou"})
    page.go_back()
    helpers.wait_for_params(page, {"kind": "feature"})
    assert _title(page) == "A feature's causes and effects"
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)  # the strip and both charts are back
