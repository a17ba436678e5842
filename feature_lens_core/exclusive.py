"""One hooked forward pass (or forward-mode AD pass) at a time per process, whichever thread asks, in turn.

TransformerLens hooks live on the model object, and leaving `model.hooks(...)` removes every hook
added at that level, including another thread's; PyTorch's forward-mode AD levels are global, so two
threads cannot each open one. The app shares one model between all visitors' threads, so these
passes run one after another.

The lock is re-entrant (a pass inside a held block does not wait for itself) and **first come, first
served**: a thread that lets go and asks again queues behind every thread already waiting. A plain lock
would let a long job (an activation-patching graph: thousands of passes, each taking the lock) take it back
at once, so another visitor's click would wait for the whole job; in turn, it waits for one pass.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class FairLock:
    """A re-entrant lock granted in the order threads asked for it."""

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._queue: deque[int] = deque()  # waiting threads' idents, first in line first
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._state:
            if self._owner == me:
                self._depth += 1
                return
            self._queue.append(me)
            try:
                while self._owner is not None or self._queue[0] != me:
                    self._state.wait()
            except BaseException:  # interrupted while waiting: leave the line so the next can go
                self._queue.remove(me)
                self._state.notify_all()
                raise
            self._queue.popleft()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._state:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock that this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._state.notify_all()


_lock = FairLock()


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the process's compute lock for this thread until the block ends (see the module docstring)."""
    _lock.acquire()
    try:
        yield
    finally:
        _lock.release()
