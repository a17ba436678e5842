"""A bounded, server-wide queue of long jobs (graph builds), run by one worker thread, one job per visitor.

Every visitor's session is served by its own script thread, but a graph build in that thread dies with the
next click of the same visitor (Streamlit stops the script to rerun it) and nothing bounds how many builds
the server runs at once. Here a build is a `Job` run by the worker: a visitor's click reruns their page,
which finds the job again by its key and shows where it is. At most `capacity` jobs are queued or running
server-wide, and at most one per visitor (`owner`); asking for more raises `Busy` or `Full`, which say
what to wait for. One worker suffices: the core runs one hooked pass at a time anyway (`exclusive`), and
one worker finishes the first graph first instead of interleaving two.

Recently finished jobs are kept by key (`keep` of them), so a rerun, or another visitor asking for the
same graph, gets the result at once instead of queueing behind someone else's build; a failed job is
not kept, so asking again tries again.

A job nobody asks about any more is cancelled: every `submit` of its key and every `place` (a page showing
where the job is) counts as someone still wanting it, and a job not asked about for `abandon_s` seconds is
dropped from the line if queued, or stopped at its next progress report if running (the report raises
`Cancelled`, which the worker catches), freeing its place and its owner's turn. A job that several visitors
asked for lives while any of them still asks. Stale queued jobs are dropped whenever the queue is asked
anything, so a full queue never turns a visitor away for jobs nobody waits for.

The worker's computations are background work for the core's compute lock (`exclusive.background`): they
wait while a visitor's request is open, so a click never competes with a graph build. This module knows
nothing of Streamlit.
"""

from __future__ import annotations

import atexit
import functools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from feature_lens_core import exclusive

Progress = Callable[[int, int], None]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]


@dataclass(eq=False)
class Job:
    """One unit of work: `work(progress)` run by the worker; its state, progress, result or error."""

    key: Hashable
    owner: str
    work: Callable[[Progress], Any] = field(repr=False)
    state: JobState = "queued"
    done: int = 0  # steps reported by the work so far, of `total`
    total: int = 0
    result: Any = None
    error: BaseException | None = None  # why it failed, or `Cancelled`
    seen: float = 0.0  # the queue's clock when someone last asked for it (submit or place)
    started: float | None = None  # time.perf_counter() when the worker took it, and when it ended
    ended: float | None = None
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the job to end; whether it has."""
        return self._finished.wait(timeout)

    def seconds_per_step(self) -> float | None:
        """Mean seconds per reported step so far, or of the whole job once it has ended (None before a step)."""
        if self.started is None or self.done == 0:
            return None
        return ((self.ended or time.perf_counter()) - self.started) / self.done


class Cancelled(Exception):
    """Nobody asked about the job for `abandon_s` seconds: it was dropped, or stopped at a progress report."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(f"nobody asked about this job for {idle_s:.0f} s")


class Busy(Exception):
    """The visitor already has an unfinished job (`job`), of another key."""

    def __init__(self, job: Job) -> None:
        super().__init__("your earlier job is still queued or running")
        self.job = job


