"""Concurrent users: 8 browser sessions on one hosted server ranking different views at once.

Each round, every session opens its next view (a shared link: target, method and direction vary) before any
result is read, so the server computes them side by side. Each page must show no error, and its table (the
CSV it offers for download) must equal what `feature_lens_core.rank` gives for that view alone, computed in
this process. Afterwards the server's memory must be back near where it was once warm.

The server runs in hosted mode, as on a public server shared by every visitor: activation patching is
capped at `hosting.HOSTED.candidates` nodes and no background prefetching competes with the visitors.
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import psutil
import pytest

import feature_lens_core as flc
from feature_lens_app import hosting, state
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from tests.browser import helpers
from tests.streamlit_server import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SESSIONS = 8
ROUNDS_UNTIL_S = 40  # a new round starts only before this; at least two rounds run
MEMORY_MARGIN_MB = 300
BARS = 20  # rows per direction in the Explore page's table (pages/explore.py)
KEY = ["direction", "sae", "kind", "feature", "position"]
SHOWN = "[data-testid='stDownloadButton'], [data-testid='stException'], [data-testid='stAlertContentError']"


def _views() -> list[state.ViewState]:
    """Every worked example with every method and direction, in a fixed shuffled order."""
    views = [
        state.ViewState(
            saes=DEFAULT_SAES,
            prompt=ex.prompt,
            sae=ex.sae,
            feature=ex.feature,
            pos=ex.position,
            method=method,
            direction=direction,
            kind="feature",
            token="",
        )
        for ex, method, direction in itertools.product(EXAMPLES, state.METHODS, state.DIRECTIONS)
    ]
    random.Random(6).shuffle(views)
    return views


@functools.cache
def _alone(view: state.ViewState) -> pd.DataFrame:
    """The Explore table of a view, computed here by the core alone: the top rows of each direction."""
    model = flc.load_model("toy")
    saes = {name: flc.load_sae("toy", name) for name in view.saes}
    candidates = hosting.HOSTED.candidates if view.method == "activation" else None
    target = flc.FeatureRef(view.sae, view.feature, view.pos)
    frames = [
        flc.rank(model, saes, view.prompt, target, direction=d, method=view.method, candidates=candidates)
        .head(BARS)
        .assign(direction=d)
        for d in view.directions
    ]
    return pd.concat(frames, ignore_index=True)


def _idle(pid: int, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Wait until the server has used (almost) no CPU for `quiet_s`: its work, and any left-over rerun, is done."""
    process = psutil.Process(pid)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.cpu_percent(interval=quiet_s) > 5:
        pass


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _read_table(page) -> pd.DataFrame:
    """Wait for the page's run to end, check it shows no error, and download the table it offers."""
    page.wait_for_selector(SHOWN, timeout=helpers.WAIT_MS)
    helpers.wait_idle(page)
    assert page.get_by_test_id("stException").count() == 0
    problems = page.get_by_test_id("stAlertContentError")
    assert problems.count() == 0, problems.all_inner_texts()
    with page.expect_download(timeout=helpers.WAIT_MS) as download:
        page.get_by_role("button", name="Download CSV").click()
    return pd.read_csv(download.value.path(), keep_default_na=False)


def _check_same(got: pd.DataFrame, view: state.ViewState) -> None:
    expected = _alone(view)
    assert got[KEY].to_dict("records") == expected[KEY].to_dict("records"), view
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5, atol=1e-7, err_msg=str(view))


def _open(page, server: Server, view: state.ViewState) -> None:
    """Navigate to a view's link without waiting for the page to load, so that all sessions load at once."""
    page.goto(f"{server.url}/?{urlencode(state.to_params(view))}", wait_until="commit")


def test_eight_sessions_ranking_at_once_each_get_their_own_result(hosted_server: Server, browser) -> None:
    views = _views()
    warm = browser.new_context()
    page = warm.new_page()
    _open(page, hosted_server, views[0])
    _check_same(_read_table(page), views[0])  # loads the model and SAEs: memory is measured from here
    warm.close()
    _idle(hosted_server.pid)
    before = _rss_mb(hosted_server.pid)
    peak = before

    contexts = [browser.new_context(viewport={"width": 1400, "height": 1400}) for _ in range(SESSIONS)]
    pages = [context.new_page() for context in contexts]
    start = time.monotonic()
    requests = rounds = 0
    try:
        while rounds < 2 or time.monotonic() - start < ROUNDS_UNTIL_S:
            mine = [views[(rounds * SESSIONS + s) % len(views)] for s in range(SESSIONS)]
            for page, view in zip(pages, mine, strict=True):
                _open(page, hosted_server, view)  # every session asks before any result is read
            for page, view in zip(pages, mine, strict=True):
                _check_same(_read_table(page), view)
            requests += SESSIONS
            rounds += 1
            peak = max(peak, _rss_mb(hosted_server.pid))
    finally:
        for context in contexts:
            context.close()
    took = time.monotonic() - start
    _idle(hosted_server.pid)
    after = _rss_mb(hosted_server.pid)
    print(
        f"\n{SESSIONS} sessions, {rounds} rounds, {requests} views ranked and checked in {took:.1f} s; "
        f"server RSS {before:.0f} MB warm, {peak:.0f} MB peak, {after:.0f} MB after"
    )
    assert after - before < MEMORY_MARGIN_MB
