"""The compute lock is re-entrant and first come, first served: a thread that lets go and asks again waits
behind every thread already waiting (so a long job of many passes cannot keep another visitor out)."""

from __future__ import annotations

import threading
import time

import pytest

from feature_lens_core.exclusive import FairLock


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


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
