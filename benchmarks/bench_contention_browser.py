"""A visitor's click while another visitor's long graph is built, through two real browser sessions.

    python -m benchmarks.bench_contention_browser [--clicks 6] [--method activation|integrated] [--graphs 1]

Starts `streamlit run --server.headless true` in hosted mode (`FEATURE_LENS_HOSTED=1`, the browser tests'
server, tests/streamlit_server.py) and two chromium contexts, i.e. two Streamlit sessions. Visitor B opens
the Explore page and makes `--clicks` clicks alone, alternately a bar (a new target) and another method in
the sidebar, each timed from the click to the updated ranking chart (as `bench_app` times a redraw). Then
visitor A opens the Circuit graph page on a 71-token prompt (`helpers.LONG_GRAPH_VIEW`) with activation
patching, asks for the target feature's graph at its largest (3 hops, 60 nodes, both sides: 42 rankings),
confirms "Build it", and while A's build is under way B makes as many clicks again. Only clicks made while
A's page showed its build's progress count as under load. Prints the figures (a benchmark, not a test:
nothing is asserted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from urllib.parse import urlencode

from playwright.sync_api import Page, sync_playwright

from benchmarks.bench_app import METHOD_LABELS, _next_target, _redraw_after
from tests.browser.helpers import LONG_GRAPH_VIEW, WAIT_MS, ask_for_the_largest_graph, bars, wait_idle
from tests.streamlit_server import CHROMIUM, CHROMIUM_ARGS, need_browser, streamlit_server

TARGET_S = 2.0


def _clicks(page: Page, n: int, start: int, busy: Page | None = None) -> list[tuple[float, bool]]:
    """`n` clicks of B (bar, method, bar, ...): seconds to the redrawn chart, and whether `busy` (A's page)
    was building its graph when the click was made."""
    sidebar = page.get_by_test_id("stSidebar")
    timed = []
    for i in range(start, start + n):
        building = busy is not None and busy.get_by_test_id("stProgress").count() > 0
        if i % 2 == 0:
            chart, index = _next_target(page)
            seconds = _redraw_after(page, lambda chart=chart, index=index: bars(page, chart).nth(index).click())
        else:
            label = METHOD_LABELS[(i // 2) % len(METHOD_LABELS)]
            seconds = _redraw_after(page, lambda label=label: sidebar.get_by_text(label).first.click())
        timed.append((seconds["total"], building))
    return timed


def _start_long_graph(page: Page, url: str, method: str, smaller: int = 0) -> float:
    """Open the graph page as visitor A, ask for the largest target graph (less `smaller` steps of the node budget,
    so that each round is a new graph, not one the queue has kept) and confirm it; when it was confirmed."""
    page.goto(url + "/graph?" + urlencode({**LONG_GRAPH_VIEW, "method": method}))
    wait_idle(page)
    main = page.get_by_test_id("stMainBlockContainer")
    main.get_by_text("The target feature", exact=True).click()
    wait_idle(page)
    ask_for_the_largest_graph(page, smaller=smaller)
    started = time.perf_counter()
    page.get_by_test_id("stProgress").first.wait_for(timeout=WAIT_MS)  # the build is under way
    return started


def measure(clicks: int, method: str, graphs: int) -> dict:
    need_browser()
    with sync_playwright() as playwright, streamlit_server(hosted=True) as server:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        a, b = (browser.new_context(viewport={"width": 1400, "height": 1400}).new_page() for _ in range(2))
        b.goto(server.url + "/?kind=feature")  # the feature example: two charts to click
        bars(b, 1).first.wait_for(timeout=WAIT_MS)
        wait_idle(b)
        alone = _clicks(b, clicks, 0)
        loaded, graph_s = [], []
        for graph in range(graphs):
            confirmed = _start_long_graph(a, server.url, method, smaller=graph)
            loaded += _clicks(b, clicks, clicks * (graph + 1), busy=a)
            a.get_by_test_id("stProgress").first.wait_for(state="detached", timeout=WAIT_MS * 5)
            graph_s.append(time.perf_counter() - confirmed)
        browser.close()
    return {
        "alone": [s for s, _ in alone],
        "under_load": [s for s, busy in loaded if busy],
        "after_the_graph": [s for s, busy in loaded if not busy],  # clicks made once A's build had ended
        "graph_s": graph_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A click while another visitor's graph is built, in two browsers.")
    parser.add_argument("--clicks", type=int, default=6, help="clicks of visitor B, alone and under A's graph")
    parser.add_argument(
        "--method",
        default="activation",
        choices=["activation", "integrated"],
        help="A's graph's method: activation patching (capped at 32 candidates a ranking in hosted mode, about "
        "8 s here) or integrated gradients (longer, so that more of B's clicks fall under it)",
    )
    parser.add_argument("--graphs", type=int, default=1, help="A's graphs in turn, B clicking under each")
    args = parser.parse_args()
    figures = measure(args.clicks, args.method, args.graphs)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    took = ", ".join(f"{s:.1f}" for s in figures["graph_s"])
    print(f"A's graphs ({args.method}, 3 hops, 60 nodes and fewer, both sides) took {took} s")
    rows = (("B's click, alone", "alone"), ("B's click, under A's graph", "under_load"))
    for what, key in (*rows, ("B's click, once A's graph was drawn", "after_the_graph")):
        times = figures[key]
        if not times:
            print(f"{what}: none")
            continue
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{what}: median {statistics.median(times):.2f} s, worst {max(times):.2f} s "
            f"(target < {TARGET_S:g} s; {len(times)} clicks: {shown})"
        )


if __name__ == "__main__":
    main()
