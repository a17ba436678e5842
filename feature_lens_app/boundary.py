"""The error boundary: a failed computation becomes one message on the page, never a traceback.

Bad input (`FeatureLensError`) is shown in the core's own words; an empty result that is not a
mistake (`NothingToRank`, e.g. nothing upstream of the first layer) as information; anything else
as a short apology, with the traceback in the server's log. Each message is said once per run:
one bad input usually breaks every computation on a page alike.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

import feature_lens_core as flc
from feature_lens_app.markup import plain

log = logging.getLogger("feature_lens_app")
BUG_PREFIX = "Something went wrong"
_run = threading.local()  # each session's script runs in its own thread


def start_run() -> None:
    """Forget the messages of the previous run (the frame calls this first thing in every run)."""
    _run.said = set()


def _first_time(text: str) -> bool:
    said: set[str] = getattr(_run, "said", set())
    _run.said = said
    if text in said:
        return False
    said.add(text)
    return True


def show_failure(exc: Exception, what: str) -> None:
    """One message for a failure (unless this run said it already): the core's words, or an apology for a bug."""
    if not _first_time(f"{type(exc).__name__}: {exc}"):
        return
    if isinstance(exc, flc.NothingToRank):
        st.info(plain(str(exc)), icon=":material/info:")
    elif isinstance(exc, flc.FeatureLensError):
        st.error(plain(str(exc)), icon=":material/error:")
    else:
        st.error(
            f"{BUG_PREFIX} while {what} ({type(exc).__name__}). The rest of the page still works; "
            "try other inputs, and please report this with the page's link.",
            icon=":material/bug_report:",
        )


@contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Run a block; if it fails, say so in one message and let the rest of the page carry on.

    `what` completes "while ..." in the apology for a bug. Streamlit's own rerun and stop signals
    derive from BaseException and pass straight through.
    """
    try:
        yield
    except flc.FeatureLensError as exc:
        show_failure(exc, what)
    except Exception as exc:  # the boundary that keeps tracebacks off the page
        log.error("while %s:\n%s", what, traceback.format_exc())
        show_failure(exc, what)