class Full(Exception):
    """The server already holds `capacity` unfinished jobs."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"the server already runs or queues {capacity} jobs")
        self.capacity = capacity


class WorkQueue:
    """Jobs submitted by owners, run in order by one worker thread (see the module docstring)."""

    def __init__(self, *, keep: int = 8, abandon_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.abandon_s = abandon_s
        self.clock = clock  # seconds, for `abandon_s`
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._by_owner: dict[str, Job] = {}  # each owner's unfinished job
        self._finished: OrderedDict[Hashable, Job] = OrderedDict()  # recent successes, oldest first
        self._keep = keep
        self._thread: threading.Thread | None = None
        self._stopping = False
        # A daemon thread still inside torch when the interpreter exits aborts the process: let the job end.
        atexit.register(self.stop)

    def submit(self, owner: str, key: Hashable, work: Callable[[Progress], Any], *, capacity: int) -> Job:
        """The job for `key`: a recent result, the unfinished job of that key (whoever asked first), or a new
        one queued for `owner`.

        Raises:
            Busy: `owner` has an unfinished job of another key (it goes on; nothing is dropped).
            Full: `capacity` jobs are already queued or running.
        """
        with self._lock:
            if key in self._finished:
                self._finished.move_to_end(key)
                return self._finished[key]
            self._drop_abandoned()
            unfinished = [*([self._running] if self._running else []), *self._waiting]
            same = next((job for job in unfinished if job.key == key), None)
            if same is not None:
                same.seen = self.clock()
                return same
            mine = self._by_owner.get(owner)
            if mine is not None:
                raise Busy(mine)
            if len(unfinished) >= capacity:
                raise Full(capacity)
            job = Job(key, owner, work, seen=self.clock())
            self._waiting.append(job)
            self._by_owner[owner] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="feature-lens-work-queue", daemon=True)
                self._thread.start()
            self._lock.notify_all()
            return job

    def place(self, job: Job) -> int:
        """0 while `job` runs (or has ended), else its place in line: 1 is next. Asking counts as still wanting
        the job (see the module docstring)."""
        with self._lock:
            job.seen = self.clock()
            self._drop_abandoned()
            return next((i + 1 for i, queued in enumerate(self._waiting) if queued is job), 0)

    def has_room(self, capacity: int) -> bool:
        """Whether fewer than `capacity` jobs are queued or running."""
        with self._lock:
            self._drop_abandoned()
            return len(self._waiting) + (self._running is not None) < capacity

    def _idle_s(self, job: Job) -> float | None:
        """How long nobody has asked about `job`, if that is longer than `abandon_s`; else None."""
        idle = self.clock() - job.seen
        return idle if idle > self.abandon_s else None

    def _drop_abandoned(self) -> None:
        """Cancel the queued jobs nobody asked about for `abandon_s` (the caller holds `_lock`)."""
        for job in list(self._waiting):
            idle = self._idle_s(job)
            if idle is not None:
                self._waiting.remove(job)
                job.error, job.state = Cancelled(idle), "cancelled"
                self._end(job)

    def _end(self, job: Job) -> None:
        """Free the owner's turn, keep a success, and tell whoever waits (the caller holds `_lock`)."""
        if self._by_owner.get(job.owner) is job:
            del self._by_owner[job.owner]
        if job.state == "done":
            self._finished[job.key] = job
            while len(self._finished) > self._keep:
                self._finished.popitem(last=False)
        job._finished.set()

    def _report(self, job: Job, done: int, total: int) -> None:
        """The running job's progress callback: records it, or stops the job if nobody wants it any more."""
        with self._lock:
            idle = self._idle_s(job)
        if idle is not None:
            raise Cancelled(idle)
        job.done, job.total = done, total

    def _work(self) -> None:
        with exclusive.background():
            while True:
                with self._lock:
                    self._drop_abandoned()  # a job left in line by a visitor who has gone is not started
                    while not self._waiting:
                        self._lock.wait_for(lambda: self._waiting or self._stopping)
                        if self._stopping:
                            return
                        self._drop_abandoned()
                    job = self._running = self._waiting.popleft()
                job.state, job.started = "running", time.perf_counter()
                try:
                    job.result = job.work(functools.partial(self._report, job))
                    job.state = "done"
                except Cancelled as cancelled:  # nobody waits for it: its turn goes to the next job
                    job.error, job.state = cancelled, "cancelled"
                except Exception as exc:  # shown to the visitor who asked; the worker goes on
                    job.error, job.state = exc, "failed"
                job.ended = time.perf_counter()
                with self._lock:
                    self._running = None
                    self._end(job)

    def stop(self) -> None:
        """Drop the queued jobs and wait for the running one to end."""
        with self._lock:
            self._stopping = True
            self._waiting.clear()
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=60)
