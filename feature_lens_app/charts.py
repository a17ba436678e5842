"""Altair chart builders: a tidy DataFrame in, an `alt.Chart` out. No Streamlit here.

The app renders these with `st.vega_lite_chart(..., on_select=...)` and reads clicks back
through the named selection params (`PICK`, `TOKEN`), so the param names are part of the API.
Rows arrive already ranked by the core; charts keep that order (`sort=None`) so the chart,
the table and the CLI agree.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import altair as alt
import numpy as np
import pandas as pd

# Selection param names the app reads back from `st.altair_chart`'s state.
PICK = "pick"
TOKEN = "token"

# Colour-blind-safe diverging scheme, centred at zero: blue pulls the target down, orange pushes it up.
DIVERGING_SCHEME = "blueorange"
ERROR_FILL = "#d0d0d0"
ERROR_STROKE = "#444444"
METHOD_COLOURS = {"attribution": "#1f77b4", "direct": "#ff7f0e", "integrated": "#2ca02c"}
LABEL_CHARS = 28
BAR_STEP = 22  # pixels per bar
# Bar labels are cut (with "…", the full text in the tooltip) to at most 40% of the chart's width, so that on a
# phone the bars keep most of the width.
LABEL_LIMIT = alt.ExprRef("clamp(containerSize()[0] * 0.4, 80, 360)")
# Axis, legend and title text: #31333f on white is 12.6:1 (WCAG AA asks 4.5:1 for text; Streamlit's
# default chart grey #808495 gives 3.7:1).
TEXT = "#31333f"
Channel = TypeVar("Channel", bound=alt.SchemaBase)


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


def _numbers(df: pd.DataFrame, column: str) -> np.ndarray:
    """One column as floats."""
    return df[column].to_numpy(dtype=float)


def _symmetric_extent(values: np.ndarray) -> float:
    peak = float(np.abs(values).max()) if len(values) else 0.0
    return peak if peak > 0 else 1.0


def shared_extent(frames: list[pd.DataFrame], value: str = "score") -> float:
    """The largest |value| over several charts' rows: one colour scale for all, so one orange is one size."""
    return max((_symmetric_extent(_numbers(f, value)) for f in frames), default=1.0)


def _either(channel: type[Channel], test: Any, then: Any, otherwise: Any) -> Channel:
    """A channel set to `then` where `test` holds (a predicate or a selection param), else to `otherwise`.

    The same spec as passing `alt.when(test).then(alt.value(then)).otherwise(alt.value(otherwise))` to `encode`,
    which gets a dict and turns it into `channel` with `from_dict`: that hashes every class of the Vega-Lite
    schema each time, about 4 ms a channel, which a click on the Explore page paid for seven channels.
    """
    return channel(**alt.when(test).then(alt.value(then)).otherwise(alt.value(otherwise)))


def readable(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """The chart with its text at AA contrast (see `TEXT`)."""
    return (
        chart.configure_axis(labelColor=TEXT, titleColor=TEXT, labelFontSize=12, titleFontSize=12)
        .configure_legend(labelColor=TEXT, titleColor=TEXT, labelFontSize=12, titleFontSize=12)
        .configure_title(color=TEXT)
    )


def ranked_bars(
    df: pd.DataFrame, title: str, *, value: str = "score", param: str = PICK, extent: float | None = None
) -> alt.TopLevelMixin:
    """Horizontal bars in the row order of `df`, coloured on a diverging scale centred at zero.

    Expects the core's ranking columns plus `label` (see `add_labels`). Error nodes (the part of
    the activation an SAE does not reconstruct) are grey with a dashed outline so nobody mistakes
    them for features. Clicking a bar selects it through the point selection named `param`,
    carrying the fields that identify a target: sae, feature, position and kind. The axis and the
    colours span ±`extent` (by default the largest |value| here; pass `shared_extent` of every
    chart on a page so that they read alike).
    """
    extent = extent if extent is not None else _symmetric_extent(_numbers(df, value))
    pick = alt.selection_point(name=param, fields=["sae", "feature", "position", "kind"], on="click", toggle=False)
    is_error = alt.datum.kind == "error"
    colour = alt.Color(
        f"{value}:Q",
        scale=alt.Scale(scheme=DIVERGING_SCHEME, domain=[-extent, extent], domainMid=0),
        legend=alt.Legend(title=value, orient="bottom", gradientLength=160),
    )
    return readable(
        alt.Chart(df, title=title)
        .mark_bar(cursor="pointer")
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=LABEL_LIMIT)),
            x=alt.X(f"{value}:Q", title=value, scale=alt.Scale(domain=[-extent, extent])),
            color=alt.when(is_error).then(alt.value(ERROR_FILL)).otherwise(colour),
            stroke=_either(alt.StrokeValue, is_error, ERROR_STROKE, "#8a8a8a"),
            strokeDash=_either(alt.StrokeDashValue, is_error, [4, 2], [1, 0]),
            strokeWidth=_either(alt.StrokeWidthValue, is_error, 1.5, 0.5),
            opacity=_either(alt.OpacityValue, pick, 1.0, 0.45),
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
        # A fixed height rather than alt.Step: Streamlit sizes charts to fit, which Vega drops for a stepped height.
        # Fit the width only: Streamlit's default ("fit" both ways) fits title, axis and legend into that height
        # too, which squeezed twelve bars into about 70 pixels.
        .properties(
            height=BAR_STEP * len(df),
            autosize=alt.AutoSizeParams(type="fit-x", contains="padding"),
            description=f"{title}: bars sorted by the size of their {value}",
        )
    )


