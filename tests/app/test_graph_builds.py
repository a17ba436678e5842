"""The target graph's cost, its confirmation and the server's queue of graph builds, on the built-in model."""

from __future__ import annotations

import threading
import time

import pytest

from feature_lens_app import graph_builds
from feature_lens_app.examples import EXAMPLES
from tests.app.helpers import assert_healthy, charts, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]


def graphs(at) -> list[str]:
    return [key for key in charts(at) if key.startswith("graph_")]


def infos(at) -> list[str]:
    return [i.value for i in at.info]


def held(gate: threading.Event):
    """A stand-in for another build in the queue: it holds its place until `gate` opens."""
    return lambda progress: gate.wait(60)


def test_the_default_graph_builds_at_once_and_a_long_one_asks_first(open_app) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_of").set_value("feature").run()
    assert_healthy(at)
    assert graphs(at) and not [b for b in at.button if b.key == "graph_confirm"]  # 13 rankings: no question
    # The landing view's target is a logit; this graph is the sidebar's feature's, and its target line says so.
    (line,) = [m.value for m in at.markdown if m.value.startswith("**Target:**")]
    assert f"the feature **#{EXAMPLES[0].feature}**" in line and "predicts" not in line, line
    at.slider(key="graph_hops").set_value(3)
    at.slider(key="graph_budget").set_value(60).run()
    assert_healthy(at)
    assert not graphs(at), "a long graph must not start before it is confirmed"
    (said,) = [i for i in infos(at) if "This graph is long" in i]
    assert "up to 41 rankings" in said and f"more than {graph_builds.CONFIRM_RANKINGS}" in said
    at.button(key="graph_confirm").click().run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert graphs(at) and not [i for i in infos(at) if "This graph is long" in i]
    assert graph_builds._seconds_per_ranking  # the next estimate says seconds too
    at.run()  # a rerun (any click) keeps the confirmed graph without asking again
    assert graphs(at) and not [b for b in at.button if b.key == "graph_confirm"]


def test_a_visitor_whose_earlier_graph_runs_is_told_to_wait_and_keeps_their_settings(open_app) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_of").set_value("feature").run()
    gate = threading.Event()
    earlier = graph_builds.queue.submit(at.session_state["_fl_visitor"], "earlier graph", held(gate), capacity=99)
    try:
        at.slider(key="graph_hops").set_value(1).run()
        assert_healthy(at)
        assert not errors(at), errors(at)
        assert [i for i in infos(at) if "Your earlier graph is still being built" in i] and not graphs(at)
        assert at.slider(key="graph_hops").value == 1 and at.sidebar.text_area(key="prompt").value
    finally:
        gate.set()
    assert earlier.wait(60)
    at.run()  # what the page's own poll does once the earlier graph has ended
    assert_healthy(at)
    assert graphs(at) and at.slider(key="graph_hops").value == 1


def test_an_earlier_graph_nobody_waits_for_is_dropped_and_the_new_one_is_built(open_app, monkeypatch) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_of").set_value("feature").run()
    now = [time.monotonic()]
    monkeypatch.setattr(graph_builds.queue, "clock", lambda: now[0])  # moved by the test: no waiting
    gate = threading.Event()
    other = graph_builds.queue.submit("other visitor", "a graph still watched", held(gate), capacity=99)
    earlier = graph_builds.queue.submit(at.session_state["_fl_visitor"], "a graph left behind", held(gate), capacity=99)
    try:
        at.slider(key="graph_budget").set_value(12).run()  # the visitor changes the graph: the earlier one is unseen
        assert_healthy(at)
        (said,) = [i for i in infos(at) if "Your earlier graph is still being built" in i]
        assert f"within {graph_builds.ABANDON_S:.0f} s if nobody else is waiting for it" in said
        now[0] += graph_builds.ABANDON_S + 1
        graph_builds.queue.place(other)  # the other visitor's page still asks about theirs
        assert earlier.finished and earlier.state == "cancelled" and not other.finished
    finally:
        gate.set()
    assert other.wait(60) and other.state == "done"
    at.run()  # what the page's own poll does once the earlier graph has ended
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert graphs(at) and at.slider(key="graph_budget").value == 12


def test_a_full_queue_says_so_and_the_graph_comes_once_there_is_room(open_app) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_of").set_value("feature").run()
    gate = threading.Event()
    capacity = graph_builds.hosting.limits().graph_jobs
    others = [
        graph_builds.queue.submit(f"other-{i}", f"other graph {i}", held(gate), capacity=99) for i in range(capacity)
    ]
    try:
        at.slider(key="graph_budget").set_value(20).run()
        assert_healthy(at)
        assert not errors(at), errors(at)
        assert [i for i in infos(at) if f"building {capacity} graphs" in i] and not graphs(at)
    finally:
        gate.set()
    assert all(job.wait(60) for job in others)
    at.run()
    assert_healthy(at)
    assert graphs(at) and at.slider(key="graph_budget").value == 20
