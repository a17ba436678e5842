"""Circuit graph: the target's causes and effects, several hops deep, and how much of it they explain."""

import streamlit as st

from feature_lens_app import circuits, frame, state, widgets
from feature_lens_core import charts

SIDES = {"upstream": "Upstream", "both": "Both", "downstream": "Downstream"}

view = frame.view()
st.title("The circuit around a feature", anchor=False)
st.caption(
    "Each hop ranks the causes (or effects) of every feature found at the hop before and keeps the strongest "
    "edges. Rows are SAEs in forward order, earliest at the bottom; columns are tokens. Orange edges support "
    "their target, blue ones suppress it; grey squares are error nodes. Click a node to open its dashboard."
)
tokens = widgets.prompt_tokens(view)

widgets.follow_to_feature()

if tokens is not None:
    token = tokens[view.pos] if view.pos < len(tokens) else None
    st.markdown(f"**Target:** {widgets.target_text(view, token)} · {state.METHODS[view.method]}")
    side, hops, budget = st.columns(3)
    direction = side.segmented_control(
        "Expand", list(SIDES), format_func=SIDES.get, default="upstream", key="graph_side"
    )
    depth = hops.slider("Hops", 1, 3, 2, key="graph_hops")
    nodes = budget.slider("Node budget", 6, 60, 24, step=2, key="graph_budget")
    with st.spinner("Expanding the graph…", show_time=True):
        found, failure = widgets.attempt(
            lambda: circuits.graph(
                view.model,
                view.saes,
                view.prompt,
                (view.sae, view.feature, view.pos),
                view.method,
                view.baseline,
                view.corrupt,
                direction or "upstream",
                depth,
                nodes,
            ),
            "building the graph",
        )
    if failure is not None:
        widgets.show_failure(failure, "building the graph")
    elif found is not None:
        order = [n for n in circuits.forward_order(view.model, view.saes) if n in set(found.nodes["sae"])]
        key = f"graph_{state.fingerprint(view, direction, depth, nodes)}"
        widgets.draw_chart(
            charts.graph_chart(found.nodes, found.edges, order, tokens),
            key=key,
            on_select=widgets.open_clicked_feature(key),
            selection_mode=charts.PICK,
            width="stretch",
            height=charts.GRAPH_ROW * max(2, len(order)) + 130,  # Streamlit would squeeze a layered chart
        )
        kept = found.faithfulness
        if kept is not None:
            left, middle, right = st.columns(3)
            left.metric("Faithfulness", f"{kept.score:.0%}" if kept.score == kept.score else "n/a")
            middle.metric("Target, clean run", f"{kept.full:.3f}")
            right.metric(
                "Only the graph's nodes kept", f"{kept.kept:.3f}", help=f"Everything ablated: {kept.empty:.3f}"
            )
            st.caption(
                "Faithfulness sets every upstream node outside the graph to the baseline and asks how much of the "
                "target's activation is left: (kept − all ablated) / (clean − all ablated). A feature usually rests "
                "on many small causes, so a small graph can explain little of it (here, raise the node budget); "
                "Sparse Feature Circuits needs hundreds of nodes for high faithfulness on real models."
            )
        st.caption(f"{len(found.nodes)} nodes, {len(found.edges)} edges.")
        with st.expander("Edges as a table"):
            st.dataframe(found.edges, hide_index=True, width="stretch")
            widgets.downloads(found.edges, f"feature-lens-graph-{view.sae}-{view.feature}-{view.pos}", key="graph")
