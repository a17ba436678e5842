"""Words that orient a newcomer: what the model is, what the page shows, what the target is."""

from __future__ import annotations

import streamlit as st

from feature_lens_app import interactions, state
from feature_lens_app.charts import display_token
from feature_lens_app.markup import code, plain
from feature_lens_core import catalog

BUILTIN = (
    "The model is a small GPT-2-style language model (3 layers) trained on Shakespeare's plays, built in and "
    "running offline."
)


def model_sentence(model: str) -> str:
    """What the model is, in one sentence."""
    if model == catalog.BUILTIN_MODEL:
        return BUILTIN
    return f"The model is {code(model)}, loaded from the Hugging Face hub."


def intro(view: state.ViewState) -> None:
    """One plain sentence of what the Explore page shows, and what the model is."""
    shows = (
        "The charts show which features make the **target** feature fire (upstream) and which features it "
        "makes fire (downstream)"
        if view.kind == "feature"
        else "The chart shows which features make the model **predict the target token** next"
    )
    st.markdown(
        'Inside a language model, a **feature** is a small, mostly readable unit (such as "the word *thou*"). '
        f"{shows}; orange pushes up, blue holds down. {model_sentence(view.model)}"
    )


def logit_text(view: state.ViewState, token: str | None = None) -> str:
    """A logit target in words (markdown; user text is escaped)."""
    after = f" after {plain(display_token(token))}" if token is not None else ""
    chosen = plain(display_token(view.token)) if view.token else "(no token chosen)"
    if view.kind == "diff":
        other = plain(display_token(view.other)) if view.other else "(no token chosen)"
        return (
            f"how much more the model predicts {chosen} than {other} next{after} (position {view.pos}): the "
            "difference of their logits"
        )
    return (
        f"how strongly the model predicts {chosen} next{after} (position {view.pos}): its logit minus the mean "
        "logit over the vocabulary"
    )


def target_line(view: state.ViewState, tokens: list[str], label: str | None = None, *, feature: bool = False) -> None:
    """The target in words, with the method that scores its neighbours (a feature's `label`, by default read).

    The target is what the Explore page ranks (the view's `kind`: the feature or a logit), or with `feature` the
    sidebar's target feature whatever the kind, for the pages that only rank features."""
    token = tokens[view.pos] if view.pos < len(tokens) else None
    of_feature = feature or view.kind == "feature"
    said = interactions.target_text(view, token, label) if of_feature else logit_text(view, token)
    st.markdown(f"**Target:** {said} · scored by {state.METHODS[view.method]}")