def token_strip(df: pd.DataFrame, target_position: int | None = None, *, param: str = TOKEN) -> alt.TopLevelMixin:
    """One cell per prompt token, shaded by how strongly the chosen feature fires there; click a cell to select it.

    Cells all have the same size, so a token where the feature is silent is as easy to click as any; the
    axis names each cell's token (labels that would overlap are dropped; tooltips give all). Expects columns
    `position`, `token`, `activation` (one row per position). The target is outlined in black.
    """
    data = df.sort_values("position").copy()
    data["tick"] = [f"{p} {display_token(t)}" for p, t in zip(data["position"], data["token"], strict=True)]
    data["is_target"] = data["position"] == target_position
    peak = float(_numbers(data, "activation").max()) if len(data) else 0.0
    pick = alt.selection_point(name=param, fields=["position"], on="click", toggle=False)
    token_only = "slice(datum.value, indexof(datum.value, ' ') + 1)"
    # No y encoding: every cell spans the strip's full height. No legend: it would not fit beside the strip.
    return readable(
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
            stroke=_either(alt.StrokeValue, alt.datum.is_target, "black", "#d0d0d0"),
            strokeWidth=_either(alt.StrokeWidthValue, alt.datum.is_target, 3, 1),
            opacity=_either(alt.OpacityValue, pick, 1.0, 0.5),
            tooltip=[
                alt.Tooltip("position:Q"),
                alt.Tooltip("token:N"),
                alt.Tooltip("activation:Q", format=".3f"),
            ],
        )
        .add_params(pick)
        .properties(height=30, description="Activation of the target feature at each token of the prompt")
    )


def method_scatter(df: pd.DataFrame) -> alt.TopLevelMixin:
    """Estimated scores against activation-patching scores, one point per node and cheap method.

    Expects columns `label`, `exact`, `estimate`, `method`. Points on the grey diagonal are
    estimates that match the exact effect.
    """
    both = np.concatenate([_numbers(df, "exact"), _numbers(df, "estimate")]) if len(df) else np.zeros(1)
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
            # The same legend as the colour's, so Vega merges the two into one (shapes tell methods apart in grey).
            shape=alt.Shape("method:N", legend=alt.Legend(title="estimate", orient="bottom")),
            tooltip=[
                alt.Tooltip("label:N", title="node"),
                alt.Tooltip("method:N"),
                alt.Tooltip("exact:Q", format="+.4f"),
                alt.Tooltip("estimate:Q", format="+.4f"),
            ],
        )
    )
    return readable(
        (diagonal + points).properties(
            height=380, description="Each cheap method's score against the exact activation-patching score"
        )
    )


def selected_rows(state: Any, param: str) -> list[dict[str, Any]]:
    """The datums a click selected, from `st.altair_chart`'s returned state (or `None`)."""
    if not state:
        return []
    selection = state.get("selection", {}) if isinstance(state, Mapping) else getattr(state, "selection", {})
    rows = (selection or {}).get(param) or []
    return [dict(row) for row in rows if isinstance(row, Mapping)]


GRAPH_ROW = 70  # pixels per SAE row of a feature graph
SIDE_COLOURS = {"target": "#222222", "upstream": "#6baed6", "downstream": "#fd8d3c"}


