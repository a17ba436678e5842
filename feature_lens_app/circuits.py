"""Cached access to the connectome: the whole prompt's graph, rankings over many prompts and feature maps (a target
feature's graph is built by `graph_builds`, through the server's work queue).

Like `resources`, every function takes plain values and keeps its result in `st.cache_data`. The runs
over many prompts draw their own progress bar inside the cached function: the cache replays what a
cached function drew, and the bar is emptied when the run ends, so a cache hit shows nothing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import feature_lens_core as flc
from feature_lens_app import resources
from feature_lens_app.loading import progress_bar
from feature_lens_core import batch, clustering, connectome, hooks
from feature_lens_core.options import Direction, Method


@st.cache_data(max_entries=16, show_spinner=False)
def prediction_graph(
    model_name: str, sae_names: tuple[str, ...], prompt: str, node_threshold: float, edge_threshold: float
) -> connectome.Graph:
    """The whole prompt's attribution graph of the next-token prediction, pruned at the two thresholds."""
    return flc.attribution_graph(
        resources.model(model_name),
        resources.saes(model_name, sae_names),
        prompt,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )


@st.cache_data(max_entries=16, show_spinner=False)
def exact_effects(model_name: str, sae_names: tuple[str, ...], prompt: str, target: str) -> pd.DataFrame:
    """Every upstream node's exact effect on `target` (activation patching, zero baseline): a check of edges."""
    return flc.rank(
        resources.model(model_name),
        resources.saes(model_name, sae_names),
        prompt,
        flc.parse_target(target),
        method="activation",
        direction="upstream",
    )


def forward_order(model_name: str, sae_names: tuple[str, ...]) -> list[str]:
    """SAE names sorted by where they read in the forward pass (rows of a graph, earliest first)."""
    saes = resources.saes(model_name, sae_names)
    return sorted(saes, key=lambda name: (hooks.order(hooks.site(saes[name]).read), name))


def prompts(source: str, count: int, text: str) -> list[str]:
    """The prompt set of a batch run: `count` snippets of the built-in held-out plays, or one per line of `text`."""
    if source == "held-out":
        return flc.held_out_prompts(count)
    return [line.strip() for line in text.splitlines() if line.strip()]


@st.cache_data(max_entries=16, show_spinner=False)
def across_prompts(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt_set: tuple[str, ...],
    sae: str,
    feature: int,
    at: str,
    direction: Direction,
    method: Method,
) -> batch.BatchResult:
    """One feature's connections ranked on every prompt of the set, aggregated per edge."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)
    with progress_bar(f"Ranking {direction} on each prompt") as progress:
        return flc.rank_many(
            model,
            saes,
            list(prompt_set),
            flc.FeatureSpec(sae, feature, at),
            direction=direction,
            method=method,
            executor=resources.executor(),
            progress=progress,
        )


@st.cache_data(max_entries=8, show_spinner=False)
def feature_map(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt_set: tuple[str, ...],
    sae: str,
    method: Method,
    n_clusters: int,
) -> tuple[pd.DataFrame, clustering.Coherence]:
    """The features of `sae` placed and clustered by their connection profiles over the prompt set."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)
    with progress_bar("Profiling features on each prompt") as progress:
        profiles = clustering.connection_profiles(model, saes, list(prompt_set), sae, method=method, progress=progress)
    frame = clustering.cluster_features(profiles, saes, n_clusters=n_clusters)
    return frame, clustering.label_coherence(frame, permutations=200)
