"""Compare methods: the cheap estimates against exact activation patching, for the current target."""

import pandas as pd
import streamlit as st

from feature_lens_app import charts, frame, hosting, interactions, loading, orientation, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core import agreement
from feature_lens_core.options import Direction, Method

TOP_K = 10
view = frame.view()
st.title("When can the cheap estimate be trusted?", anchor=False)
st.caption(
    "Each point is one node (a feature at a token, or an error node). On the dashed diagonal the estimate equals the "
    "exact effect measured by activation patching. Spearman near 1 and a high top-k overlap mean the cheap method "
    "ranks nodes like the exact one."
)
tokens = loading.prompt_tokens(view)
results: dict[tuple[Direction, Method], resources.Timed] = {}

if tokens is not None:
    orientation.target_line(view, tokens, feature=True)
    limits = hosting.limits()
    if limits.candidates:
        st.info(
            f"Hosted mode: activation patching scores only the {limits.candidates} nodes that attribution patching "
            "ranks highest, so only those are compared.",
            icon=":material/speed:",
        )
    jobs: list[tuple[Direction, Method]] = [(d, m) for d in view.directions for m in state.METHODS]
    progress = st.progress(0.0, text="Ranking with each method…")
    for done, (direction, method) in enumerate(jobs):
        progress.progress(done / len(jobs), text=f"{state.METHODS[method]}, {direction}…")
        with shown_errors(f"ranking {direction} features by {method}"):
            results[(direction, method)] = resources.ranked(view, direction, method)
    progress.empty()

for direction in view.directions:
    exact = results.get((direction, "activation"))
    estimates = {
        m: results[(direction, m)].frame for m in state.METHODS if m != "activation" and (direction, m) in results
    }
    if exact is None or not estimates:
        continue
    st.subheader(f"{direction.capitalize()} of the target", anchor=False)
    pairs = agreement.paired_scores(interactions.labelled(exact.frame, view.model), estimates)
    plot, numbers = st.columns([3, 2])
    interactions.draw_chart(charts.method_scatter(pairs), plot, width="stretch")
    with numbers:
        st.markdown("**Agreement with activation patching**")
        st.dataframe(
            agreement.agreement(pairs, k=TOP_K).drop(columns=["top_k", "nodes"]),
            hide_index=True,
            width="stretch",
            column_config={
                "spearman": st.column_config.NumberColumn("Spearman", format="%.2f"),
                "top_k_overlap": st.column_config.NumberColumn(f"top-{TOP_K} overlap", format="percent"),
                "recall_at_3k": st.column_config.NumberColumn(
                    f"found in top {3 * TOP_K}",
                    format="percent",
                    help=f"Share of the exact top {TOP_K} that this method ranks in its top {3 * TOP_K}: what "
                    f"activation patching of only its {3 * TOP_K} best candidates would find",
                ),
            },
        )
        st.markdown("**Cost of each method**")
        cost = pd.DataFrame(
            [
                {
                    "method": state.METHODS[m],
                    "seconds": results[(direction, m)].seconds,
                    "nodes": len(results[(direction, m)].frame),
                }
                for m in state.METHODS
                if (direction, m) in results
            ]
        )
        st.dataframe(
            cost,
            hide_index=True,
            width="stretch",
            column_config={"seconds": st.column_config.NumberColumn(format="%.3f")},
        )
        if exact.note:
            st.caption(exact.note)
