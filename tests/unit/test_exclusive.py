"""The compute lock is re-entrant and first come, first served: a thread that lets go and asks again waits
behind every thread already waiting (so a long job of many passes cannot keep another visitor out); background
work goes after other threads and while no foreground request is open, and goes whenever none is; preemptible work
gives up, within one pass, once a request opens."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from feature_lens_core.exclusive import FairLock, Preempted


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _visitor(lock: FairLock, opened: threading.Event, close: threading.Event) -> threading.Thread:
    """A visitor's script run (not started): its request opens (`opened` is set) and stays open until `close`."""

    def run() -> None:
        with lock.foreground():
            opened.set()
            assert close.wait(10)

    return threading.Thread(target=run)


def test_a_thread_can_take_the_lock_it_holds():
    lock = FairLock()
    lock.acquire()
    lock.acquire()
    lock.release()
    other = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    other.start()
    time.sleep(0.05)
    assert other.is_alive()  # still held once
    lock.release()
    other.join(timeout=10)
    assert not other.is_alive()


def test_waiting_threads_go_first_in_the_order_they_asked():
    lock, order = FairLock(), []

    def take(name: str) -> None:
        lock.acquire()
        order.append(name)
        lock.release()

    lock.acquire()
    waiting = []
    for name in ("first", "second", "third"):
        thread = threading.Thread(target=take, args=(name,))
        thread.start()
        waiting.append(thread)
        queued = len(waiting)
        _wait_for(lambda queued=queued: len(lock._queue) == queued)
    lock.release()
    lock.acquire()  # asks again at once, as a long job's next pass does
    order.append("holder again")
    lock.release()
    for thread in waiting:
        thread.join(timeout=10)
    assert order == ["first", "second", "third", "holder again"]


def test_only_the_holder_can_release():
    lock = FairLock()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    lock.acquire()
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, lock.release)))
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1
    lock.release()


def _queued(lock: FairLock, thread: threading.Thread) -> bool:
    """Whether `thread` waits in `lock`'s line (read under the lock's state, so it is blocked in its wait)."""
    with lock._state:
        return any(ident == thread.ident for ident, _ in lock._queue)


def _background_pass(lock: FairLock, done: threading.Event):
    def work() -> None:
        with lock.background():
            lock.acquire()
            done.set()
            lock.release()

    return threading.Thread(target=work)


def test_background_work_waits_while_a_request_is_open_and_goes_once_none_is():
    lock, opened, close, closed = FairLock(), threading.Event(), threading.Event(), threading.Event()
    done = threading.Event()

    def visitor() -> None:  # a script run: its request is open from its first line to its last
        with lock.foreground(), lock.foreground():  # nested blocks count once
            opened.set()
            assert close.wait(10)
        closed.set()

    click = threading.Thread(target=visitor)
    click.start()
    assert opened.wait(10)
    build = _background_pass(lock, done)
    build.start()
    _wait_for(lambda: _queued(lock, build))
    assert lock._owner is None and not done.is_set()  # the lock is free, yet the build waits
    close.set()
    assert closed.wait(10) and done.wait(10)  # no request open: it goes
    click.join(timeout=10)
    build.join(timeout=10)


def test_a_waiting_thread_goes_before_background_work_that_asked_first():
    lock, order = FairLock(), []

    def take(name: str, background: bool) -> None:
        with lock.background() if background else contextlib.nullcontext():
            lock.acquire()
            order.append(name)
            lock.release()

    lock.acquire()
    threads = [threading.Thread(target=take, args=args) for args in (("build", True), ("click", False))]
    for thread in threads:
        thread.start()
        _wait_for(lambda thread=thread: _queued(lock, thread))
    lock.release()
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["click", "build"]


def test_background_work_finishes_the_block_it_holds_and_waits_before_its_next():
    lock, inside, opened, close = FairLock(), threading.Event(), threading.Event(), threading.Event()
    nested, second = threading.Event(), threading.Event()

    def build() -> None:
        with lock.background():
            lock.acquire()  # a ranking
            inside.set()
            assert opened.wait(10)
            lock.acquire()  # a pass inside the ranking: re-entrant, not held back by the open request
            nested.set()
            lock.release()
            lock.release()
            lock.acquire()  # the next ranking waits for the request
            second.set()
            lock.release()

    worker = threading.Thread(target=build)
    worker.start()
    assert inside.wait(10)
    click = _visitor(lock, opened, close)
    click.start()
    assert nested.wait(10)
    _wait_for(lambda: _queued(lock, worker))
    assert not second.is_set()
    close.set()
    assert second.wait(10)
    for thread in (worker, click):
        thread.join(timeout=10)


def test_a_request_waiting_for_background_work_lets_it_go():
    lock, waiting, done, back = FairLock(), threading.Event(), threading.Event(), threading.Event()
    open_requests = []

    def polling_page() -> None:  # a page whose run waits for its graph build
        with lock.foreground():
            with lock.waiting_for_background():
                open_requests.append(lock._open)
                waiting.set()
                assert done.wait(10)
            open_requests.append(lock._open)  # counted again once it stops waiting
            back.set()
        open_requests.append(lock._open)

    page = threading.Thread(target=polling_page)
    page.start()
    assert waiting.wait(10)
    build = _background_pass(lock, done)
    build.start()
    assert done.wait(10) and back.wait(10)
    for thread in (page, build):
        thread.join(timeout=10)
    assert open_requests == [0, 1, 0]


def test_preemptible_work_gives_up_at_its_next_pass_once_a_request_opens():
    lock, inside, opened, close = FairLock(), threading.Event(), threading.Event(), threading.Event()
    outcome = []

    def prefetch() -> None:
        with lock.preemptible():
            try:
                lock.acquire()  # a ranking
                try:
                    inside.set()
                    assert opened.wait(10)
                    lock.acquire()  # its next pass
                    outcome.append("finished")
                finally:
                    lock.release()
            except Preempted:
                outcome.append("preempted")
            try:
                lock.acquire()  # the same job asked for again while the request is still open
            except Preempted:
                outcome.append("preempted again")

    worker = threading.Thread(target=prefetch)
    worker.start()
    assert inside.wait(10)
    click = _visitor(lock, opened, close)
    click.start()
    worker.join(timeout=10)
    assert outcome == ["preempted", "preempted again"] and lock._owner is None  # the lock was given back
    close.set()
    click.join(timeout=10)


def test_preemptible_work_waiting_in_line_gives_up_when_a_request_opens():
    lock, opened, close, outcome = FairLock(), threading.Event(), threading.Event(), []

    def prefetch() -> None:
        with lock.preemptible():
            try:
                lock.acquire()
                outcome.append("took it")
                lock.release()
            except Preempted:
                outcome.append("preempted")

    lock.acquire()  # another thread's pass
    worker = threading.Thread(target=prefetch)
    worker.start()
    _wait_for(lambda: _queued(lock, worker))
    click = _visitor(lock, opened, close)
    click.start()
    worker.join(timeout=10)
    assert outcome == ["preempted"] and not lock._queue  # it left the line
    close.set()
    click.join(timeout=10)
    lock.release()
    with lock.preemptible():
        lock.acquire()  # no request open: it goes
        lock.release()
