"""The explorer as a person uses it, in chromium against `streamlit run`: Back and Forward walk the views a user
saw, a shared deep link on a freshly started server has the full navigation, tabs say what they show, and the
page asks nothing of any host but the app's own.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlparse

import pytest
from playwright.sync_api import expect

from feature_lens_app import pictures
from feature_lens_app.examples import EXAMPLES
from tests.streamlit_server import streamlit_server

from . import helpers
from .helpers import WAIT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _target(page) -> tuple[str, str, str]:
    query = helpers.params(page)
    return query["sae"], query["feature"], query["pos"]


def _sidebar_feature(page) -> str:
    return page.get_by_test_id("stSidebar").get_by_label("Feature", exact=True).input_value()


def _click_a_feature_bar(page) -> tuple[str, str, str]:
    """Click the upstream bar of the latest layer that is a feature other than the target (so that the walk
    has somewhere to go next); returns the new target."""
    before = _target(page)
    bars = helpers.bars(page, 1)
    data = [helpers.datum(bars.nth(index).get_attribute("aria-label") or "") for index in range(bars.count())]
    order = sorted(range(len(data)), key=lambda index: -int(data[index].get("layer", "0")))
    for index in order:
        datum = data[index]
        target = (datum.get("SAE", ""), datum.get("feature", ""), datum.get("position", ""))
        if datum.get("kind") == "feature" and target != before:
            bars.nth(index).click()
            page.wait_for_function(
                "([f, p]) => { const q = new URL(location.href).searchParams;"
                " return q.get('feature') === f && q.get('pos') === p; }",
                arg=[target[1], target[2]],
                timeout=WAIT_MS,
            )
            helpers.wait_idle(page)
            helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)
            return target
    raise AssertionError("no feature bar to click")


def _wait_for_target(page, target: tuple[str, str, str]) -> None:
    helpers.wait_for_params(page, dict(zip(("sae", "feature", "pos"), target, strict=True)))


def test_back_and_forward_walk_three_bars_deep_and_back(page, server: str) -> None:
    page.goto(server + "/?kind=feature")
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)
    walk = [_target(page)]
    for _ in range(3):
        walk.append(_click_a_feature_bar(page))
    assert len(set(walk)) == 4, walk
    assert f"#{walk[-1][1]}" in page.title()  # the tab names the view

    for earlier in reversed(walk[:-1]):
        page.go_back()
        _wait_for_target(page, earlier)
        assert _target(page) == earlier  # still there after the app had time to rewrite it
        assert _sidebar_feature(page) == earlier[1]  # the view followed the address bar
        assert f"#{earlier[1]}" in page.title()
    page.go_forward()
    _wait_for_target(page, walk[1])
    assert _sidebar_feature(page) == walk[1][1]

    # The trail of recent targets returns to one in a click.
    trail = page.get_by_test_id("stSidebar").get_by_role("button", name=re.compile(rf"#{walk[3][1]} @{walk[3][2]}"))
    trail.first.click()
    _wait_for_target(page, walk[3])


def test_the_guided_tour_steps_forward_and_back_one_entry_each(page, server: str) -> None:
    # The landing view and the first example share a target (they differ in kind, prompt is the same): the waits
    # name every parameter that tells them apart.
    page.goto(server + "/")
    helpers.wait_idle(page)
    entries = page.evaluate("history.length")
    keys = ("prompt", "sae", "feature", "pos", "kind", "token")
    seen = [{key: helpers.params(page)[key] for key in keys}]
    for example in EXAMPLES:
        page.get_by_role("button", name="Next step").click()
        step = {"prompt": example.prompt, "sae": example.sae, "feature": str(example.feature)}
        step |= {"pos": str(example.position), "kind": "feature", "token": ""}
        helpers.wait_for_params(page, step)
        seen.append(step)
    assert page.evaluate("history.length") == entries + len(EXAMPLES)
    expect(page.get_by_role("link", name="Next: how it works")).to_be_visible()
    for earlier in reversed(seen[:-1]):
        page.go_back()
        helpers.wait_for_params(page, earlier)
    assert seen[0]["kind"] == "logit"
    expect(page.get_by_text(f"Guided tour, 1 of {len(EXAMPLES) + 1}.")).to_be_visible()


def test_back_from_another_page_returns_to_it(page, server: str) -> None:
    page.goto(server + "/?kind=feature")
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)
    entries = page.evaluate("history.length")
    link = page.get_by_test_id("stPageLink-NavLink").filter(has_text="How it works")
    assert urlparse(link.get_attribute("href") or "").query == urlparse(page.url).query  # the link keeps the view
    link.click()
    page.wait_for_function("() => location.pathname === '/how_it_works'", timeout=WAIT_MS)
    helpers.wait_idle(page)
    page.wait_for_timeout(helpers.SETTLE_MS)
    assert page.title().startswith("How it works")
    # One entry: Streamlit's own bar cleared the query string, so a switch pushed a bare entry and then the
    # view's, and Back landed on the bare one, whose run rewrote the URL: Back never left the page.
    assert page.evaluate("history.length") == entries + 1
    assert urlparse(page.url).query == urlparse(link.get_attribute("href") or "").query
    page.go_back()
    page.wait_for_function("() => location.pathname === '/'", timeout=WAIT_MS)
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(helpers.SETTLE_MS)
    assert urlparse(page.url).path in ("", "/")
    assert page.title().startswith("Explore")


_LINKED = EXAMPLES[1]


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (
            "/feature?"
            + urlencode(
                {"prompt": _LINKED.prompt, "sae": _LINKED.sae, "feature": _LINKED.feature, "pos": _LINKED.position}
            ),
            (_LINKED.prompt, _LINKED.sae, _LINKED.feature),
        ),
        ("/feature", (EXAMPLES[0].prompt, EXAMPLES[0].sae, EXAMPLES[0].feature)),  # a bare page URL: the default view
    ],
    ids=["shared link", "bare page"],
)
def test_a_deep_link_is_the_first_request_after_a_server_start(browser, path: str, shown: tuple) -> None:
    """The first request on a page URL runs that page alone (the frame's fallback, see `frame`): the page must
    still get the navigation, and the sidebar must show the linked view, not blank widgets (the browser used
    to forget their values when it switched to the navigation's page, and a click then sent the blanks)."""
    prompt, sae, feature = shown
    with streamlit_server() as fresh:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.goto(fresh.url + path)
            helpers.wait_idle(page)
            page.get_by_text(f"Feature #{feature} of {sae}").first.wait_for(timeout=WAIT_MS)
            links = page.get_by_test_id("stPageLink-NavLink")
            links.first.wait_for(timeout=WAIT_MS)
            assert all(links.filter(has_text=name).count() == 1 for name in ("Explore", "Feature", "How it works"))
            assert urlparse(page.url).path == "/feature"
            assert helpers.params(page)["feature"] == str(feature)
            page.wait_for_timeout(helpers.SETTLE_MS)  # past the run the browser asks for once it has switched pages
            helpers.wait_idle(page)
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_label("Feature", exact=True)).to_have_value(str(feature), timeout=WAIT_MS)
            expect(sidebar.get_by_role("textbox", name="Prompt", exact=True)).to_have_value(prompt)
            expect(sidebar.get_by_test_id("stMultiSelect").first).not_to_contain_text("Choose options")
            assert page.get_by_test_id("stSidebarNav").count() == 0  # no legacy list of files
            assert page.get_by_test_id("stException").count() == 0
        finally:
            context.close()


def test_no_request_leaves_the_server(browser, server: str) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    hosts: set[str] = set()
    context.on("request", lambda request: hosts.add(urlparse(request.url).netloc))
    warnings: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda message: warnings.append(message.text) if message.type == "warning" else None)
        page.goto(server + "/?kind=feature")
        helpers.wait_idle(page)
        helpers.bars(page, 2).first.wait_for(timeout=WAIT_MS)
        page.get_by_test_id("stPageLink-NavLink").filter(has_text="Circuit graph").click()
        helpers.wait_idle(page)
        page.get_by_test_id("stVegaLiteChart").nth(0).wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(1000)
        assert page.get_by_text("Deploy", exact=True).count() == 0  # toolbarMode = "viewer"
    finally:
        context.close()
    assert hosts <= {urlparse(server).netloc}, hosts
    assert not [w for w in warnings if "vega" in w.lower() or "WARN" in w], warnings


