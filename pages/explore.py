"""Explore: a prompt, a target feature, and the features that drive it and that it drives."""

import pandas as pd
import streamlit as st

from feature_lens_app import frame, resources, state, widgets

BARS = 20  # bars per chart; the table can show every ranked node
TITLES = {"upstream": "Upstream: what drives it", "downstream": "Downstream: what it drives"}

view = frame.view()
st.title("A feature's causes and effects", anchor=False)
st.caption(
    "Pick a target feature in the sidebar, from the tokens below, or by clicking a bar: the charts rank the "
    "features that push it up (orange) or hold it down (blue). The address bar always links to this view."
)
tokens = widgets.prompt_tokens(view)
shown: dict[str, pd.DataFrame] = {}

if tokens is not None:
    token = tokens[view.pos] if view.pos < len(tokens) else None
    st.markdown(f"**Target:** {widgets.target_text(view, token)} · {state.METHODS[view.method]}")
    with (
        st.expander("The prompt, shaded by how strongly the target fires", expanded=True),
        widgets.shown_errors("reading the prompt's features"),
    ):
        widgets.token_panel(view, tokens)

    with st.spinner("Ranking features…", show_time=True):
        outcomes = {d: widgets.attempt(lambda d=d: resources.ranked(view, d), f"ranking {d}") for d in view.directions}
    failures = [(exc, f"ranking {d}") for d, (_, exc) in outcomes.items() if exc is not None]
    if len(failures) == len(outcomes) and len({str(exc) for exc, _ in failures}) == 1:
        widgets.show_failures(failures)  # the same bad input broke both: say it once, full width
    else:
        for column, (direction, (result, failure)) in zip(st.columns(len(outcomes)), outcomes.items(), strict=True):
            with column:
                if result is None:
                    widgets.show_failure(failure, f"ranking {direction}")
                    continue
                key = f"bars_{direction}_{state.fingerprint(view)}"
                widgets.ranking_chart(widgets.labelled(result.frame.head(BARS), view.model), TITLES[direction], key)
                shown[direction] = result.frame
                st.caption(
                    f"{len(result.frame)} nodes ranked in {result.seconds:.2f} s. Click a bar to make it the target."
                )
                if result.note:
                    st.caption(result.note)
        st.caption("Grey bars with a dashed outline are error nodes: what the SAE fails to reconstruct.")
    resources.prefetch_other_methods(view)  # so that switching the method is instant

if shown:
    st.subheader("Table")
    everything = st.toggle("Show every ranked node, not only the charted ones", key="table_all")
    table = pd.concat(
        [(rows if everything else rows.head(BARS)).assign(direction=d) for d, rows in shown.items()], ignore_index=True
    )
    table = widgets.labelled(table, view.model)
    columns = ["direction", "sae", "layer", "kind", "feature", "label", "token", "position", "activation", "score"]
    table = table[[c for c in columns if c in table]]
    st.dataframe(table, hide_index=True, width="stretch", column_config=widgets.NUMBER_FORMAT)
    widgets.downloads(table, f"feature-lens-{view.sae}-{view.feature}-{view.pos}", key="explore")
