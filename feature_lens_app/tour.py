"""The guided tour, for a newcomer or a demo to non-coders: the landing view, then each worked example, each with
a few plain sentences and a link to the next step, ending on How it works.

A step is a view (the shipped ones, `shipped.views`, so that on a fresh server each is drawn at once from its
shipped results); Explore shows the step's box whenever the view is one of them, so Back, Forward and a shared
link land on the right step with no state of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from feature_lens_app import shipped, state
from feature_lens_app.examples import EXAMPLES, LANDING_TOKEN

LANDING_STORY = (
    f"Why does the model write {LANDING_TOKEN!r} after ' thou'? Each bar is a feature inside the model: orange pushes "
    "that prediction up, blue holds it down; hover over a bar for what it fires on."
)
HOW_IT_WORKS = "pages/how_it_works.py"


@dataclass(frozen=True)
class Step:
    view: state.ViewState
    title: str  # what the step shows, in a few words
    story: str


def steps() -> tuple[Step, ...]:
    """The tour's steps in order: the landing view, then the worked examples."""
    landing, *examples = shipped.views()
    return (
        Step(landing, f"Why the model predicts {LANDING_TOKEN!r}", LANDING_STORY),
        *(Step(view, f"{e.title} (a feature)", e.story) for view, e in zip(examples, EXAMPLES, strict=True)),
    )


def _drawn(view: state.ViewState) -> dict[str, str]:
    """The parameters that decide what Explore draws: a feature view ignores the logit target's tokens, which the
    "A feature" switch and the Examples list keep from the logit view they leave."""
    params = state.to_params(view)
    return params | {"token": "", "other": ""} if view.kind == "feature" else params


def step_of(view: state.ViewState) -> int | None:
    """The index of the step showing this view, or None."""
    drawn = _drawn(view)
    return next((i for i, step in enumerate(steps()) if _drawn(step.view) == drawn), None)


def box(view: state.ViewState) -> None:
    """The tour's box on Explore, on one of its steps: the step's words and the link to the next."""
    index = step_of(view)
    if index is None:
        return
    tour = steps()
    words, onward = st.container(border=True).columns([6, 1], vertical_alignment="center")
    words.markdown(f"**Guided tour, {index + 1} of {len(tour)}.** {tour[index].story}")
    with onward:
        if index + 1 < len(tour):
            # A button, not a link: a link to the page it is on does not change the address bar, so Back would
            # skip the step; a changed view is one history entry (`state.write_url`).
            following = tour[index + 1]
            st.button(
                "Next step",
                key="tour_next",
                on_click=state.apply_view,
                args=(following.view,),
                width="stretch",
                help=f"Step {index + 2} of {len(tour)}: {following.title}.",
            )
        else:
            st.page_link(HOW_IT_WORKS, label="Next: how it works", query_params=state.to_params(view))
