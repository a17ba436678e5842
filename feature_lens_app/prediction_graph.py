"""The graph page's first view: why the model predicts its next token, as circuit-tracer draws it.

The whole prompt's attribution graph (`feature_lens_core.attribution_graph`), pruned by influence on the
most probable next tokens, each edge through attention split by head; its replacement, completeness and
faithfulness scores in plain words; and a check of the edges into the prediction against the exact effect of
ablating each source.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from feature_lens_app import attention_panel, charts, circuits, interactions, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core.attribution_graph import TOKEN_NODE
from feature_lens_core.connectome import LOGIT_NODE, Graph
from feature_lens_core.targets import node_id

DRAWN_EDGES = 400  # beyond a few hundred lines a graph is a hairball, and the browser slows down


def draw(view: state.ViewState, tokens: list[str]) -> None:
    """The SAE set, thresholds, the pruned graph, its scores, the edge check, heads and the downloads."""
    view = _with_node_set(view)
    left, right = st.columns(2)
    nodes = left.slider(
        "Keep nodes carrying this share of the influence",
        0.5,
        0.95,
        0.8,
        step=0.05,
        key="graph_node_threshold",
        help="circuit-tracer's node threshold: the most influential nodes, in order, until they carry this share "
        "of all influence on the predicted tokens.",
    )
    edges = right.slider(
        "Keep edges carrying this share",
        0.9,
        0.99,
        0.98,
        step=0.01,
        key="graph_edge_threshold",
        help="circuit-tracer's edge threshold, applied to the edges among the kept nodes.",
    )
    found = None
    with st.spinner("Attributing every node of the prompt…", show_time=True), shown_errors("building the graph"):
        found = circuits.prediction_graph(view.model, view.saes, view.prompt, nodes, edges)
    if found is None:
        return
    _predictions(found)
    order = [
        TOKEN_NODE,
        *[n for n in circuits.forward_order(view.model, view.saes) if n in set(found.nodes.sae)],
        LOGIT_NODE,
    ]
    edges = attention_panel.edge_heads(view, found)
    table = found.edges if edges is None else found.edges.assign(**{"top heads": edges["top heads"]})
    drawn = table.head(DRAWN_EDGES)
    key = f"graph_{state.fingerprint(view, 'prediction', nodes, edges)}"
    interactions.draw_chart(
        charts.graph_chart(found.nodes, drawn, order, tokens),
        key=key,
        on_select=interactions.open_clicked_feature(key),
        selection_mode=charts.PICK,
        width="stretch",
        height=charts.GRAPH_ROW * max(2, len(order)) + 130,
    )
    shown = f"the strongest {DRAWN_EDGES} of {len(found.edges)} edges drawn" if len(found.edges) > DRAWN_EDGES else ""
    st.caption(f"{len(found.nodes)} nodes, {len(found.edges)} edges" + (f" ({shown})." if shown else "."))
    _scores(found)
    _edge_check(view, found)
    if edges is not None:
        attention_panel.graph_heads(view, found, edges, tokens)
    interactions.graph_downloads(found, "feature-lens-graph-prediction", table=table)


def _with_node_set(view: state.ViewState) -> state.ViewState:
    """The view with the SAEs the graph is built from: the model's transcoders (circuit-tracer's setting, and the
    default where the model has them) or the sidebar's set."""
    transcoders = tuple(name for name in resources.sae_options(view.model) if name.endswith("transcoder"))
    if not transcoders:
        return view
    sets = {"transcoders": f"Transcoders ({', '.join(transcoders)})", "sidebar": "The sidebar's SAEs"}
    chosen = st.segmented_control(
        "Nodes from",
        list(sets),
        format_func=sets.__getitem__,
        default="transcoders",
        key="graph_node_set",
        help="circuit-tracer builds its graphs from transcoders, which replace each MLP and leave attention "
        "open (its edges then run through frozen attention patterns). The sidebar's set can cover attention too.",
    )
    return replace(view, saes=transcoders) if chosen != "sidebar" else view


def _predictions(found: Graph) -> None:
    logits = found.nodes.loc[found.nodes.kind == "logit"]
    likely = ["".join(charts.logit_shown(str(label))) for label in logits.label]
    probable = [text for text in likely if not text.endswith("(p = 0.00)")]
    rest = len(likely) - len(probable)
    more = f", and {rest} more under 1% each" if rest else ""
    st.markdown(f"**The model's next token** after the last one: {', '.join(probable)}{more}.")


def _scores(found: Graph) -> None:
    full, pruned, kept = found.scores, found.pruned_scores, found.faithfulness
    if full is None or pruned is None:
        return
    first, second, third = st.columns(3)
    first.metric(
        "Replacement score",
        f"{pruned.replacement:.0%}",
        help=f"Full graph: {full.replacement:.0%}. Of the influence that inputs have on the prediction, the share "
        "that starts at tokens rather than at error nodes (what the SAEs fail to explain): 100% when every path "
        "from the prompt to the prediction runs through features.",
    )
    second.metric(
        "Completeness score",
        f"{pruned.completeness:.0%}",
        help=f"Full graph: {full.completeness:.0%}. Each node's inputs that are not error nodes, averaged with "
        "weights (how much the node matters to the prediction).",
    )
    if kept is not None:
        third.metric(
            "Faithfulness",
            f"{kept.score:.0%}" if kept.score == kept.score else "n/a",
            help=f"Switching off every feature outside the graph leaves the top prediction's centred logit at "
            f"{kept.kept:.3f} (clean run {kept.full:.3f}, every feature off {kept.empty:.3f}): (kept − all off) / "
            "(clean − all off), in the local replacement model: attention patterns, LayerNorm scales and error "
            "nodes held at their clean values, as circuit-tracer's interventions hold them.",
        )
    st.caption(
        "Replacement and completeness are circuit-tracer's graph scores (its `graph.py`) for the pruned graph "
        "(the full graph's in each tooltip): how much of the graph of direct edges runs through features. "
        "Faithfulness switches features off for real, in the model with its attention and errors held."
    )


def _edge_check(view: state.ViewState, found: Graph) -> None:
    """The edges into the top prediction beside the exact effect of ablating each source (one patched run each)."""
    with st.expander("Check the edges into the prediction against activation patching"):
        st.caption(
            "A direct edge is the linear effect along paths through no other node, with attention patterns and "
            "LayerNorm scales frozen. The exact effect switches the source off (to zero) in a real run, every path "
            "included. Where the two disagree, the linear graph should not be trusted for that source."
        )
        if not st.button("Run the check", key="graph_check", icon=":material/fact_check:"):
            return
        exact = None
        with st.spinner("Patching each source…", show_time=True), shown_errors("checking the edges"):
            exact = circuits.exact_effects(view.model, view.saes, view.prompt, found.target)
        if exact is None:
            return
        into = found.edges.loc[found.edges.target == found.target].head(15)
        ids = exact.assign(
            id=[node_id(s, int(f), int(p)) for s, f, p in zip(exact.sae, exact.feature, exact.position, strict=True)]
        )
        table = into.merge(ids[["id", "score"]], left_on="source", right_on="id", how="left", suffixes=("", "_exact"))
        table = pd.DataFrame({"source": table.source, "direct edge": table.score, "exact effect": table.score_exact})
        st.dataframe(table, hide_index=True, width="stretch")
