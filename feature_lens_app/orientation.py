"""Words that orient a newcomer: what the model is, what the page shows, what the target is."""

from __future__ import annotations

import streamlit as st

from feature_lens_app import interactions, state
from feature_lens_app.markup import code
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
    st.markdown(
        'Inside a language model, a **feature** is a small, mostly readable unit (such as "the word *thou*"). '
        "The charts show which features make the **target** feature fire (upstream) and which features it "
        f"makes fire (downstream); orange pushes up, blue holds down. {model_sentence(view.model)}"
    )


def target_line(view: state.ViewState, tokens: list[str]) -> None:
    """The target in words, with the method that scores its neighbours."""
    token = tokens[view.pos] if view.pos < len(tokens) else None
    st.markdown(f"**Target:** {interactions.target_text(view, token)} · scored by {state.METHODS[view.method]}")