def test_a_fresh_server_draws_the_shipped_chart_then_live_results_by_itself(browser) -> None:
    """The landing page on a fresh server: the chart's picture at once, then the chart itself in its place (from
    shipped results while the model loads), then, with no click, the live results (the warm-up loads the model
    and the page's timer reruns it), whose first click keeps the target."""
    with streamlit_server() as fresh:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        try:
            page = context.new_page()
            page.goto(fresh.url + "/")
            picture = page.get_by_alt_text(pictures.ALT)
            picture.wait_for(state="visible", timeout=WAIT_MS)  # with the first message, before the chart library
            assert picture.evaluate("image => image.naturalWidth") > 0
            helpers.bars(page, 0).first.wait_for(timeout=WAIT_MS)
            expect(picture).to_be_hidden()  # the chart took its place
            shipped = page.get_by_text("Precomputed for this worked example", exact=False)
            expect(shipped).to_have_count(0, timeout=WAIT_MS)
            page.get_by_text("nodes ranked in", exact=False).first.wait_for(timeout=WAIT_MS)
            helpers.bars(page, 0).first.wait_for(timeout=WAIT_MS)
            assert page.get_by_test_id("stException").count() == 0
            # The live rerun drew the sidebar's number boxes with their bounds; the browser must still hold their
            # values, or a first click sends 0s (it did in 1 fresh session in 7, moving the target to position 0).
            helpers.wait_idle(page)
            view = helpers.params(page)
            page.get_by_test_id("stSidebar").get_by_text("Direct attribution").click()
            helpers.wait_for_params(page, {"method": "direct", "pos": view["pos"], "feature": view["feature"]})
        finally:
            context.close()
