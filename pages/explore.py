"""Explore: a prompt, a target (a feature, or the model's next-token logit), and the features that drive it and
that it drives."""

import pandas as pd
import streamlit as st

from feature_lens_app import (
    charts,
    frame,
    interactions,
    loading,
    logit_target,
    orientation,
    resources,
    shipped,
    state,
    token_panel,
    tour,
    warmup,
)
from feature_lens_app.boundary import shown_errors
from feature_lens_core.options import Direction

CHART_BARS = 12  # bars per chart, so both charts fit above the fold at 1440x900
TABLE_ROWS = 20  # rows per direction in the table unless every ranked node is asked for
TWIN_COLUMNS = ["label", "activation", "score"]  # the label names the SAE, feature, token and position
TITLES = {"upstream": "Upstream: what drives it", "downstream": "Downstream: what it drives"}

view = frame.view()
on_feature = view.kind == "feature"
st.title("A feature's causes and effects" if on_feature else "Why the model predicts a token", anchor=False)
orientation.intro(view)
tour.box(view)
# On a fresh server the worked examples are drawn from their shipped results while the model loads.
early = shipped.lookup(view) if warmup.model_loading(view.model) else None
tokens = early.tokens if early is not None else loading.prompt_tokens(view)
shown: dict[str, pd.DataFrame] = {}
target = state.explored(view)
# A logit is the model's output: nothing is downstream of it.
directions: list[Direction] = view.directions if on_feature else ["upstream"]

if tokens is not None:
    switch, boxes = st.columns([5, 4] if view.kind == "diff" else [3, 2], vertical_alignment="bottom")
    with switch:
        logit_target.kind_switch()
    if not on_feature:
        with shown_errors("reading the model's predictions"):
            logit_target.token_choices(view, tokens, None if early is None else early.predictions, boxes=boxes)
    orientation.target_line(view, tokens, None if early is None else early.target_label)
    where = None
    if on_feature and early is None:
        with shown_errors("reading the prompt's features"):
            where = token_panel.token_strip(view, tokens)
    else:
        st.html(token_panel.highlighted_tokens(tokens, [0.0] * len(tokens), view.pos))
        if view.direction == "downstream":
            st.caption("A logit is the model's output, so nothing is downstream of it: what drives it is shown.")
    results: dict[str, resources.Timed] = {}
    if early is not None:
        results = {d: resources.Timed(early.rankings[d], 0.0, early.notes[d]) for d in directions}
    with st.spinner("Ranking features…", show_time=True):
        for direction in directions if early is None else []:
            with shown_errors(f"ranking {direction}"):
                results[direction] = resources.ranked(view, direction, target=target)
    extent = charts.shared_extent([result.frame.head(CHART_BARS) for result in results.values()])
    if results:
        for column, (direction, result) in zip(st.columns(len(results)), results.items(), strict=True):
            with column:
                key = f"bars_{direction}_{state.fingerprint(view)}"
                head = result.frame.head(CHART_BARS)
                rows = head if early is not None else interactions.labelled(head, view.model)  # shipped: labelled
                interactions.ranking_chart(rows, TITLES[direction], key, extent)
                interactions.chart_as_table(rows.loc[:, [c for c in TWIN_COLUMNS if c in rows]], f"twin_{direction}")
                shown[direction] = result.frame
                ranked_in = (
                    f"Precomputed for this worked example (the first {len(result.frame)} of "
                    f"{early.counts[direction]} nodes ranked); live results replace them once the model has loaded."
                    if early is not None
                    else f"{len(result.frame)} nodes ranked in {result.seconds:.2f} s."
                )
                note = f" {result.note}" if result.note else ""
                st.caption(f"{ranked_in} Click a bar to make it the target.{note}")
        st.caption(
            ("Both charts share one colour scale. " if len(results) > 1 else "")
            + "Grey bars with a dashed outline are error nodes: what the SAE fails to reconstruct."
        )
        st.page_link("pages/how_it_works.py", label="How the scores are computed: the four methods, in plain words")
    if where is not None:
        with shown_errors("reading the prompt's features"):
            token_panel.active_features(view, tokens, where)
    if early is None:  # with shipped results, the sidebar reruns the page once the model has loaded
        if on_feature:
            from feature_lens_app import attention_panel  # imports torch: not before the model has loaded

            attention_panel.dfa_section(view)  # only for a target of an attention SAE
        resources.prefetch_other_methods(view, directions, target=target)  # so that switching the method is instant

if shown:
    st.subheader("Table", anchor=False)
    everything = st.toggle(
        "Show every ranked node, not only the first ones",
        key="table_all",
        help=f"The table shows the first {TABLE_ROWS} nodes of each direction unless this is on.",
    )
    table = pd.concat(
        [(rows if everything else rows.head(TABLE_ROWS)).assign(direction=d) for d, rows in shown.items()],
        ignore_index=True,
    )
    table = table if early is not None else interactions.labelled(table, view.model)
    columns = ["direction", "sae", "layer", "kind", "feature", "label", "token", "position", "activation", "score"]
    table = table.loc[:, [c for c in columns if c in table]]
    box = interactions.expander_drawn_when_open("Show the table", "explore_table")
    if box is not None:
        box.dataframe(table, hide_index=True, width="stretch", column_config=interactions.NUMBER_FORMAT)
    st.caption(f"{len(table)} rows; the downloads below are these rows.")
    stem = f"{view.sae}-{view.feature}" if on_feature else view.kind
    interactions.downloads(table, f"feature-lens-{stem}-{view.pos}", key="explore")
