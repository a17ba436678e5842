"""The shared frame around every page: navigation, page config, URL-backed state, the sidebar.

`streamlit_app.py` calls `run()`: it declares the pages with `st.navigation` and runs the chosen one
inside `framed()`. Pages call `view()`: inside the frame it returns the view already drawn.

The one fallback: with a `pages/` folder beside the entrypoint (the product owner wants it there),
Streamlit treats the app as a legacy multipage app until the first `st.navigation` call in the process,
so the first request after a server start on a page URL (a shared `/feature?...` link waking a hosted
app) runs `pages/feature.py` alone, without the entrypoint. `view()` then declares the navigation (which
turns the legacy mode off for the process) and reruns: the rerun goes through `streamlit_app.py`, with the
same page and query string, so that first visitor gets the full navigation and the linked view.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from feature_lens_app import boundary, resources, sidebar, state, warmup
from feature_lens_app.markup import plain

_run = threading.local()  # each session's script runs in its own thread


def _favicon() -> Image.Image:
    """The tab's icon, drawn here: a Material icon as `page_icon` would be fetched from Google's font servers."""
    y, x = np.mgrid[:32, :32]
    radius = np.hypot(x - 15.5, y - 15.5)
    image = np.zeros((32, 32, 4), dtype=np.uint8)
    image[radius < 15] = (49, 51, 63, 255)  # the app's text colour, as a ring
    image[radius < 11] = (241, 105, 19, 255)  # the orange of "pushes the target up"
    return Image.fromarray(image, mode="RGBA")


FAVICON = _favicon()

# (file, title, whether the title names the target). No page icons: Streamlit makes the current page's icon
# the tab's icon for a moment, and fetches a Material icon's image from Google's font servers to do so.
_PAGES = (
    ("pages/explore.py", "Explore", True),
    ("pages/feature.py", "Feature", True),
    ("pages/graph.py", "Circuit graph", True),
    ("pages/prompts.py", "Across prompts", True),
    ("pages/directions.py", "Directions", False),
    ("pages/compare.py", "Compare methods", True),
    ("pages/how_it_works.py", "How it works", False),
)


def navigation() -> st.Page:
    """Declare the app's pages and return the one the URL asks for; `_links` draws the bar that switches them.

    Streamlit's own bar (`position="top"`) clears the query string on a switch, so the switch is two history
    entries (`/how_it_works`, then `/how_it_works?<view>` once the page rewrote its URL) and Back lands on the
    bare one, whose run rewrites the URL again: Back never leaves the page. `st.page_link` with the view's query
    parameters switches in one entry, and each link is a real link that opens the same view in a new tab.
    """
    pages = [st.Page(path, title=title, default=index == 0) for index, (path, title, _) in enumerate(_PAGES)]
    return st.navigation(pages, position="hidden")


def _links(view: state.ViewState) -> None:
    """The bar of pages at the top, each link carrying the current view."""
    params = state.to_params(view)
    for path, title, _ in _PAGES:
        st.page_link(path, label=title, query_params=params)


def run() -> None:
    """The whole app: the navigation, then the chosen page inside the frame."""
    page = navigation()
    with framed(page.title):
        page.run()


def _tab_title(page: str, view: state.ViewState) -> str:
    """The browser tab's title: the page, and for pages about the target, the target."""
    about_target = next((named for _, title, named in _PAGES if title == page), False)
    target = f" · {view.sae} #{view.feature} @{view.pos}" if about_target and view.sae else ""
    return f"{page}{target} · feature-lens"


def _open(page: str) -> state.ViewState:
    """Page config, the view from the URL (first run, Back/Forward) or the widgets, and notices."""
    boundary.start_run()
    warmup.resend_once_loaded()
    state.start_session()
    view = state.current()
    st.set_page_config(page_title=_tab_title(page, view), page_icon=FAVICON, layout="wide")
    problems = state.take_problems()
    if problems:
        st.error(
            "Parts of this link could not be used, so defaults stand in for them (the rest of the link is kept):\n\n"
            + "\n".join(f"- {plain(p)}" for p in problems),
            icon=":material/link_off:",
        )
    for notice in state.take_notices():
        st.warning(plain(notice), icon=":material/content_cut:")
    return view


def _close(slot: DeltaGenerator, bar: DeltaGenerator) -> None:
    """The sidebar's controls, then the URL and the page links: all reflect the widgets' values at the end of
    the run."""
    with slot:
        sidebar.sidebar()
        view = state.current()
        state.remember(view)
        sidebar.trail(view)
        state.write_url(view)
        sidebar.share_link(view)
    with bar:
        _links(view)
    warmup.start()  # after the page is drawn (see `warmup.start`)


@contextmanager
def framed(page: str) -> Iterator[state.ViewState]:
    """Run a page inside the frame.

    The sidebar's controls are drawn after the page, into a slot reserved at the top of the sidebar:
    the page reads the same values from `st.session_state` (widgets' values are there before the
    widgets are drawn), and its charts appear without waiting for the sidebar's option lists (SAE-Lens's
    directory of hub models takes about a second to read on a cold start).
    """
    bar = st.container(horizontal=True, gap="small")
    slot = st.sidebar.container()
    _run.view = _open(page)
    try:
        with resources.visible_work():
            yield _run.view
    except (StopException, RerunException):
        raise  # Streamlit's own control flow: this run is over, the next one draws everything
    except Exception:
        _close(slot, bar)  # a page that failed still leaves the user their controls
        raise
    else:
        _close(slot, bar)
    finally:
        _run.view = None


def view() -> state.ViewState:
    """The current view; a page run without the entrypoint (see the module docstring) reruns through it."""
    current: state.ViewState | None = getattr(_run, "view", None)
    if current is None:
        state.resend_widgets(runs=2)  # the rerun, then the one the browser asks for once it has switched pages
        navigation()
        st.rerun()  # raises: the rerun goes through the entrypoint
    return current
