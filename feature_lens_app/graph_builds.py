"""A target feature's graph, built for a visitor: its cost said first (and confirmed when long), then built by
the server's work queue, with the visitor's place in line and the build's progress on the page.

The cost is the core's cost model, `connectome.graph_rankings` (the most rankings the graph runs), times the
seconds per ranking the last graph of the same model, SAEs and method took, when one was built. A graph of
more than `CONFIRM_RANKINGS` rankings is not started until the visitor presses "Build it".

The build runs in the queue's worker (`work_queue`), not in the visitor's script, so a click of theirs
meanwhile reruns the page without losing the build, and the server builds at most `Limits.graph_jobs`
graphs, one per visitor. A build is wanted while a page shows it: the page asks the queue where it is each
`POLL_S`, and a build nobody has asked about for `ABANDON_S` (a visitor who closed the tab, left the page or
changed the graph) is cancelled, unless another visitor's page asking for the same graph still shows it.
While a page only waits for its build it steps aside from the compute lock's foreground requests
(`exclusive.waiting_for_background`), so the build it waits for is not held back by it. In hosted mode
activation patching is capped at `Limits.candidates` per ranking, as on the Explore page. The core takes its
compute lock per ranking, and the worker's rankings are background work, so another visitor's click waits at
most for the ranking in flight, never for the next one.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

import feature_lens_core as flc
from feature_lens_app import hosting, resources, state
from feature_lens_app.work_queue import Busy, Full, Job, Progress, WorkQueue
from feature_lens_core.connectome import Graph, graph_rankings
from feature_lens_core.exclusive import waiting_for_background
from feature_lens_core.options import GraphDirection

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

CONFIRM_RANKINGS = 20  # above this, the page asks before building (the default graph, 2 hops of 24 nodes, runs 13)
POLL_S = 0.25  # how often a waiting page redraws its progress (and can be interrupted by the visitor's click)
# A build nobody asked about for this long is cancelled: far above POLL_S, so that a rerun of the visitor's page
# (seconds on a loaded server) does not cancel the build it is about to show.
ABANDON_S = hosting.graph_abandon_s()
_VISITOR = "_fl_visitor"  # session key: this session's id in the queue
_CONFIRMED = "_fl_graph_confirmed"  # session key: the graph the visitor last confirmed

queue = WorkQueue(keep=hosting.limits().cache_entries // 8, abandon_s=ABANDON_S)
_seconds_per_ranking: dict[tuple[str, tuple[str, ...], str], float] = {}  # by (model, SAEs, method)


def _visitor() -> str:
    return st.session_state.setdefault(_VISITOR, uuid.uuid4().hex)


def estimate(view: state.ViewState, direction: GraphDirection, hops: int, budget: int) -> str:
    """The graph's cost in words: its most rankings, and the seconds they take if a ranking has been timed."""
    rankings = graph_rankings(hops, budget, direction)
    seconds = _seconds_per_ranking.get((view.model, view.saes, view.method))
    if seconds is None:
        return f"up to {rankings} rankings"
    return f"up to {rankings} rankings, about {rankings * seconds:.0f} s at {seconds:.2f} s per ranking here"


def _build(model: HookedTransformer, saes: dict[str, SAE], key: tuple, progress: Progress) -> Graph:
    """Run in the worker: the graph of the view `key` names, with the models the script loaded."""
    _, _, prompt, target, method, baseline, corrupt, direction, hops, budget, candidates = key
    return flc.build_graph(
        model,
        saes,
        prompt,
        flc.parse_target(target),
        method=method,
        direction=direction,
        hops=hops,
        node_budget=budget,
        baseline=baseline,
        corrupt_prompt=corrupt if baseline == "corrupt" else None,
        candidates=candidates,
        progress=progress,
    )


@st.fragment(run_every=1.0)
def _rerun_when(ready: Callable[[], bool]) -> None:
    """Rerun the page once `ready()` (checked each second), so a waiting visitor need not click."""
    if ready():
        st.rerun()


def _where(job: Job) -> tuple[float, str]:
    place = queue.place(job)
    if place:
        return 0.0, f"Waiting for other visitors' graphs: yours is number {place} in line…"
    if not job.total:
        return 0.0, "Building the graph…"
    return job.done / job.total, f"Building the graph: {job.done} of at most {job.total} rankings…"


def build(view: state.ViewState, direction: GraphDirection, hops: int, budget: int) -> Graph | None:
    """The target's graph, or None while it waits for the visitor's confirmation or for the queue (the page says
    which); raises what the build raised (a `FeatureLensError` for bad input)."""
    limits = hosting.limits()
    candidates = limits.candidates if view.method == "activation" else None
    target = str(state.target(view))
    settings = (view.prompt, target, view.method, view.baseline, view.corrupt, direction, hops, budget, candidates)
    key = (view.model, view.saes, *settings)
    if graph_rankings(hops, budget, direction) > CONFIRM_RANKINGS and st.session_state.get(_CONFIRMED) != key:
        st.info(
            f"This graph is long: {estimate(view, direction, hops, budget)} (graphs of more than "
            f"{CONFIRM_RANKINGS} rankings ask first). Build it, or lower the hops or the node budget.",
            icon=":material/hourglass:",
        )
        # The callback runs before the rerun the click starts, which then builds without asking.
        st.button(
            "Build it",
            key="graph_confirm",
            type="primary",
            on_click=st.session_state.__setitem__,
            args=(_CONFIRMED, key),
        )
        return None
    model, saes = resources.model(view.model), resources.saes(view.model, view.saes)
    try:
        job = queue.submit(
            _visitor(), key, lambda progress: _build(model, saes, key, progress), capacity=limits.graph_jobs
        )
    except Busy as busy:
        earlier = busy.job
        st.info(
            "Your earlier graph is still being built (one at a time per visitor): this one starts when it ends, "
            f"or within {ABANDON_S:.0f} s if nobody else is waiting for it, and this page reruns by itself then. "
            "Your settings are kept.",
            icon=":material/hourglass:",
        )
        _rerun_when(lambda: earlier.finished)
        return None
    except Full as full:
        st.info(
            f"The server is building {full.capacity} graphs for its visitors, the most it takes at once. Yours "
            "starts when one ends: wait, this page reruns by itself then. Your settings are kept.",
            icon=":material/hourglass:",
        )
        _rerun_when(functools.partial(queue.has_room, full.capacity))
        return None
    if not job.finished:
        with waiting_for_background():
            bar = st.progress(*_where(job))
            while not job.wait(POLL_S):
                bar.progress(*_where(job))
        bar.empty()
    if job.state == "cancelled":  # this page went unseen for ABANDON_S (a very slow rerun): ask again
        st.rerun()
    if job.error is not None:
        raise job.error
    seconds = job.seconds_per_step()
    if seconds is not None:
        _seconds_per_ranking[(view.model, view.saes, view.method)] = seconds
    return job.result
