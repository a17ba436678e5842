"""The built-in model, loaded in the background on a fresh server while the landing page draws shipped results.

Importing torch, TransformerLens and SAE-Lens and loading the model takes about ten seconds; the Explore page
draws its worked example's shipped results (`shipped`) meanwhile, says so, and reruns with live results once the
model and the landing view's SAEs are in the resource cache.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time

import streamlit as st

from feature_lens_app import resources, state
from feature_lens_app.examples import DEFAULT_SAES
from feature_lens_core import catalog

FIRST_DRAW_S = 1.5  # what a browser takes to fetch the chart library and draw the first chart, on a quiet machine
_ready = threading.Event()
_lock = threading.Lock()
_started: list[threading.Thread] = []


def _load() -> None:
    if "torch" not in sys.modules:
        # The loading's imports hold the interpreter's lock for most of ten seconds, and this server answers the
        # browser's requests in Python: the chart library it fetches just after the first run would come slowly
        # and the first chart would wait for it (`benchmarks/bench_app.py`). Give the browser that time first.
        time.sleep(FIRST_DRAW_S)
    try:
        with contextlib.suppress(Exception):  # a failure is shown by the page that needs the model
            resources.saes(catalog.BUILTIN_MODEL, DEFAULT_SAES)
            resources.model(catalog.BUILTIN_MODEL)
            # A downstream ranking's first forward-mode pass would load torch's decompositions: a click's first
            # change of method or target waited half a second for it.
            from feature_lens_core.methods import linear  # imports torch: not before the model has loaded

            linear.load_forward_mode()
        # A full garbage collection (Python's own; Streamlit's after every run is off in .streamlit/config.toml)
        # walks over the half a million long-lived objects of torch, transformers and TransformerLens: about 0.3 s
        # on a 2-core machine. Freezing what exists once they are loaded leaves it only the objects made since.
        gc.freeze()
    finally:
        _ready.set()


def model_loading(model: str) -> bool:
    """Whether `model` is the built-in model and not loaded yet by `start` (which the end of a run calls)."""
    return model == catalog.BUILTIN_MODEL and not _ready.is_set()


def start() -> None:
    """Start loading the built-in model in the background, once per process. Called at the end of a run: the
    thread's imports hold the interpreter's lock for seconds, which would slow the drawing of the first page."""
    with _lock:
        if not _started:
            _started.append(threading.Thread(target=_load, name="feature-lens-warm-up", daemon=True))
            _started[0].start()


@st.fragment(run_every=0.5)
def rerun_when_loaded() -> None:
    """Poll (every half second, without blocking the page) and rerun the page once the model has loaded."""
    if _ready.is_set():
        st.rerun()


_SAW_LOADING = "_fl_saw_loading"  # session key: whether this session's last run found the model loading


def resend_once_loaded() -> None:
    """At the start of a run: in a session's first run after the model has loaded (the timer's rerun, or a click
    that came first), send every widget's value to the browser again (`state.resend_widgets`).

    That run draws the sidebar's number boxes with their bounds (the SAE's size, the prompt's length) for the
    first time, and the browser then sometimes dropped their values and sent 0s with the next click, which moved
    the target to feature 0 at position 0 (2 fresh sessions in 14; none in 26 with this)."""
    ss = st.session_state
    loading = not _ready.is_set()
    if ss.get(_SAW_LOADING) and not loading:
        state.resend_widgets(runs=2)
    ss[_SAW_LOADING] = loading


def wait_until_loaded(timeout: float | None = None) -> bool:
    """Start loading the built-in model if need be and wait for it (at most `timeout` seconds); whether it loaded.
    For callers that want live results only, such as tests of what a page computes."""
    start()
    return _ready.wait(timeout)
