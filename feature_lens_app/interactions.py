"""Charts and tables a user acts on: a click on a bar, a graph node, a map point, a table row or a
neighbour button makes that feature the target; downloads give exactly the rows shown."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import altair as alt
import pandas as pd
import streamlit as st
from altair.utils import schemapi
from streamlit.delta_generator import DeltaGenerator

from feature_lens_app import charts, pictures, resources, state
from feature_lens_app.markup import code, plain

if TYPE_CHECKING:  # the connectome imports torch; the Explore page draws without it
    from feature_lens_core.connectome import Graph

OPEN_FEATURE = "open_feature"
NUMBERS = {"activation": "%.3f", "score": "%+.4f"}  # printf formats, for data grids and plain tables alike
NUMBER_FORMAT = {
    "activation": st.column_config.NumberColumn(
        format=NUMBERS["activation"], help="How strongly the feature fires at its token"
    ),
    "score": st.column_config.NumberColumn(
        format=NUMBERS["score"],
        help="How much the target changes when this node is switched off (positive: it pushes it up)",
    ),
}


def target_text(view: state.ViewState, token: str | None = None, label: str | None = None) -> str:
    """The target in words for headings (markdown; user text is escaped), with its `label` (by default, read)."""
    label = resources.label(view.model, view.sae, view.feature) if label is None else label
    named = f", labelled *{plain(label)}*," if label else ""
    at = f" at {plain(charts.display_token(token))}" if token is not None else ""
    return f"the feature **#{view.feature}** of {code(view.sae)}{named} as it fires{at} (position {view.pos})"


def labelled(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """Ranking rows with readable bar labels."""
    return charts.add_labels(frame, resources.labeller(model))


def _pick_target(key: str, param: str, position: int | None = None) -> bool:
    """Chart-click callback: the clicked mark becomes the target, at its own position or else `position`.

    Returns whether it did: nothing may be selected, and error nodes cannot be targets.
    """
    rows = charts.selected_rows(st.session_state.get(key), param)
    if not rows:
        return False
    row = rows[0]
    if row.get("kind") in ("token", "logit"):
        st.toast(
            "Tokens and logits are the graph's ends, not features: click a feature to open it.", icon=":material/info:"
        )
        return False
    if row.get("kind") == "error" or int(row.get("feature", -1)) < 0:
        st.toast("An error node is what the SAE fails to explain; it cannot be a target.", icon=":material/info:")
        return False
    state.set_target(str(row["sae"]), int(row["feature"]), int(row.get("position", position or 0)))
    return True


def open_clicked_feature(key: str, position: int | None = None) -> Callable[[], None]:
    """Chart-click callback for graphs and maps: the clicked feature becomes the target (at the node's
    position, or `position`) and `follow_to_feature` opens its Feature page on the rerun."""

    def callback() -> None:
        if _pick_target(key, charts.PICK, position):
            st.session_state[OPEN_FEATURE] = True

    return callback


def follow_to_feature() -> None:
    """Open the Feature page if a click asked for it (switching pages is not allowed inside a callback)."""
    if st.session_state.pop(OPEN_FEATURE, False):
        st.switch_page("pages/feature.py")


# Altair checks each schema object it makes against Vega-Lite's JSON schema ("debug mode"): about 5 ms a chart on
# every run. The tests validate every builder's whole spec instead (see `draw_chart`).
schemapi.disable_debug_mode()


def draw_chart(chart: alt.TopLevelMixin, where: DeltaGenerator | None = None, **options: Any) -> Any:
    """Draw an Altair chart; `options` as for `st.vega_lite_chart` (key, on_select, width, height...).

    `st.altair_chart` validates the chart against Vega-Lite's JSON schema on every run, about 0.06 s a
    chart here, which a click pays once per chart on the page. Every builder in `feature_lens_app.charts`
    is validated by the tests instead (tests/app/test_charts.py), so the spec is passed on as it is.
    """
    return (where or st).vega_lite_chart(spec=chart.to_dict(validate=False), **options)


def ranking_chart(frame: pd.DataFrame, title: str, key: str, extent: float) -> None:
    """A ranked bar chart on the colour scale ±`extent`; clicking a bar makes it the new target.

    The chart sits in a container keyed by its digest (`pictures.container_key`), with its picture above it when
    one was taken (the worked examples): the picture shows until the chart has drawn."""
    if frame.empty:
        st.info(f"{title}: nothing to rank. Add SAEs on this side of the target in the sidebar.")
        return
    spec = charts.ranked_bars(frame, title, extent=extent).to_dict(validate=False)  # see `draw_chart`
    drawn = pictures.digest(spec)
    with st.container(key=pictures.container_key(key, drawn)):
        picture = pictures.markdown(drawn)
        if picture is not None:
            st.markdown(picture)
            st.markdown(pictures.STYLE, unsafe_allow_html=True)

        def pick() -> None:
            _pick_target(key, charts.PICK)

        st.vega_lite_chart(spec=spec, key=key, on_select=pick, selection_mode=charts.PICK, width="stretch")


def expander_drawn_when_open(label: str, key: str) -> DeltaGenerator | None:
    """An expander whose contents the caller draws only while it is open (returned then, else None).

    It tracks its state, so opening or closing it reruns the page, and it stays open from one view to the next:
    `key` and `label` do not change with the view (both make the widget's identity), and a run that does not draw
    it (an error in its place, another page) does not close it, since Streamlit drops an undrawn widget's state
    and the copy kept here gives it back."""
    kept = f"_fl_open_{key}"
    if key not in st.session_state and st.session_state.get(kept):
        st.session_state[key] = True
    box = st.expander(label, key=key, on_change="rerun")
    st.session_state[kept] = bool(box.open)
    return box if box.open else None


def chart_as_table(rows: pd.DataFrame, key: str) -> None:
    """A chart's rows as a plain HTML table, for a keyboard or a screen reader, drawn only while its expander is
    open (a data grid in a closed expander was mounted by the browser on every redraw all the same)."""
    box = expander_drawn_when_open("Show as a table", key)
    if box is not None:
        numbers = {column: rows[column].map(form.__mod__) for column, form in NUMBERS.items() if column in rows}
        texts = {column: rows[column].map(plain) for column in ("label", "token") if column in rows}
        box.table(rows.assign(**numbers, **texts), hide_index=True)  # st.table renders markdown in its cells


def downloads(frame: pd.DataFrame, stem: str, key: str) -> None:
    """CSV and JSON downloads of exactly the rows shown (a download does not rerun the page: nothing changed).

    Each file is made when its button is pressed, not on every run of the page."""
    left, right = st.columns(2)
    left.download_button(
        "Download CSV",
        functools.partial(frame.to_csv, index=False),
        f"{stem}.csv",
        "text/csv",
        key=f"{key}_csv",
        width="stretch",
        on_click="ignore",
        help="The rows of the table, as comma-separated values",
    )
    right.download_button(
        "Download JSON",
        lambda: json.dumps(json.loads(frame.to_json(orient="records") or "[]"), indent=1),
        f"{stem}.json",
        "application/json",
        key=f"{key}_json",
        width="stretch",
        on_click="ignore",
        help="The rows of the table, as a JSON list of records",
    )


def graph_downloads(found: Graph, name: str, *, table: pd.DataFrame | None = None) -> None:
    """A graph's circuit-tracer graph file, and its edges as a table (`table`, else `found.edges`) with their
    CSV and JSON downloads."""
    st.download_button(
        "Download as a circuit-tracer graph file",
        found.to_circuit_tracer_json(slug=name),
        file_name=f"{name}.json",
        mime="application/json",
        key="graph_circuit_tracer",
        help="circuit-tracer's graph-file JSON: open it in circuit-tracer's graph frontend or Neuronpedia's graph "
        "viewer. Each SAE of the graph is one row there, in forward order.",
    )
    with st.expander("Edges as a table"):
        shown = found.edges if table is None else table
        st.dataframe(shown, hide_index=True, width="stretch")
        downloads(shown, name, key="graph")


def neighbour_buttons(rows: pd.DataFrame, key: str) -> None:
    """One button per ranked feature; clicking it makes that feature the target."""
    if rows.empty:
        st.caption("None: add SAEs on this side of the target in the sidebar.")
        return
    for index, row in enumerate(rows.to_dict("records")):
        st.button(
            f"{plain(str(row['label']))}  ({row['score']:+.3f})",
            key=f"{key}_{index}",
            on_click=state.set_target,
            args=(str(row["sae"]), int(row["feature"]), int(row["position"])),
            width="stretch",
            help="Make this feature the target",
        )
