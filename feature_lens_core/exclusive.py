"""One hooked forward pass (or forward-mode AD pass) at a time per process, whichever thread asks, in turn;
a request somebody waits for before background work.

TransformerLens hooks live on the model object, and leaving `model.hooks(...)` removes every hook
added at that level, including another thread's; PyTorch's forward-mode AD levels are global, so two
threads cannot each open one. The app shares one model between all visitors' threads, so these
passes run one after another.

The lock is re-entrant (a pass inside a held block does not wait for itself) and **first come, first
served**: a thread that lets go and asks again queues behind every thread already waiting. A plain lock
would let a long job (an activation-patching graph: thousands of passes, each taking the lock) take it back
at once, so another visitor's click would wait for the whole job; in turn, it waits for one pass.

**Background work goes last.** A thread inside `background()` (the app's queue of graph builds) takes the lock
only when no other thread waits for it and no `foreground()` request is open (a visitor's script run, from
its first line to its last, also between its passes), so a click neither waits behind a build's next
ranking nor shares the CPU with it; a block the background thread already holds goes on to its end (a
ranking in flight finishes). It is never starved for good: it goes whenever no request is open or waiting.
A request that itself waits for background work (a page polling a build) steps aside with
`waiting_for_background()`. A background thread must not hold anything a foreground request may wait for
(another lock, a cache entry being computed) while it asks for this one.

**Preemptible work gives way at once.** A thread inside `preemptible()` (the app's prefetching of rankings nobody
asked for yet) goes last as background work does, and whenever it asks for the lock, for a new block or for a
pass inside the block it holds, while a foreground request is open, it gets `Preempted` instead: its work is
abandoned within one pass, where background work would finish the ranking in flight (a second or more of
activation patching, which a click would wait for, or share the CPU with). As it never waits for the lock while
a request is open, it may hold what a request waits for (the cache entry it computes): the request gets it once
the preempted work has let go. The thread redoes the work later if it is still wanted.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


class Preempted(BaseException):
    """Raised in a `preemptible` thread that asks for the lock while a foreground request is open. A
    BaseException, as Streamlit's own stop signals are: no `except Exception` on the way takes it for a failure."""


class FairLock:
    """A re-entrant lock granted in the order threads asked for it, background threads after the rest."""

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._queue: deque[tuple[int, bool]] = deque()  # waiting (thread ident, background), first in line first
        self._owner: int | None = None
        self._depth = 0
        self._open = 0  # threads inside a `foreground()` request
        # This thread's role: .background, .preemptible, .requests (open `foreground` blocks).
        self._mine = threading.local()

    def acquire(self) -> None:
        me = threading.get_ident()
        preemptible = getattr(self._mine, "preemptible", False)
        with self._state:
            if preemptible and self._open:
                raise Preempted
            if self._owner == me:
                self._depth += 1
                return
            entry = (me, preemptible or getattr(self._mine, "background", False))
            self._queue.append(entry)
            try:
                while not self._turn(entry):
                    self._state.wait()
                    if preemptible and self._open:
                        raise Preempted
            except BaseException:  # interrupted while waiting: leave the line so the next can go
                self._queue.remove(entry)
                self._state.notify_all()
                raise
            self._queue.remove(entry)
            self._owner, self._depth = me, 1

    def _turn(self, entry: tuple[int, bool]) -> bool:
        """Whether the waiting `entry` may take the free lock now (the caller holds `_state`)."""
        if self._owner is not None:
            return False
        first = next((waiting for waiting in self._queue if not waiting[1]), None)
        if first is not None:  # a thread other than background work waits: the first of those goes
            return first == entry
        return not self._open and self._queue[0] == entry

    def release(self) -> None:
        with self._state:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock that this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._state.notify_all()

    def _count(self, change: int) -> None:
        """Add `change` to this thread's open requests; the thread opens or closes one for the lock at 0."""
        before = getattr(self._mine, "requests", 0)
        self._mine.requests = before + change
        with self._state:
            if before == 0 and change > 0:
                self._open += 1
                self._state.notify_all()  # preemptible work waiting in line gives up
            elif before > 0 and before + change == 0:
                self._open -= 1
                if self._open == 0:
                    self._state.notify_all()  # background work may go on

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """Inside the block this thread's request is open: background threads take no new turn. Nests."""
        self._count(1)
        try:
            yield
        finally:
            self._count(-1)

    @contextmanager
    def waiting_for_background(self) -> Iterator[None]:
        """Inside a `foreground` block, a wait for background work: the request is not counted meanwhile."""
        held = getattr(self._mine, "requests", 0)
        self._count(-held)
        try:
            yield
        finally:
            self._count(held)

    @contextmanager
    def _role(self, role: str) -> Iterator[None]:
        """This thread has `role` ("background" or "preemptible") inside the block, and what it had after it."""
        before = getattr(self._mine, role, False)
        setattr(self._mine, role, True)
        try:
            yield
        finally:
            setattr(self._mine, role, before)

    def preemptible(self) -> AbstractContextManager[None]:
        """Inside the block this thread's work is preemptible (see the module docstring): asking for the lock
        while a foreground request is open raises `Preempted`."""
        return self._role("preemptible")

    def background(self) -> AbstractContextManager[None]:
        """This thread's turns at the lock inside the block come after other threads' and open requests'."""
        return self._role("background")


_lock = FairLock()

foreground = _lock.foreground
waiting_for_background = _lock.waiting_for_background
background = _lock.background
preemptible = _lock.preemptible


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the process's compute lock for this thread until the block ends (see the module docstring)."""
    _lock.acquire()
    try:
        yield
    finally:
        _lock.release()
