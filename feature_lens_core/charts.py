"""Altair chart builders: a tidy DataFrame in, an `alt.Chart` out. No Streamlit here.

The app renders these with `st.altair_chart(..., on_select="rerun")` and reads clicks back
through the named selection params (`PICK`, `TOKEN`), so the param names are part of the API.
Rows arrive already ranked by the core; charts keep that order (`sort=None`) so the chart,
the table and the CLI agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import altair as alt
import pandas as pd

# Selection param names the app reads back from `st.altair_chart`'s state.
PICK = "pick"
TOKEN = "token"

# Colour-blind-safe diverging scheme, centred at zero: blue pulls the target down, orange pushes it up.
DIVERGING_SCHEME = "blueorange"
ERROR_FILL = "#d0d0d0"
ERROR_STROKE = "#444444"
METHOD_COLOURS = {"attribution": "#1f77b4", "direct": "#ff7f0e"}
LABEL_CHARS = 28


def display_token(token: str) -> str:
    """A token with its whitespace made visible, quoted so leading spaces show."""
    shown = token.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    return f"'{shown}'"


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def add_labels(df: pd.DataFrame, label_of: Callable[[str, int], str] | None = None) -> pd.DataFrame:
    """Add a unique, readable `label` per row: SAE, feature (and its label), token and position.

    `label_of(sae, feature)` gives a feature's human label ("" when none); error nodes are
    labelled as such. Labels must be unique because Vega-Lite merges equal nominal values.
    """
    out = df.copy()

    def one(row: Mapping[str, Any]) -> str:
        where = f"{display_token(str(row['token']))} @{int(row['position'])}"
        if row["kind"] == "error":
            return f"{row['sae']} · error · {where}"
        name = label_of(str(row["sae"]), int(row["feature"])) if label_of else ""
        name = f" {_short(name)}" if name and not name.startswith("#") else ""
        return f"{row['sae']} #{int(row['feature'])}{name} · {where}"

    out["label"] = [one(row) for row in out.to_dict("records")] if len(out) else pd.Series(dtype=str)
    return out


def _symmetric_extent(values: pd.Series) -> float:
    peak = float(values.abs().max()) if len(values) else 0.0
    return peak if peak > 0 else 1.0


def ranked_bars(df: pd.DataFrame, title: str, *, value: str = "score", param: str = PICK) -> alt.Chart:
    """Horizontal bars in the row order of `df`, coloured on a diverging scale centred at zero.

    Expects the core's ranking columns plus `label` (see `add_labels`). Error nodes (the part of
    the activation an SAE does not reconstruct) are grey with a dashed outline so nobody mistakes
    them for features. Clicking a bar selects it through the point selection named `param`,
    carrying the fields that identify a target: sae, feature, position and kind.
    """
    extent = _symmetric_extent(df[value])
    pick = alt.selection_point(name=param, fields=["sae", "feature", "position", "kind"], on="click", toggle=False)
    is_error = alt.datum.kind == "error"
    colour = alt.Color(
        f"{value}:Q",
        scale=alt.Scale(scheme=DIVERGING_SCHEME, domain=[-extent, extent], domainMid=0),
        legend=alt.Legend(title=value, orient="bottom", gradientLength=160),
    )
    return (
        alt.Chart(df, title=title)
        .mark_bar(cursor="pointer")
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=360)),
            x=alt.X(f"{value}:Q", title=value, scale=alt.Scale(domain=[-extent, extent])),
            color=alt.when(is_error).then(alt.value(ERROR_FILL)).otherwise(colour),
            stroke=alt.when(is_error).then(alt.value(ERROR_STROKE)).otherwise(alt.value("#8a8a8a")),
            strokeDash=alt.when(is_error).then(alt.value([4, 2])).otherwise(alt.value([1, 0])),
            strokeWidth=alt.when(is_error).then(alt.value(1.5)).otherwise(alt.value(0.5)),
            opacity=alt.when(pick).then(alt.value(1.0)).otherwise(alt.value(0.45)),
            tooltip=[
                alt.Tooltip("label:N", title="node"),
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("layer:O"),
                alt.Tooltip("kind:N"),
                alt.Tooltip("feature:Q"),
                alt.Tooltip("token:N"),
                alt.Tooltip("position:Q"),
                alt.Tooltip("activation:Q", format=".3f"),
                alt.Tooltip(f"{value}:Q", format="+.4f"),
            ],
        )
        .add_params(pick)
        .properties(height=alt.Step(22), description=f"{title}: bars sorted by the size of their {value}")
    )


def token_strip(df: pd.DataFrame, target_position: int | None = None, *, param: str = TOKEN) -> alt.Chart:
    """One cell per prompt token, shaded by how strongly the chosen feature fires there; click a cell to select it.

    Cells all have the same size, so a token where the feature is silent is as easy to click as any; the
    axis names each cell's token (labels that would overlap are dropped; tooltips give all). Expects columns
    `position`, `token`, `activation` (one row per position). The target is outlined in black.
    """
    data = df.sort_values("position").copy()
    data["tick"] = [f"{p} {display_token(t)}" for p, t in zip(data["position"], data["token"], strict=True)]
    data["is_target"] = data["position"] == target_position
    peak = float(data["activation"].max()) if len(data) else 0.0
    pick = alt.selection_point(name=param, fields=["position"], on="click", toggle=False)
    token_only = "slice(datum.value, indexof(datum.value, ' ') + 1)"
    # No y encoding: every cell spans the strip's full height. No legend: it would not fit beside the strip.
    return (
        alt.Chart(data)
        .mark_rect(cursor="pointer", cornerRadius=2)
        .encode(
            x=alt.X(
                "tick:N",
                sort=None,
                title=None,
                axis=alt.Axis(labelExpr=token_only, labelAngle=0, labelLimit=90, labelOverlap="greedy", ticks=False),
            ),
            color=alt.Color(
                "activation:Q", scale=alt.Scale(scheme="oranges", domain=[0, peak if peak > 0 else 1.0]), legend=None
            ),
            stroke=alt.when(alt.datum.is_target).then(alt.value("black")).otherwise(alt.value("#d0d0d0")),
            strokeWidth=alt.when(alt.datum.is_target).then(alt.value(3)).otherwise(alt.value(1)),
            opacity=alt.when(pick).then(alt.value(1.0)).otherwise(alt.value(0.5)),
            tooltip=[
                alt.Tooltip("position:Q"),
                alt.Tooltip("token:N"),
                alt.Tooltip("activation:Q", format=".3f"),
            ],
        )
        .add_params(pick)
        .properties(height=30, description="Activation of the target feature at each token of the prompt")
    )


def method_scatter(df: pd.DataFrame) -> alt.LayerChart:
    """Estimated scores against activation-patching scores, one point per node and cheap method.

    Expects columns `label`, `exact`, `estimate`, `method`. Points on the grey diagonal are
    estimates that match the exact effect.
    """
    both = pd.concat([df["exact"], df["estimate"]]) if len(df) else pd.Series([0.0])
    low, high = float(both.min()), float(both.max())
    if low == high:
        low, high = low - 1.0, high + 1.0
    diagonal = (
        alt.Chart(pd.DataFrame({"exact": [low, high], "estimate": [low, high]}))
        .mark_line(color="#9e9e9e", strokeDash=[5, 3])
        .encode(x="exact:Q", y="estimate:Q")
    )
    methods = sorted(df["method"].unique()) if len(df) else list(METHOD_COLOURS)
    points = (
        alt.Chart(df)
        .mark_point(filled=True, size=70, opacity=0.8)
        .encode(
            x=alt.X("exact:Q", title="activation patching (exact effect)", scale=alt.Scale(domain=[low, high])),
            y=alt.Y("estimate:Q", title="cheap estimate", scale=alt.Scale(domain=[low, high])),
            color=alt.Color(
                "method:N",
                scale=alt.Scale(domain=methods, range=[METHOD_COLOURS.get(m, "#7f7f7f") for m in methods]),
                legend=alt.Legend(title="estimate", orient="bottom"),
            ),
            shape=alt.Shape("method:N", legend=None),
            tooltip=[
                alt.Tooltip("label:N", title="node"),
                alt.Tooltip("method:N"),
                alt.Tooltip("exact:Q", format="+.4f"),
                alt.Tooltip("estimate:Q", format="+.4f"),
            ],
        )
    )
    return (diagonal + points).properties(
        height=380, description="Each cheap method's score against the exact activation-patching score"
    )


def selected_rows(state: Any, param: str) -> list[dict[str, Any]]:
    """The datums a click selected, from `st.altair_chart`'s returned state (or `None`)."""
    if not state:
        return []
    selection = state.get("selection", {}) if isinstance(state, Mapping) else getattr(state, "selection", {})
    rows = (selection or {}).get(param) or []
    return [dict(row) for row in rows if isinstance(row, Mapping)]