def graph_layout(nodes: pd.DataFrame, sae_order: list[str]) -> tuple[pd.DataFrame, dict[float, int]]:
    """Each node's place in a feature graph, and the centre of each token's column.

    `y` is its SAE's row in forward order (`sae_order`, earliest first). Only positions that hold a node
    get a column, as wide as its most crowded SAE row, so that nodes sharing an SAE and a position sit
    side by side. Returns the nodes with `x` and `y`, and {column centre: position}.
    """
    out = nodes.copy()
    out["y"] = [sae_order.index(s) for s in out["sae"]]
    out["slot"] = out.groupby(["sae", "position"]).cumcount()
    crowded: dict[int, int] = {}  # position -> the most nodes one SAE has there
    for (position, _), count in Counter(zip(out["position"], out["sae"], strict=True)).items():
        crowded[int(position)] = max(crowded.get(int(position), 0), count)
    starts: dict[int, int] = {}
    for position in sorted(crowded):
        starts[position] = sum(crowded[p] for p in starts)
    out["x"] = [starts[int(p)] + slot + 0.5 for p, slot in zip(out["position"], out["slot"], strict=True)]
    centres = {float(starts[p] + crowded[p] / 2): p for p in sorted(crowded)}
    return out.drop(columns="slot"), centres


def logit_shown(label: str) -> tuple[str, str]:
    r"""A logit node's label (the core writes "logit '\n' (p = 0.91)", the token as Python's repr) as the token
    shown the way every other token is (`display_token`) and the rest.

    >>> logit_shown("logit '\\n' (p = 0.91)"), logit_shown("logit ','")
    (("'⏎'", ' (p = 0.91)'), ("','", ''))
    """
    quoted, sep, probability = label.removeprefix("logit ").partition(" (p = ")
    try:
        token = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        token = None
    return (display_token(token) if isinstance(token, str) else quoted), sep + probability


def node_caption(kind: str, feature: int, label: str) -> str:
    """The few characters above a graph node: a feature's number, "err" for an error node, the predicted token for
    a logit (`logit_shown`), and nothing for a token node, which the x axis names.

    >>> node_caption("feature", 924, ""), node_caption("logit", 11, "logit ',' (p = 0.91)")
    ('#924', "','")
    >>> node_caption("token", 7, "token ' thou'"), node_caption("error", 0, "")
    ('', 'err')
    """
    if kind == "error":
        return "err"
    if kind == "logit":
        return logit_shown(label)[0]
    return "" if kind == "token" else f"#{feature}"


def graph_chart(
    nodes: pd.DataFrame, edges: pd.DataFrame, sae_order: list[str], tokens: list[str], *, param: str = PICK
) -> alt.TopLevelMixin:
    """A feature graph laid out by token position (x) and SAE in forward order (y, earliest at the bottom).

    `nodes` has the connectome's node columns (id, sae, kind, feature, position, token, activation,
    label, side); `edges` has source, target, score, and optionally "top heads" (the attention heads that carry
    each edge, shown in its tooltip). Edge colour and width show the score (orange supports the target, blue
    suppresses it); error nodes are grey squares. Clicking a node selects
    it through the point selection `param`, with the fields that identify a target.
    """
    placed, centres = graph_layout(nodes, sae_order)
    where = placed.set_index("id")[["x", "y"]]
    ends = pd.DataFrame({"x2": where["x"], "y2": where["y"]}, index=where.index)
    lines = edges.join(where, on="source").join(ends, on="target")
    lines["strength"] = lines["score"].abs()
    extent = _symmetric_extent(_numbers(lines, "score"))
    rows = list(range(len(sae_order)))
    names = {format(c, "g"): f"{display_token(tokens[p])} @{p}" for c, p in centres.items()}
    x_axis = alt.Axis(
        values=list(centres),
        labelExpr=f"{json.dumps(names)}[toString(datum.value)]",
        labelAngle=-30,
        grid=False,
        title="token",
    )
    y_axis = alt.Axis(values=rows, labelExpr=f"{json.dumps(sae_order)}[datum.value]", title=None, grid=True)
    x = alt.X("x:Q", axis=x_axis, scale=alt.Scale(domain=[0, float(_numbers(placed, "x").max()) + 0.5]))
    y = alt.Y("y:Q", axis=y_axis, scale=alt.Scale(domain=[-0.5, len(rows) - 0.5]))
    edge_layer = (
        alt.Chart(lines)
        .mark_rule(opacity=0.75)
        .encode(
            x=x,
            y=y,
            x2="x2:Q",
            y2="y2:Q",
            color=alt.Color(
                "score:Q",
                scale=alt.Scale(scheme=DIVERGING_SCHEME, domain=[-extent, extent], domainMid=0),
                legend=alt.Legend(title="edge score", orient="bottom", gradientLength=160),
            ),
            strokeWidth=alt.StrokeWidth("strength:Q", scale=alt.Scale(range=[0.5, 7]), legend=None),
            tooltip=[
                alt.Tooltip("source:N"),
                alt.Tooltip("target:N"),
                alt.Tooltip("score:Q", format="+.4f"),
                *([alt.Tooltip("top heads:N")] if "top heads" in edges else []),
            ],
        )
    )
    pick = alt.selection_point(name=param, fields=["sae", "feature", "position", "kind"], on="click", toggle=False)
    is_error = alt.datum.kind == "error"
    node_layer = (
        alt.Chart(placed)
        .mark_point(filled=True, size=220, cursor="pointer", stroke="#333333", strokeWidth=1)
        .encode(
            x=x,
            y=y,
            shape=_either(alt.ShapeValue, is_error, "square", "circle"),
            color=alt.when(is_error)
            .then(alt.value(ERROR_FILL))
            .otherwise(
                alt.Color(
                    "side:N",
                    scale=alt.Scale(domain=list(SIDE_COLOURS), range=list(SIDE_COLOURS.values())),
                    legend=alt.Legend(title="node", orient="bottom"),
                )
            ),
            opacity=_either(alt.OpacityValue, pick, 1.0, 0.6),
            tooltip=[
                alt.Tooltip("id:N", title="node"),
                alt.Tooltip("label:N"),
                alt.Tooltip("token:N"),
                alt.Tooltip("activation:Q", format=".3f"),
                alt.Tooltip("hop:Q"),
            ],
        )
        .add_params(pick)
    )
    caption = [
        node_caption(k, f, str(n)) for k, f, n in zip(placed["kind"], placed["feature"], placed["label"], strict=True)
    ]
    # Neighbouring nodes are about one caption apart: every other column's caption goes under its node.
    below = (placed["x"] - 0.5).round().astype(int) % 2 == 1
    captioned = alt.Chart(placed.assign(caption=caption, below=below))
    captions = [
        captioned.transform_filter(alt.datum.below == side)
        .mark_text(dy=17 if side else -14, fontSize=10, color="#333333")
        .encode(x=x, y=y, text="caption:N")
        for side in (False, True)
    ]
    return readable(
        alt.layer(edge_layer, node_layer, *captions).properties(
            height=GRAPH_ROW * max(2, len(rows)),
            description="Feature graph: nodes by token and SAE, edges coloured and sized by their score",
        )
    )


