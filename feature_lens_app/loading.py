"""What a page waits for before it can draw: the model, its SAEs and the prompt's tokens, with a spinner
that says what is loading, and progress bars for long computations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from feature_lens_app import resources, sidebar, state
from feature_lens_app.boundary import shown_errors
from feature_lens_app.markup import plain
from feature_lens_core import catalog


def prompt_tokens(view: state.ViewState) -> list[str] | None:
    """Load the model and read the prompt, which every part of a page needs.

    On failure (hub offline, empty or too long prompt...) shows the one message, offers the built-in
    model when another one failed, and returns None: the page then draws nothing that needs them.
    """
    tokens = None
    with st.spinner(loading_text(view.model), show_time=True), shown_errors("reading the prompt"):
        tokens = resources.tokens(view.model, view.prompt)
    if tokens is None:
        if view.model != catalog.BUILTIN_MODEL:
            st.button(
                "Use the built-in model instead",
                on_click=sidebar.use_builtin_model,
                icon=":material/undo:",
                help="Keeps your prompt; the target moves to a feature of the built-in model that fires on it.",
            )
        return None
    hub = [name for name in view.saes if name in catalog.hub_saes()] if view.model != catalog.BUILTIN_MODEL else []
    for name in hub:
        # One named spinner per download; a failure is left for the computations that need the SAE to show.
        with st.spinner(loading_text(view.model, name), show_time=True), _quietly():
            resources.sae(view.model, name)
    return tokens


@contextmanager
def _quietly() -> Iterator[None]:
    try:
        yield
    except Exception:  # shown by the computation that needs it, with the page's context
        return


def loading_text(model: str, sae: str | None = None) -> str:
    """What the spinner says while a model or SAE loads (Streamlit shows it only if that takes over half a second).

    A hub model or SAE is downloaded on its first use on this server, which can take minutes, so the text
    says so and names it; Hugging Face's byte-level progress bars go to the server's terminal.
    """
    if sae is None and model == catalog.BUILTIN_MODEL:
        return "Loading the built-in model…"
    what = f"SAE {sae}" if sae is not None else f"model {model}"
    return f"Loading {plain(what)}: the first use on this server downloads it from the Hugging Face hub…"


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for a long computation; yields the `progress(done, total)` callback the core takes.

    Made inside a cached function (see `circuits`), the bar is part of what the cache replays; it is
    emptied at the end either way, so a cache hit shows nothing.
    """
    bar = st.progress(0.0, text=f"{what}…")

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{what}: {done} of {total}")

    try:
        yield report
    finally:
        bar.empty()
