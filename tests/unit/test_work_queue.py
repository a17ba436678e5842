"""work_queue: the server's bounded queue of graph builds, with real threads (jobs held open by events)."""

from __future__ import annotations

import threading

import pytest

from feature_lens_app.work_queue import Busy, Full, WorkQueue

pytestmark = pytest.mark.unit


def held(gate: threading.Event, steps: int = 2):
    """Work that reports `steps` steps, then waits for `gate` before it returns its steps."""

    def work(progress):
        for done in range(1, steps + 1):
            progress(done, steps)
        gate.wait(10)
        return steps

    return work


def test_jobs_run_in_order_one_per_visitor_and_the_queue_is_bounded() -> None:
    queue, gate = WorkQueue(keep=2), threading.Event()
    first = queue.submit("a", "graph-1", held(gate), capacity=3)
    second = queue.submit("b", "graph-2", held(gate), capacity=3)
    with pytest.raises(Busy) as busy:
        queue.submit("a", "graph-3", held(gate), capacity=3)  # a's first graph is still unfinished
    assert busy.value.job is first and not first.finished
    assert queue.submit("c", "graph-1", held(gate), capacity=3) is first  # the same graph: joined, not rebuilt
    queue.submit("c", "graph-4", held(gate), capacity=3)
    with pytest.raises(Full) as full:
        queue.submit("d", "graph-5", held(gate), capacity=3)
    assert full.value.capacity == 3 and not queue.has_room(3)
    assert queue.place(second) == 2 or (queue.place(second) == 1 and first.state == "running")
    gate.set()
    assert first.wait(10) and second.wait(10)
    assert (first.state, first.result, first.done, first.total) == ("done", 2, 2, 2)
    assert first.seconds_per_step() is not None and queue.place(second) == 0
    again = queue.submit("a", "graph-3", held(gate), capacity=3)  # a's earlier graph has ended: a may ask again
    assert again.wait(10) and queue.submit("z", "graph-3", held(gate), capacity=1) is again  # a kept result
    queue.stop()


def test_a_failed_job_says_why_and_is_not_kept() -> None:
    queue = WorkQueue()

    def fails(progress):
        raise ValueError("bad input")

    failed = queue.submit("a", "graph", fails, capacity=1)
    assert failed.wait(10) and failed.state == "failed" and str(failed.error) == "bad input"
    opened = threading.Event()
    opened.set()
    retried = queue.submit("a", "graph", held(opened), capacity=1)
    assert retried is not failed and retried.wait(10) and retried.result == 2
    queue.stop()