CLUSTER_SHAPES = ["circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "wedge", "stroke"]


def cluster_map(df: pd.DataFrame, *, param: str = PICK) -> alt.TopLevelMixin:
    """Features on a 2-D map of their connection profiles, told apart by cluster in colour and in shape (so that
    the clusters stay apart for a reader who does not see the colours); click one to select it.

    Expects columns sae, feature, label, cluster, x, y, occurrences (the clustering's map frame).
    """
    pick = alt.selection_point(name=param, fields=["sae", "feature"], on="click", toggle=False)
    groups = sorted(df["cluster"].astype(int).unique().tolist())
    names = [f"cluster {g + 1}" for g in groups]
    legend = alt.Legend(orient="right", title="cluster")
    return readable(
        alt.Chart(df.assign(cluster=[f"cluster {int(c) + 1}" for c in df["cluster"]]))
        .mark_point(filled=True, size=90, cursor="pointer")
        .encode(
            x=alt.X("x:Q", title="first main direction of difference between profiles"),
            y=alt.Y("y:Q", title="second main direction"),
            color=alt.Color("cluster:N", scale=alt.Scale(domain=names, scheme="tableau10"), legend=legend),
            shape=alt.Shape(
                "cluster:N",
                scale=alt.Scale(domain=names, range=[CLUSTER_SHAPES[g % len(CLUSTER_SHAPES)] for g in groups]),
                legend=legend,
            ),
            opacity=_either(alt.OpacityValue, pick, 1.0, 0.6),
            tooltip=[
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("feature:Q"),
                alt.Tooltip("label:N"),
                alt.Tooltip("cluster:N"),
                alt.Tooltip("occurrences:Q"),
            ],
        )
        .add_params(pick)
        .properties(height=420, description="Features placed by their upstream and downstream partners")
    )


def edge_frequency(df: pd.DataFrame, *, param: str = PICK) -> alt.TopLevelMixin:
    """Each edge across prompts as a point: how often it holds (x, a percentage) against its mean strength (y),
    coloured on the diverging scale of the rankings; click one to select it.

    Expects columns sae, feature, label, kind, mean_score, frequency (0 to 1), prompts and occurrences
    (`rank_many`'s edges, labelled).
    """
    extent = _symmetric_extent(_numbers(df, "mean_score"))
    pick = alt.selection_point(name=param, fields=["sae", "feature", "kind"], on="click", toggle=False)
    is_error = alt.datum.kind == "error"
    colour = alt.Color(
        "mean_score:Q",
        scale=alt.Scale(scheme=DIVERGING_SCHEME, domain=[-extent, extent], domainMid=0),
        legend=alt.Legend(title="mean score", orient="bottom", gradientLength=160),
    )
    return readable(
        alt.Chart(df.assign(percent=100 * df["frequency"].astype(float)))
        .mark_point(filled=True, size=90, cursor="pointer", stroke="#444444", strokeWidth=0.5)
        .encode(
            x=alt.X(
                "percent:Q",
                title="how often it holds (% of the target's occurrences)",
                scale=alt.Scale(domain=[0, 100]),
            ),
            y=alt.Y("mean_score:Q", title="mean score"),
            color=alt.when(is_error).then(alt.value(ERROR_FILL)).otherwise(colour),
            shape=_either(alt.ShapeValue, is_error, "square", "circle"),
            opacity=_either(alt.OpacityValue, pick, 1.0, 0.7),
            tooltip=[
                alt.Tooltip("label:N", title="node"),
                alt.Tooltip("sae:N", title="SAE"),
                alt.Tooltip("feature:Q"),
                alt.Tooltip("percent:Q", format=".0f", title="holds (%)"),
                alt.Tooltip("mean_score:Q", format="+.4f", title="mean score"),
                alt.Tooltip("prompts:Q"),
            ],
        )
        .add_params(pick)
        .properties(height=320, description="Edges across prompts: how often each holds against its mean score")
    )


def histogram_bars(
    edges: Sequence[float], counts: Sequence[int], *, title: str, value: str, colour: str = "#fd8d3c"
) -> alt.TopLevelMixin:
    """Counts in bins as adjoining bars: bin i spans `edges[i]` to `edges[i + 1]` (`value` names the axis).

    Bins with no count draw nothing, so a long thin tail stays visible against the empty ones.
    """
    data = pd.DataFrame({"start": list(edges[:-1]), "end": list(edges[1:]), "count": list(counts)})
    return readable(
        alt.Chart(data, title=title)
        .mark_bar(color=colour, stroke="#ffffff", strokeWidth=0.5)
        .encode(
            x=alt.X("start:Q", bin="binned", title=value, scale=alt.Scale(zero=False, nice=False)),
            x2="end:Q",
            y=alt.Y("count:Q", title="count"),
            tooltip=[
                alt.Tooltip("start:Q", format=".3f", title="from"),
                alt.Tooltip("end:Q", format=".3f", title="to"),
                alt.Tooltip("count:Q"),
            ],
        )
        .properties(height=180, description=f"{title}: a histogram of {value}")
    )


def dfa_heatmap(terms: pd.DataFrame, title: str) -> alt.TopLevelMixin:
    """Direct feature attribution as a heatmap: one column per source token, one row per head, each cell that
    (token, head)'s contribution to an attention SAE feature's pre-activation, on a diverging scale at zero.

    Expects the core's DFA columns: position, token, head, score (one row per cell).
    """
    data = terms.copy()
    data["tick"] = [f"{p} {display_token(t)}" for p, t in zip(data["position"], data["token"], strict=True)]
    extent = _symmetric_extent(_numbers(data, "score"))
    token_only = "slice(datum.value, indexof(datum.value, ' ') + 1)"
    return readable(
        alt.Chart(data, title=title)
        .mark_rect()
        .encode(
            x=alt.X(
                "tick:N",
                sort=None,
                title="source token",
                axis=alt.Axis(labelExpr=token_only, labelAngle=-45, labelLimit=90, labelOverlap="greedy"),
            ),
            y=alt.Y("head:O", title="head"),
            color=alt.Color(
                "score:Q",
                scale=alt.Scale(scheme=DIVERGING_SCHEME, domain=[-extent, extent], domainMid=0),
                legend=alt.Legend(title="contribution", orient="bottom", gradientLength=160),
            ),
            tooltip=[
                alt.Tooltip("position:Q"),
                alt.Tooltip("token:N"),
                alt.Tooltip("head:O"),
                alt.Tooltip("score:Q", format="+.4f", title="contribution"),
            ],
        )
        # fit-x: the width fits the page and the height is the cells' own (Streamlit's default, fit, would squeeze
        # the rows into the height left after the rotated token labels and the legend).
        .properties(
            height=26 * max(1, len(set(data["head"]))),
            autosize=alt.AutoSizeParams(type="fit-x", contains="padding"),
            description=f"{title}: source tokens by heads",
        )
    )
