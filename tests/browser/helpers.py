"""Waiting for and reading a Streamlit page in chromium, shared by the browser and reliability tests."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import expect

from feature_lens_core.connectome import graph_rankings

WAIT_MS = 120_000
GRAPH_MOST_HOPS, GRAPH_MOST_NODES = 3, 60  # the Circuit graph page's sliders at their ends (its node step is 2)
# A view whose largest target graph (both sides, 3 hops, 60 nodes) runs long: 71 tokens, and under 300 characters
# so a hosted server takes it. With exact activation patching, about half a second a ranking locally.
LONG_GRAPH_VIEW = {
    "prompt": "Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds that "
    "lour'd upon our house in the deep bosom of the ocean buried. Now are our brows bound with victorious wreaths, "
    "our bruised arms hung up for monuments.",
    "sae": "L1.mlp_out",
    "feature": "445",
    "pos": "20",
    "method": "activation",
}


def ask_for_the_largest_graph(page, *, smaller: int = 0) -> None:
    """On the Circuit graph page showing the target feature's graph: both sides, the most hops and nodes (less
    `smaller` steps of the node budget, so that each call can ask for a graph not built before), confirmed.

    "Build it" is pressed only once the page asks about exactly that graph: a press on the question about an
    earlier slider position (a rerun still on its way) would confirm that graph, not this one."""
    main = page.get_by_test_id("stMainBlockContainer")
    main.get_by_test_id("stButtonGroup").get_by_text("Both", exact=True).click()
    wait_idle(page)
    for name in ("Hops", "Node budget"):
        main.get_by_role("slider", name=name).press("End")
        wait_idle(page)
    for _ in range(smaller):
        main.get_by_role("slider", name="Node budget").press("ArrowLeft")
        wait_idle(page)
    budget = GRAPH_MOST_NODES - 2 * smaller
    expect(main.get_by_role("slider", name="Node budget")).to_have_value(str(budget), timeout=WAIT_MS)
    rankings = graph_rankings(GRAPH_MOST_HOPS, budget, "both")  # two budgets can cost the same: the slider says which
    main.get_by_text(f"This graph is long: up to {rankings} rankings", exact=False).wait_for(timeout=WAIT_MS)
    wait_idle(page)
    main.get_by_role("button", name="Build it").click()


def wait_idle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid='stApp']", timeout=WAIT_MS)
    page.wait_for_timeout(300)  # let a rerun triggered by the last action start
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=WAIT_MS)


SETTLE_MS = 2500  # longer than any rewrite of the address bar after Back would take


def wait_for_params(page, expected: dict[str, str]) -> None:
    """Wait until the address bar holds these query parameters and the app has settled, and check that it still
    holds them then (the app did not rewrite them)."""
    page.wait_for_function(
        "(want) => { const q = new URL(location.href).searchParams;"
        " return Object.entries(want).every(([k, v]) => q.get(k) === v); }",
        arg=expected,
        timeout=WAIT_MS,
    )
    wait_idle(page)
    page.wait_for_timeout(SETTLE_MS)
    wait_idle(page)
    assert {key: params(page).get(key) for key in expected} == expected


def bars(page, chart: int):
    """The bars of a chart (for the token strip, its cells)."""
    marks = "path[aria-roledescription='bar'], path[aria-roledescription='rect mark']"
    return page.get_by_test_id("stVegaLiteChart").nth(chart).locator(marks)


def params(page) -> dict[str, str]:
    """The page's query parameters (the last value of each)."""
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query, keep_blank_values=True).items()}


def datum(label: str) -> dict[str, str]:
    """Fields of a mark from its ARIA label: 'score: 0.1; ...; SAE: L0.mlp_out; ...; feature: 12; ...'."""
    return {k.strip(): v.strip() for k, v in re.findall(r"([^;:]+):\s*([^;]*)", label)}
