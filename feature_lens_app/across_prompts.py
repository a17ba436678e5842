"""Across prompts, drawn: a target's connections over a set of prompts (strength against how often each holds,
clickable to make a partner the target) and the feature map of its SAE."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from feature_lens_app import charts, circuits, interactions, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core.options import Direction

TO_EXPLORE = "_fl_to_explore"  # a click asked to open Explore (switching pages is not allowed in a callback)
EDGE_TABLE = ["label", "sae", "layer", "kind", "feature", "mean_score", "frequency", "prompts", "occurrences"]
EDGE_FORMAT = {
    "mean_score": st.column_config.NumberColumn("mean score", format="%+.4f", help="Its mean score where it holds"),
    "frequency": st.column_config.NumberColumn(
        "holds", format="%.0f%%", help="The share of the target's occurrences where this edge is there"
    ),
    "prompts": st.column_config.NumberColumn(help="On how many prompts it holds"),
}


def explore_feature(model: str, prompt_set: tuple[str, ...], per_prompt: pd.DataFrame, sae: str, feature: int) -> None:
    """Make a feature of an edge the target on Explore, on the prompt of the set where that edge is strongest, at
    the token where the feature fires most there (a callback). `per_prompt` names each prompt by its index in
    `prompt_set`."""
    if feature < 0:
        st.toast("An error node is what the SAE fails to explain; it cannot be a target.", icon=":material/info:")
        return
    rows = per_prompt.loc[(per_prompt["sae"] == sae) & (per_prompt["feature"] == feature)]
    strongest = rows.loc[rows["score"].abs().idxmax(), "prompt"] if len(rows) else None
    prompt = prompt_set[int(strongest)] if strongest is not None else st.session_state["prompt"]
    acts = resources.activations(model, sae, prompt)
    fired = acts.loc[acts["feature"] == feature]
    position = int(fired.loc[fired["activation"].idxmax(), "position"]) if len(fired) else 0
    st.session_state["prompt"] = prompt
    state.set_target(sae, feature, position)
    st.session_state[TO_EXPLORE] = True


def _picked_edge(
    key: str, rows: pd.DataFrame, prompt_set: tuple[str, ...], per_prompt: pd.DataFrame, model: str
) -> None:
    """Chart or table selection callback: the chosen edge's feature becomes the target on Explore."""
    picked = st.session_state.get(key)
    chosen = charts.selected_rows(picked, charts.PICK)
    if not chosen and picked is not None and "selection" in picked and picked["selection"].get("rows"):
        chosen = [rows.iloc[picked["selection"]["rows"][0]].to_dict()]
    if chosen:
        explore_feature(model, prompt_set, per_prompt, str(chosen[0]["sae"]), int(chosen[0]["feature"]))


def edge_section(view: state.ViewState, prompt_set: tuple[str, ...], at: str, direction: Direction) -> None:
    """One direction's connections of the target over the prompt set: the strength-against-frequency chart,
    its table (both clickable) and the downloads."""
    result = None
    with shown_errors(f"ranking {direction} across prompts"):
        result = circuits.across_prompts(
            view.model, view.saes, prompt_set, view.sae, view.feature, at, direction, view.method
        )
    if result is None:
        return
    edges = result.edges
    st.markdown(
        f"**{direction.capitalize()}**: the feature occurs on {result.occurrences['prompt'].nunique()} of "
        f"{result.n_prompts} prompts ({len(result.occurrences)} occurrences)."
    )
    if edges.empty:
        st.caption("No connection found: the feature does not fire on these prompts, or no SAE is on this side.")
        return
    shown = edges.head(200).assign(frequency=100 * edges["frequency"].head(200).astype(float))
    shown = shown.loc[:, [c for c in EDGE_TABLE if c in shown]].reset_index(drop=True)
    chart_key = f"edges_{direction}_{state.fingerprint(view, prompt_set, at)}"
    interactions.draw_chart(
        charts.edge_frequency(edges.head(200)),
        key=chart_key,
        on_select=lambda k=chart_key, r=shown, p=result.per_prompt: _picked_edge(k, r, prompt_set, p, view.model),
        selection_mode=charts.PICK,
        width="stretch",
    )
    st.caption(
        "Each point is a feature (squares: error nodes) connected to the target. Right: the connection is there "
        "on most of the target's occurrences; high or low: it is strong when it is there (orange pushes the "
        "target up, blue holds it down). Click a point or a row to make that feature the target on Explore, on "
        "the prompt where the connection is strongest."
    )
    table_key = f"edge_rows_{direction}_{state.fingerprint(view, prompt_set, at)}"
    st.dataframe(
        shown,
        key=table_key,
        on_select=lambda k=table_key, r=shown, p=result.per_prompt: _picked_edge(k, r, prompt_set, p, view.model),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        column_config=EDGE_FORMAT,
    )
    interactions.downloads(
        edges, f"feature-lens-{view.sae}-{view.feature}-{direction}-prompts", key=f"batch_{direction}"
    )


def cluster_section(view: state.ViewState, prompt_set: tuple[str, ...], clusters: int) -> None:
    """The feature map of the target's SAE over the prompt set: features placed by their connections, in
    `clusters` groups, with what the axes and the coherence test mean in words."""
    found = None
    with shown_errors("clustering features"):
        found = circuits.feature_map(view.model, view.saes, prompt_set, view.sae, view.method, clusters)
    if found is not None:
        points, coherence = found
        key = f"map_{state.fingerprint(view, prompt_set, clusters)}"
        interactions.draw_chart(
            charts.cluster_map(points),
            key=key,
            on_select=interactions.open_clicked_feature(key, view.pos),
            selection_mode=charts.PICK,
            width="stretch",
        )
        st.caption(
            f"{len(points)} features of {view.sae} fire at least twice on these prompts and are placed here (more "
            "prompts place more). Each feature is described by its scores to every partner, upstream and "
            "downstream; the two axes are the two directions along which these descriptions differ most "
            "(principal components), so nearby points have similar partners. Clusters are groups of similar "
            "descriptions (k-means), told apart by colour and shape."
        )
        verdict = (
            "so the clusters group features whose labels share words more than chance would"
            if coherence.p_value < 0.05
            else "which chance alone does often, so these clusters say little about what the features mean"
        )
        st.caption(
            f"Do clusters mean something? Two features' labels share {coherence.within:.0%} of their words on "
            f"average within a cluster and {coherence.across:.0%} across clusters. Shuffling the features among "
            f"clusters of the same sizes gives a gap at least this large {coherence.p_value:.0%} of the time "
            f"(p = {coherence.p_value:.3f}), {verdict}."
        )
