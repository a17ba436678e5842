"""The prompt's tokens: shaded by how strongly a feature fires on each, and the features active at a token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from feature_lens_app import charts, resources, state
from feature_lens_app.interactions import NUMBER_FORMAT, draw_chart
from feature_lens_app.markup import code, plain, visible_html


def feature_on_tokens(tokens: Sequence[str], acts: pd.DataFrame, feature: int) -> pd.DataFrame:
    """One feature's activation at every token (0 where it does not fire)."""
    fired = acts.loc[acts["feature"] == feature]
    values = [0.0] * len(tokens)
    for position, activation in zip(fired["position"], fired["activation"], strict=True):
        values[int(position)] = max(values[int(position)], float(activation))
    return pd.DataFrame({"position": range(len(tokens)), "token": list(tokens), "activation": values})


def highlighted_tokens(
    tokens: Sequence[str], values: Sequence[float], target: int | None = None, *, peak: float | None = None
) -> str:
    """HTML for a row of tokens shaded by activation; everything the user typed is escaped.

    The target position gets an outline; each token's tooltip shows its position and value. Full colour is
    `peak` (by default the row's largest value; pass one value to shade several rows alike).
    """
    peak = peak if peak is not None else max([v for v in values if v > 0], default=0.0)
    spans = []
    for position, (token, value) in enumerate(zip(tokens, values, strict=False)):
        alpha = min(max(value / peak, 0.0), 1.0) if peak > 0 else 0.0
        outline = "outline:2px solid #222;" if position == target else ""
        spans.append(
            f'<span title="position {position}: {value:.3f}" style="background:rgba(255,127,14,{alpha:.2f});'
            f'{outline}border-radius:3px;padding:1px 2px;margin:1px;white-space:pre;">{visible_html(token)}</span>'
        )
    return (
        '<div style="font-family:ui-monospace,monospace;line-height:2.1;font-size:0.95rem;'
        f'overflow-wrap:anywhere;">{"".join(spans)}</div>'
    )


def example_html(before: str, token: str, after: str) -> str:
    """One top-activating snippet with its token highlighted, escaped."""
    return (
        f'<div style="font-family:ui-monospace,monospace;font-size:0.9rem;">…{visible_html(before)}'
        f'<span style="background:rgba(255,127,14,0.85);border-radius:3px;padding:0 2px;">{visible_html(token)}</span>'
        f"{visible_html(after)}…</div>"
    )


def _pick_from_table(key: str, rows: list[dict[str, Any]], sae: str) -> None:
    picked = st.session_state.get(key)
    selected = picked.selection.rows if picked is not None else []
    if selected:
        row = rows[selected[0]]
        state.set_target(sae, int(row["feature"]), int(row["position"]))


def token_strip(view: state.ViewState, tokens: list[str]) -> int:
    """The prompt shaded by the target's activation, as text and as a strip of clickable cells.

    Returns the position to list the active features of: the clicked token's, or the target's.
    """
    acts = resources.activations(view.model, view.sae, view.prompt)
    strip = feature_on_tokens(tokens, acts, view.feature)
    st.html(highlighted_tokens(tokens, strip["activation"].tolist(), view.pos))
    event = draw_chart(
        charts.token_strip(strip, view.pos),
        key=_strip_key(view),
        on_select="rerun",
        selection_mode=charts.TOKEN,
        width="stretch",
        height=64,
    )
    picked = charts.selected_rows(event, charts.TOKEN)
    return int(picked[0]["position"]) if picked else min(view.pos, len(tokens) - 1)


def _strip_key(view: state.ViewState) -> str:
    return f"strip_{state.target_fingerprint(view)}"


def active_features(view: state.ViewState, tokens: list[str], where: int) -> None:
    """The features of the target's SAE active at position `where`; clicking a row makes it the target."""
    acts = resources.activations(view.model, view.sae, view.prompt)
    here = acts.loc[acts["position"] == where].sort_values("activation", ascending=False).head(12)
    label_of = resources.labeller(view.model)
    here = here.assign(label=[label_of(view.sae, int(f)) for f in here["feature"]])
    st.markdown(
        f"**Features of {code(view.sae)} active at {plain(charts.display_token(tokens[where]))} (position {where})** "
        "· click a token in the strip to look elsewhere, click a row to make it the target"
    )
    if here.empty:
        st.caption("No feature of this SAE fires at this token.")
        return
    rows = here[["feature", "label", "activation", "position"]].to_dict("records")
    table_key = f"active_{_strip_key(view)}_{where}"
    st.dataframe(
        here[["feature", "label", "activation"]],
        key=table_key,
        on_select=lambda: _pick_from_table(table_key, rows, view.sae),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(here), 300),
        column_config={"activation": NUMBER_FORMAT["activation"]},
    )


def token_panel(view: state.ViewState, tokens: list[str]) -> None:
    """The strip and, under it, the features active at the chosen token."""
    active_features(view, tokens, token_strip(view, tokens))
