"""Attention opened into heads, for two pages: on Explore, a target of an attention (hook_z) SAE with its input
split by source token and head (direct feature attribution) as a heatmap; on the graph page, the edges into the
prediction split by head and one head's attention score split into query and key features (QK attribution)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from feature_lens_app import charts, interactions, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core import hooks
from feature_lens_core.connectome import Graph
from feature_lens_core.heads import direct_feature_attribution, head_loadings_many
from feature_lens_core.qk import QKAttribution, qk_attribution
from feature_lens_core.targets import FeatureRef, parse_target


@st.cache_data(max_entries=16, show_spinner=False)
def _terms(model_name: str, sae_name: str, prompt: str, feature: int, position: int) -> tuple[pd.DataFrame, float]:
    """The DFA terms and the bias term of one attention feature (cached per view)."""
    found = direct_feature_attribution(
        resources.model(model_name), resources.sae(model_name, sae_name), prompt, feature=feature, position=position
    )
    return found.terms, found.bias


def dfa_section(view: state.ViewState) -> None:
    """For an attention SAE target, a heatmap of its pre-activation by source token and head; else nothing."""
    with shown_errors("splitting the feature's input by head"):
        if hooks.site(resources.sae(view.model, view.sae)).kind != "attn_z":
            return
        terms, bias = _terms(view.model, view.sae, view.prompt, view.feature, view.pos)
        st.subheader("Which heads and tokens feed it", anchor=False)
        title = f"{view.sae} #{view.feature} at position {view.pos}: its input by source token and head"
        interactions.draw_chart(charts.dfa_heatmap(terms, title), key=f"dfa_{state.fingerprint(view)}", width="stretch")
        st.caption(
            "Each cell is one head's output from one source token, A[h, q, s] · v[s, h], read by the feature's "
            f"encoder (direct feature attribution). The cells sum to the feature's pre-activation minus its bias "
            f"term ({bias:+.3f}); attention patterns are the model's own."
        )


@st.cache_data(max_entries=16, show_spinner=False)
def _edge_heads(
    model_name: str, sae_names: tuple[str, ...], prompt: str, sources: tuple[tuple[str, int, int], ...], target: str
) -> pd.DataFrame:
    """Each edge from `sources` (sae, feature or -1 for an error node, position) into `target` split by the last
    head its paths pass (one row each)."""
    refs = [FeatureRef(*source) for source in sources]
    splits = head_loadings_many(
        resources.model(model_name), resources.saes(model_name, sae_names), prompt, refs, parse_target(target)
    )
    rows = []
    for source, split in zip(refs, splits, strict=True):
        top = split.heads.loc[split.heads.score != 0].head(3)
        heads = ", ".join(f"L{r.layer}H{r.head} {r.score:+.3g}" for r in top.itertuples())
        rows.append(
            {"source": str(source), "edge": split.edge, "bypassing attention": split.residual, "top heads": heads}
        )
    return pd.DataFrame(rows)


@st.cache_data(max_entries=16, show_spinner=False)
def _qk(
    model_name: str, sae_names: tuple[str, ...], prompt: str, layer: int, head: int, query: int, key: int
) -> QKAttribution:
    return qk_attribution(
        resources.model(model_name),
        resources.saes(model_name, sae_names),
        prompt,
        layer=layer,
        head=head,
        query_position=query,
        key_position=key,
    )


def graph_heads(view: state.ViewState, graph: Graph, tokens: list[str]) -> None:
    """The graph page's attention section: the strongest edges into the graph's target split by head, and one
    head's attention score from a query to a key position split into query and key features."""
    st.subheader("Attention, opened up", anchor=False)
    nodes = graph.nodes.set_index("id")
    into = graph.edges.loc[graph.edges.target == graph.target]
    into = into.loc[into.source.map(nodes.kind).isin(["feature", "error"])].head(8)
    if len(into):
        with shown_errors("splitting the edges by head"):
            sources = tuple((str(nodes.sae[i]), int(nodes.feature[i]), int(nodes.position[i])) for i in into.source)
            table = _edge_heads(view.model, view.saes, view.prompt, sources, graph.target)
            st.markdown("**The strongest edges into the prediction, by the attention head that carries them**")
            if not (table["top heads"].str.len() > 0).any():
                st.info(
                    "Every attention layer these edges could pass is covered by a chosen attention SAE, so no edge "
                    "runs through a head: what the heads do shows up as attention features, nodes of their own. "
                    "Leave an attention SAE out of the set to see its heads here.",
                    icon=":material/info:",
                )
                table = table.drop(columns="top heads")
            st.dataframe(table, hide_index=True, width="stretch")
            st.caption(
                "Each direct edge split exactly: the part that bypasses every uncovered attention layer, plus one "
                "term per head (each path counted under the last head it passes). A layer whose attention SAE is "
                "chosen carries nothing here: its features are nodes of their own."
            )
    n_layers, n_heads = resources.layer_count(view.model), _heads(view.model)
    st.markdown("**Why did a head look there?** Its attention score from one token to an earlier one, in features")
    columns = st.columns(4)
    layer = columns[0].number_input("Layer", 0, n_layers - 1, n_layers - 1, key="qk_layer")
    head = columns[1].number_input("Head", 0, n_heads - 1, 0, key="qk_head")
    query = columns[2].number_input("From position", 0, len(tokens) - 1, len(tokens) - 1, key="qk_query")
    key = columns[3].number_input("To position", 0, int(query), 0, key="qk_key")
    with shown_errors("splitting the attention score"):
        found = _qk(view.model, view.saes, view.prompt, int(layer), int(head), int(query), int(key))
        st.caption(
            f"Head {found.head} of layer {found.layer}, from {tokens[found.query_position]!r} (position "
            f"{found.query_position}) to {tokens[found.key_position]!r} (position {found.key_position}): score "
            f"{found.score:+.3f} before the softmax, attention {found.pattern:.1%}. Each side's rows sum to the "
            "score (the other side summed over); LayerNorm is frozen at its clean scale."
        )
        left, right = st.columns(2)
        left.markdown("Query side (the attending token)")
        left.dataframe(found.queries.head(10), hide_index=True, width="stretch")
        right.markdown("Key side (the token attended to)")
        right.dataframe(found.keys.head(10), hide_index=True, width="stretch")


def _heads(model_name: str) -> int:
    return int(resources.model(model_name).cfg.n_heads)
