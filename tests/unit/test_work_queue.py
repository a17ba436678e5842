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


class Clock:
    """The queue's clock, moved by the test: how long nobody has asked about a job is then exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stepped(steps: int, reached: list[threading.Event], go: list[threading.Event]):
    """Work of `steps` steps: before step i+1 it says it has reached step i and waits for `go[i]`."""

    def work(progress):
        for step in range(steps):
            reached[step].set()
            assert go[step].wait(10)
            progress(step + 1, steps)
        return steps

    return work


def events(n: int) -> list[threading.Event]:
    return [threading.Event() for _ in range(n)]


def test_a_queued_job_nobody_asks_about_is_dropped_and_frees_its_place() -> None:
    clock, gate = Clock(), threading.Event()
    queue = WorkQueue(abandon_s=30, clock=clock)
    running = queue.submit("a", "graph-1", held(gate), capacity=2)
    left = queue.submit("b", "graph-2", held(gate), capacity=2)  # b then closes the tab
    assert not queue.has_room(2)
    clock.now = 20
    assert queue.place(running) in (0, 1)  # a's page still shows its build
    assert not left.finished  # 20 s without b: still in line
    clock.now = 31
    queue.place(running)  # any question to the queue drops what nobody waits for
    assert left.finished and left.state == "cancelled" and left.result is None
    assert "31 s" in str(left.error)
    assert queue.has_room(2) and not running.finished  # b's place is free; a's build goes on
    again = queue.submit("b", "graph-3", held(gate), capacity=2)  # b's turn is free too: no Busy
    gate.set()
    assert running.wait(10) and again.wait(10)
    assert (running.state, again.state) == ("done", "done")
    queue.stop()


def test_a_running_job_nobody_asks_about_stops_at_its_next_report_and_frees_its_slot() -> None:
    clock, reached, go = Clock(), events(3), events(3)
    queue = WorkQueue(abandon_s=30, clock=clock)
    job = queue.submit("a", "graph", stepped(3, reached, go), capacity=1)
    assert reached[0].wait(10)
    go[0].set()  # step 1 reported at once: asked about just now
    assert reached[1].wait(10) and (job.state, job.done) == ("running", 1)
    clock.now = 31  # a closed the tab: nobody asks any more
    go[1].set()
    assert job.wait(10)
    assert job.state == "cancelled" and job.done == 1 and not reached[2].is_set()  # stopped mid-way
    assert queue.has_room(1)
    opened = threading.Event()
    opened.set()
    later = queue.submit("a", "graph", held(opened), capacity=1)  # a new job, not the cancelled one
    assert later is not job and later.wait(10) and later.state == "done"
    queue.stop()


def test_a_job_another_visitor_joined_lives_while_anyone_asks() -> None:
    clock, reached, go = Clock(), events(3), events(3)
    queue = WorkQueue(abandon_s=30, clock=clock)
    job = queue.submit("a", "graph", stepped(3, reached, go), capacity=1)
    assert reached[0].wait(10)
    clock.now = 20
    assert queue.submit("b", "graph", held(threading.Event()), capacity=1) is job  # b joins a's build
    clock.now = 45  # a left at 0 s; b's page asks at 45 s
    assert queue.place(job) == 0
    clock.now = 70  # 25 s after b last asked: kept
    go[0].set()
    assert reached[1].wait(10) and (job.state, job.done) == ("running", 1)
    clock.now = 76  # 31 s after b last asked: nobody wants it any more
    go[1].set()
    assert job.wait(10) and job.state == "cancelled" and job.done == 1
    queue.stop()
