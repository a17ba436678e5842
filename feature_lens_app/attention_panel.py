"""Attention opened into heads, for two pages: on Explore, a target of an attention (hook_z) SAE with its input
split by source token and head (direct feature attribution) as a heatmap; on the graph page, the graph's edges split by
head and, for an edge through a head, that head's attention score split into query and
key features (QK attribution)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from feature_lens_app import charts, interactions, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core import hooks
from feature_lens_core.connectome import Graph
from feature_lens_core.heads import direct_feature_attribution, edge_head_loadings
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
        interactions.draw_chart(
            charts.dfa_heatmap(terms, title), key=f"dfa_{state.target_fingerprint(view)}", width="stretch"
        )
        st.caption(
            "Each cell is one head's output from one source token, A[h, q, s] · v[s, h], read by the feature's "
            f"encoder (direct feature attribution). The cells sum to the feature's pre-activation minus its bias "
            f"term ({bias:+.3f}); attention patterns are the model's own."
        )


TOP_HEADS = 3  # heads named per edge: more would not fit a table cell or a tooltip
QK_KEYS = ("qk_layer", "qk_head", "qk_query", "qk_key")  # the head and positions the QK split is of


@st.cache_data(max_entries=16, show_spinner=False)
def _edge_heads(
    model_name: str, sae_names: tuple[str, ...], prompt: str, edges: tuple[tuple[str, int, int, str], ...]
) -> pd.DataFrame:
    """Each edge (source SAE, feature or -1 for an error node, position; target) split by the last head its paths
    pass, all at once: its strongest heads in words ("top heads") and the strongest one's layer and head (-1 where
    no path runs through a head)."""
    pairs = [(FeatureRef(sae, feature, position), parse_target(target)) for sae, feature, position, target in edges]
    splits = edge_head_loadings(resources.model(model_name), resources.saes(model_name, sae_names), prompt, pairs)
    tops = [split.top(TOP_HEADS) for split in splits]
    return pd.DataFrame(
        {
            "top heads": [", ".join(f"L{layer}H{head} {score:+.3g}" for layer, head, score in top) for top in tops],
            "layer": [top[0][0] if top else -1 for top in tops],
            "head": [top[0][1] if top else -1 for top in tops],
        }
    )


def edge_heads(view: state.ViewState, graph: Graph) -> pd.DataFrame | None:
    """The graph's edges with their strongest heads: `graph.edges` plus "top heads" (empty for an edge from a
    token or through no open head) and the strongest head's layer and head (-1 if none); None on an error."""
    nodes = graph.nodes.set_index("id")
    split = graph.edges.source.map(nodes.kind).isin(["feature", "error"]).to_numpy()
    into = graph.edges.loc[split]
    edges = tuple(
        (str(nodes.sae[s]), int(nodes.feature[s]), int(nodes.position[s]), str(t))
        for s, t in zip(into.source, into.target, strict=True)
    )
    found = None
    with st.spinner("Splitting the edges by head…", show_time=True), shown_errors("splitting the edges by head"):
        found = _edge_heads(view.model, view.saes, view.prompt, edges) if edges else None
    out = graph.edges.assign(**{"top heads": "", "layer": -1, "head": -1})
    if found is None:
        return out if not edges else None
    out.loc[split, ["top heads", "layer", "head"]] = found.to_numpy()
    return out.astype({"layer": int, "head": int})


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


def graph_heads(view: state.ViewState, graph: Graph, edges: pd.DataFrame, tokens: list[str]) -> None:
    """The graph page's attention section: pick an edge that runs through a head (`edges` from `edge_heads`) and
    see why its strongest head attended from the target's token to the source's, in query and key features."""
    st.subheader("Attention, opened up", anchor=False)
    through = edges.loc[edges.layer >= 0]
    positions = graph.nodes.set_index("id").position
    choices = {
        int(i): (int(through.layer[i]), int(through["head"][i]), int(positions[through.target[i]]), int(positions[s]))
        for i, s in zip(through.index, through.source, strict=True)
    }
    if not choices:
        st.info(
            "Every attention layer these edges could pass is covered by a chosen attention SAE, so no edge runs "
            "through a head: what the heads do shows up as attention features, nodes of their own. Leave an "
            "attention SAE out of the set to see its heads here.",
            icon=":material/info:",
        )
    else:
        st.caption(
            "Each direct edge splits exactly into the part that bypasses every uncovered attention layer plus one "
            "term per head, each path counted under the last head it passes; the edge table and the edges' "
            "tooltips name the strongest heads (edges from tokens are not split)."
        )
        key = f"graph_qk_edge_{state.fingerprint(view, graph.target, len(graph.edges))}"
        st.selectbox(
            "Why did a head look there? Pick an edge that runs through attention",
            list(choices),
            format_func=lambda i: f"{through.source[i]} → {through.target[i]}   ({through['top heads'][i]})",
            index=None,
            placeholder=f"{len(choices)} edges, strongest first",
            key=key,
            on_change=_choose_edge,
            args=(key, choices),
            help="Opens the attention score of the edge's strongest head from the target's token (the query) to "
            "the source's (the key), split into the features on each side.",
        )
    default = next(iter(choices.values()), (resources.layer_count(view.model) - 1, 0, len(tokens) - 1, 0))
    _qk_section(view, tokens, default)


def _choose_edge(key: str, choices: dict[int, tuple[int, int, int, int]]) -> None:
    """Selectbox callback: the chosen edge's strongest head and (target, source) positions become the QK split's."""
    chosen = st.session_state.get(key)
    if chosen is not None:
        st.session_state.update(zip(QK_KEYS, choices[chosen], strict=True))


def _qk_section(view: state.ViewState, tokens: list[str], default: tuple[int, int, int, int]) -> None:
    """One head's attention score from a query position to a key position, split into query and key features:
    the inputs start at `default` (layer, head, query, key) and follow the edge picked above."""
    limits = (resources.layer_count(view.model) - 1, _heads(view.model) - 1, len(tokens) - 1, len(tokens) - 1)
    for name, start, top in zip(QK_KEYS, default, limits, strict=True):
        if not 0 <= int(st.session_state.get(name, start)) <= top:  # a shorter prompt or a smaller model
            st.session_state[name] = min(start, top)
        st.session_state.setdefault(name, start)
    labels = ("Layer", "Head", "From position (query)", "To position (key)")
    columns = st.columns(4)
    layer, head, query, key = (
        int(column.number_input(label, 0, top, key=name))
        for column, label, top, name in zip(columns, labels, limits, QK_KEYS, strict=True)
    )
    with shown_errors("splitting the attention score"):
        found = _qk(view.model, view.saes, view.prompt, layer, head, query, key)
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
