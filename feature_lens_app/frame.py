"""The shared frame around every page: page config, URL-backed state, the sidebar.

`streamlit_app.py` draws it once per run and then runs the chosen page inside `framed()`.
Pages call `view()`: inside the frame it returns the view already drawn; a page run on its
own draws the frame itself. That happens for real: with a `pages/` folder next to the
entrypoint, Streamlit serves the first deep link after a server start (e.g. a shared
`/feature?...` link that wakes a hosted app) straight from `pages/feature.py`, without the
entrypoint, and so does `AppTest.switch_page`.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from feature_lens_app import resources, state, widgets

_run = threading.local()  # each session's script runs in its own thread

# Streamlit runs a full garbage collection after every script run (`runner.postScriptGC`). With torch,
# transformers and TransformerLens imported, that walks over half a million long-lived objects: about 0.3 s
# of every click on a 2-core machine. Freezing what exists once the libraries are loaded leaves those
# collections only the objects made since (import-time objects are never garbage anyway).
gc.freeze()


def _open() -> state.ViewState:
    """Page config, the view from the URL (first run) or the widgets, and notices about the link."""
    st.set_page_config(page_title="feature-lens", page_icon=":material/biotech:", layout="wide")
    state.start_session()
    view = state.current()
    problems = state.take_problems()
    if problems:
        st.error(
            "Parts of this link could not be used, so defaults stand in for them (the rest of the link is kept):\n\n"
            + "\n".join(f"- {widgets.plain(p)}" for p in problems),
            icon=":material/link_off:",
        )
    return view


def _close() -> None:
    """The sidebar's controls, then the URL: both reflect the widgets' values at the end of the run."""
    widgets.sidebar()
    view = state.current()
    state.remember(view)
    state.write_url(view)
    widgets.share_link(view)


@contextmanager
def framed() -> Iterator[state.ViewState]:
    """Run a page inside the frame.

    The sidebar's controls are drawn after the page, into a slot reserved at the top of the sidebar:
    the page reads the same values from `st.session_state` (widgets' values are there before the
    widgets are drawn), and its charts appear without waiting for the sidebar's option lists (SAE-Lens's
    directory of hub models takes about a second to read on a cold start).
    """
    slot = st.sidebar.container()
    _run.view = _open()
    try:
        with resources.visible_work():
            yield _run.view
    except (StopException, RerunException):
        raise  # Streamlit's own control flow: this run is over, the next one draws everything
    except Exception:
        with slot:
            _close()  # a page that failed still leaves the user their controls
        raise
    else:
        with slot:
            _close()
    finally:
        _run.view = None


def view() -> state.ViewState:
    """The current view; a page run on its own (without `streamlit_app.py`) draws the whole frame first."""
    if getattr(_run, "view", None) is not None:
        return _run.view
    opened = _open()
    with st.sidebar:
        _close()
    return opened
