"""The Explore page's choice of what to explain: a feature, the model's next-token logit, or a logit difference.

A logit target asks "why does the model predict this token here?": the page ranks what drives the logit of a
token at a position (minus the mean logit over the vocabulary, as circuit-tracer does), or the difference of
two tokens' logits. The model's most probable next tokens at the position are offered as one-click choices,
so nobody has to guess how the tokenizer splits a word.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import feature_lens_core as flc
from feature_lens_app import resources, state
from feature_lens_app.charts import display_token
from feature_lens_app.markup import plain
from feature_lens_app.sidebar import choice_radio

PREDICTIONS = 8  # next-token choices offered; on the built-in model they hold most of the probability
# A text box cannot hold a newline or show a tab, so the token boxes show these marks for them (as the charts do).
_MARKS = {"\n": "⏎", "\t": "⇥"}


@st.cache_data(max_entries=256, show_spinner=False)
def predictions(model_name: str, prompt: str, position: int, count: int = PREDICTIONS) -> pd.DataFrame:
    """The model's `count` most probable next tokens after `position` of `prompt` (`flc.predictions`)."""
    return flc.predictions(resources.model(model_name), prompt, position, count=count)


def _fill_tokens() -> None:
    """On a switch to a logit target, take the model's top predictions for the tokens not yet chosen."""
    ss = st.session_state
    if ss.get("kind", "feature") == "feature":
        return
    try:
        top = predictions(ss["model"], ss["prompt"], int(ss["pos"]))["token"].tolist()
    except Exception:  # a prompt or position the page itself reports
        return
    if not ss.get("token"):
        ss["token"] = top[0]
    if ss["kind"] == "diff" and (not ss.get("other") or ss["other"] == ss["token"]):
        ss["other"] = next((t for t in top if t != ss["token"]), "")


def _choose(key: str, token: str) -> None:
    st.session_state[key] = token


def _marked(token: str) -> str:
    for char, mark in _MARKS.items():
        token = token.replace(char, mark)
    return token


def _take_box(key: str, box: str) -> None:
    """A token box was edited: its text, with the marks read back as the characters they stand for."""
    text = str(st.session_state[box])
    for char, mark in _MARKS.items():
        text = text.replace(mark, char)
    st.session_state[key] = text


def _token_box(where: DeltaGenerator, label: str, key: str, help: str) -> None:
    """A text box for the token under `key` (which the URL holds), showing newlines and tabs as marks."""
    box = f"_{key}_box"
    st.session_state[box] = _marked(str(st.session_state.get(key) or ""))
    where.text_input(label, key=box, on_change=_take_box, args=(key, box), help=help)


def kind_switch() -> None:
    """The radio that picks what the page explains."""
    choice_radio(
        "Explain",
        state.TARGET_KINDS,
        "kind",
        "A feature: what makes the sidebar's target feature fire and what it makes fire. A next-token logit: "
        "why the model predicts a token after the sidebar's token position (what drives that token's logit). A "
        "logit difference: why it prefers one token to another there.",
        horizontal=True,
        on_change=_fill_tokens,
    )


def token_choices(
    view: state.ViewState, tokens: list[str], top: pd.DataFrame | None = None, *, boxes: DeltaGenerator
) -> None:
    """The token boxes (drawn in `boxes`, beside the kind switch, so that the chart starts higher) and the model's
    top predictions at the position (`top`, by default computed), each a button that picks it."""
    diff = view.kind == "diff"
    places = boxes.columns(2) if diff else [boxes]
    _token_box(
        places[0],
        "Token",
        "token",
        "The predicted token whose logit is explained: exactly one token of the model's tokenizer (a word "
        "usually starts with a space, as in ' thou'; ⏎ is a new line). Pick one of the model's predictions below "
        "to be sure.",
    )
    if diff:
        _token_box(
            places[1], "Against", "other", "The token it is compared with: the score is logit(token) - logit(against)."
        )
    if not 0 <= view.pos < len(tokens):
        return  # the ranking says which positions there are
    top = predictions(view.model, view.prompt, view.pos) if top is None else top
    after = plain(display_token(tokens[view.pos]))
    if diff:
        st.caption(f"The model's most probable next tokens after {after}:")
    rows = [("token", "**Token:**" if diff else f"Most probable after {after}:")]
    rows += [("other", "**Against:**")] if diff else []
    for key, title in rows:
        with st.container(horizontal=True, gap="small", vertical_alignment="center"):
            st.markdown(title)
            for index, (token, probability) in enumerate(zip(top["token"], top["probability"], strict=True)):
                st.button(
                    f"{plain(display_token(token))} {probability:.0%}",
                    key=f"predicted_{key}_{index}",
                    on_click=_choose,
                    args=(key, token),
                    type="primary" if token == getattr(view, key) else "secondary",
                    help=f"The model gives {plain(display_token(token))} a probability of {probability:.1%} here. "
                    "Click to explain it.",
                )
