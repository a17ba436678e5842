"""A visitor who closes the tab while their graph is being built frees the server's queue for the next visitor.

A real server (one worker builds the visitors' graphs in turn) with a short abandon time: visitor A starts a
long activation-patching graph and closes the tab; visitor B's graph, queued behind it, is built;
then A's graph asked for again is built anew (its page shows a progress bar) rather than drawn at once from the
queue's results, so A's build was cancelled, not finished.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser import helpers
from tests.streamlit_server import Server, need_browser, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ABANDON_S = 3
WAIT_MS = helpers.WAIT_MS
BUILDING = re.compile(r"^(Building the graph|Waiting for other visitors' graphs)")  # a graph build's progress bar
DRAWN = re.compile(r"^\d+ nodes, \d+ edges\.$")  # the caption under a drawn graph


@pytest.fixture(scope="module")
def short_abandon_server() -> Iterator[Server]:
    need_browser()
    with streamlit_server(env={"FEATURE_LENS_GRAPH_ABANDON_S": str(ABANDON_S)}) as running:
        yield running


def _segment(page, label: str):
    """The option `label` of one of the page's segmented controls."""
    return page.get_by_test_id("stButtonGroup").get_by_text(label, exact=True)


def _shown(page) -> str:
    """The end of the page's text, for a failure message."""
    return page.get_by_test_id("stMainBlockContainer").inner_text()[-2000:]


def _open_feature_graph(page, url: str) -> None:
    page.goto(url)
    helpers.wait_idle(page)
    _segment(page, "The target feature").click()
    helpers.wait_idle(page)


def test_a_closed_tab_frees_the_queue_and_its_graph_is_not_finished(browser, short_abandon_server) -> None:
    long_graph = f"{short_abandon_server.url}/graph?" + urlencode(helpers.LONG_GRAPH_VIEW)  # local: no candidate cap
    first = browser.new_context(viewport={"width": 1440, "height": 900})
    page = first.new_page()
    _open_feature_graph(page, long_graph)
    helpers.ask_for_the_largest_graph(page)
    page.get_by_text("Building the graph:", exact=False).wait_for(timeout=WAIT_MS)
    first.close()  # visitor A leaves while their graph is being built

    second = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = second.new_page()
        _open_feature_graph(page, f"{short_abandon_server.url}/graph?method=attribution")  # the worked example
        # B's default graph waits behind A's until A's build notices nobody asks about it and stops.
        page.get_by_text(DRAWN).wait_for(timeout=WAIT_MS)
        assert page.get_by_test_id("stException").count() == 0
        assert page.get_by_test_id("stAlertContentError").count() == 0

        _open_feature_graph(page, long_graph)
        helpers.ask_for_the_largest_graph(page)
        # A finished graph would be drawn from the queue's results at once; a cancelled one is built again, which the
        # page shows with the build's progress bar (queued or under way, before its first ranking or after) first.
        built = page.get_by_text(BUILDING)
        drawn = page.get_by_text(DRAWN)
        try:
            built.or_(drawn).first.wait_for(timeout=WAIT_MS)
        except PlaywrightTimeout:
            pytest.fail(f"Neither a build nor a graph after {WAIT_MS / 1000:.0f} s; the page showed:\n{_shown(page)}")
        assert drawn.count() == 0, f"A's abandoned graph was finished and kept; the page showed:\n{_shown(page)}"
        assert page.get_by_test_id("stAlertContentError").count() == 0
    finally:
        second.close()
