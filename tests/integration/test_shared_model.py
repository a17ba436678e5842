"""The app's shared built-in model under concurrent use: threads doing what visitors' sessions do (rankings by
every method, activations, dashboards, and requests that fail mid-pass) get what they get alone, and no hook
is left on the model afterwards, nor by a ranking given up mid-way for a visitor's request (the prefetcher's).
The tiny-model version of this is tests/unit/test_ranking.py."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_core import exclusive, feature_data
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.options import DIRECTIONS, METHODS
from tests.checks import assert_no_hooks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _jobs() -> list[Callable[[], object]]:
    model = flc.load_model("toy")  # the one instance the loader shares, as the app's cache does
    jobs: list[Callable[[], object]] = []
    for ex in EXAMPLES[::2]:  # two prompts of different lengths; each job runs twice, so keep it small
        saes = {name: flc.load_sae("toy", name) for name in dict.fromkeys([*DEFAULT_SAES, ex.sae])}
        target = flc.FeatureRef(ex.sae, ex.feature, ex.position)
        for method in sorted(METHODS):
            candidates = 16 if method == "activation" else None
            for direction in DIRECTIONS:
                jobs.append(
                    partial(
                        flc.rank,
                        model,
                        saes,
                        ex.prompt,
                        target,
                        direction=direction,
                        method=method,
                        candidates=candidates,
                    )
                )
        jobs.append(partial(flc.activations, model, saes[ex.sae], ex.prompt))
        jobs.append(partial(feature_data.feature_card, model, saes[ex.sae], ex.feature))
        silent = flc.FeatureRef(ex.sae, 0 if ex.feature else 1, 0)  # BOS: nothing fires there
        jobs.append(partial(flc.rank, model, saes, ex.prompt, silent, direction="upstream", method="attribution"))
    return jobs


def _outcome(job: Callable[[], object]) -> object:
    try:
        return job()
    except FeatureLensError as exc:  # raised inside a hooked pass: its hooks must still come off
        return f"error: {exc}"


def _same(a: object, b: object) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        assert a == b


def test_concurrent_visitors_share_the_model_safely() -> None:
    jobs = _jobs()
    alone = [_outcome(job) for job in jobs]
    assert any(isinstance(a, str) and "not active" in a for a in alone)
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(_outcome, jobs[::-1]))[::-1]  # reversed, so each job meets other neighbours
    for a, b in zip(alone, together, strict=True):
        _same(a, b)
    model = flc.load_model("toy")
    assert_no_hooks(model)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_ranking_preempted_mid_way_leaves_the_model_as_it_was(method: str) -> None:
    """The prefetcher's ranking gives up at its next pass once a request opens (`exclusive.Preempted`): no hook
    is left on the model, no weight stays frozen, and the ranking done again is the ranking done alone."""
    model = flc.load_model("toy")
    example = EXAMPLES[0]
    saes = {name: flc.load_sae("toy", name) for name in DEFAULT_SAES}
    rank = partial(
        flc.rank, model, saes, example.prompt, flc.FeatureRef(example.sae, example.feature, example.position)
    )
    alone = rank(direction="upstream", method=method)
    outcome: list[object] = []

    def prefetch() -> None:
        with exclusive.preemptible():
            try:
                outcome.append(rank(direction="upstream", method=method))
            except exclusive.Preempted:
                outcome.append("preempted")

    worker = threading.Thread(target=prefetch)
    worker.start()
    while worker.is_alive() and exclusive._lock._owner != worker.ident:  # until it is inside the ranking
        time.sleep(0.0005)
    with exclusive.foreground():
        worker.join(timeout=60)
    assert len(outcome) == 1
    assert method != "activation" or outcome == ["preempted"]  # 21 passes: it cannot end before the request
    if isinstance(outcome[0], pd.DataFrame):  # a cheap method may have ended before the request opened
        _same(alone, outcome[0])
    assert_no_hooks(model)
    assert all(p.requires_grad for p in model.parameters())
    _same(alone, rank(direction="upstream", method=method))


def _nice_values() -> dict[int, int]:
    """Every thread of this process and its nice value (field 19 of /proc's stat, after the command's name)."""
    values = {}
    for tid in Path("/proc/self/task").iterdir():
        stat = (tid / "stat").read_text()
        values[int(tid.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return values


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
def test_the_prefetcher_and_the_compute_threads_it_starts_run_at_the_lowest_priority() -> None:
    """The prefetcher's thread takes only CPU that nothing else wants (`resources.lowest_cpu_priority`): it and
    torch's compute threads it starts run at nice 19, while the thread that submitted the work keeps its own."""
    import torch

    from feature_lens_app import resources

    before = _nice_values()
    seen: list[tuple[int, int]] = []
    during: dict[int, int] = {}
    done = threading.Event()

    def job() -> None:
        torch.ones(256, 256) @ torch.ones(256, 256)  # a parallel operation: OpenMP starts this thread's team
        seen.append((threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        during.update(_nice_values())
        done.set()

    prefetcher = resources._Prefetcher()
    try:
        prefetcher.submit([job])
        assert done.wait(timeout=60)
    finally:
        prefetcher.stop()
    [(worker, nice)] = seen
    assert nice == resources.LOWEST_PRIORITY
    started = {tid: value for tid, value in during.items() if tid not in before}
    assert worker in started and set(started.values()) == {resources.LOWEST_PRIORITY}
    assert len(started) > 1 or torch.get_num_threads() == 1  # its compute threads are among them
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before[threading.get_native_id()]
