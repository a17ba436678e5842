"""Circuit graph: why the model predicts its next token (the whole prompt's graph), or a target feature's causes
and effects several hops deep; and how much of it each graph explains."""

import streamlit as st

from feature_lens_app import (
    charts,
    circuits,
    frame,
    graph_builds,
    interactions,
    loading,
    orientation,
    prediction_graph,
    state,
)
from feature_lens_app.boundary import shown_errors
from feature_lens_core.options import GraphDirection

SIDES: dict[GraphDirection, str] = {"upstream": "Upstream", "both": "Both", "downstream": "Downstream"}

GRAPHS = {"prediction": "The next-token prediction", "feature": "The target feature"}

view = frame.view()
st.title("The circuit graph", anchor=False)
st.caption(
    "Rows are SAEs in forward order, earliest at the bottom; columns are tokens. Orange edges support their "
    "target, blue ones suppress it; grey squares are error nodes (what an SAE fails to explain). Click a "
    "feature to open its dashboard."
)
tokens = loading.prompt_tokens(view)

interactions.follow_to_feature()

of = st.segmented_control(
    "Graph of",
    list(GRAPHS),
    format_func=GRAPHS.__getitem__,
    default="prediction",
    key="graph_of",
    help="The next-token prediction: why the model predicts what it does after the prompt, every node of the "
    "prompt attributed at once and pruned by influence (circuit-tracer's graph). The target feature: its causes "
    "and effects, expanded hop by hop from the target in the sidebar.",
)
if tokens is not None and of != "feature":
    st.caption(
        "Every active feature, error node and token of the prompt, with its direct edges (attention patterns "
        "and LayerNorm scales frozen) to the most probable next tokens and to each other, then pruned to the "
        "nodes and edges that carry most of the influence on the prediction."
    )
    prediction_graph.draw(view, tokens)
elif tokens is not None:
    st.caption(
        "Each hop ranks the causes (or effects) of every feature found at the hop before and keeps the strongest edges."
    )
    orientation.target_line(view, tokens, feature=True)
    side, hops, budget = st.columns(3)
    direction = side.segmented_control(
        "Expand",
        list(SIDES),
        format_func=SIDES.__getitem__,
        default="upstream",
        key="graph_side",
        help="Grow the graph towards the target's causes, its effects, or both.",
    )
    depth = hops.slider("Hops", 1, 3, 2, key="graph_hops", help="How many steps away from the target to expand.")
    nodes = budget.slider(
        "Node budget",
        6,
        60,
        24,
        step=2,
        key="graph_budget",
        help="The most nodes the graph may hold; more is slower (each node added before the last hop is ranked). "
        f"A graph of more than {graph_builds.CONFIRM_RANKINGS} rankings asks before it starts.",
    )
    grow: GraphDirection = "upstream"  # until the control has a value
    for side_name in SIDES:
        grow = side_name if side_name == direction else grow
    found = None
    with shown_errors("building the graph"):
        found = graph_builds.build(view, grow, depth, nodes)
    if found is not None:
        order = [n for n in circuits.forward_order(view.model, view.saes) if n in set(found.nodes["sae"])]
        key = f"graph_{state.fingerprint(view, direction, depth, nodes)}"
        interactions.draw_chart(
            charts.graph_chart(found.nodes, found.edges, order, tokens),
            key=key,
            on_select=interactions.open_clicked_feature(key),
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
        interactions.graph_downloads(found, f"feature-lens-graph-{view.sae}-{view.feature}-{view.pos}")
