"""Cached access to the connectome: feature graphs, rankings over many prompts and feature maps.

Like `resources`, every function takes plain values. The runs over many prompts report progress
to a bar drawn by the page, which `st.cache_data` cannot replay, so they are kept in a small
process-wide memo instead (the same sharing between sessions, without element replay).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd
import streamlit as st

from feature_lens_app import resources
from feature_lens_core import batch, clustering, connectome, hooks
from feature_lens_core.exclusive import exclusive
from feature_lens_core.ranking import FeatureRef

Progress = Callable[[int, int], None]


class _Memo:
    """The last `size` results by key, shared by every session; a failed computation is not kept."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
        result = compute()
        with self._lock:
            self._results[key] = result
            while len(self._results) > self._size:
                self._results.popitem(last=False)
        return result


_batches = _Memo(16)
_maps = _Memo(8)


@st.cache_data(max_entries=32, show_spinner=False)
def graph(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt: str,
    target: tuple[str, int, int],
    method: str,
    baseline: str,
    corrupt: str,
    direction: str,
    hops: int,
    budget: int,
) -> connectome.Graph:
    """The feature graph around `target`, `hops` deep, at most `budget` nodes."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)
    with exclusive():
        return connectome.build_graph(
            model,
            saes,
            prompt,
            FeatureRef(*target),
            method=method,
            direction=direction,
            hops=hops,
            node_budget=budget,
            baseline=baseline,
            corrupt_prompt=corrupt if baseline == "corrupt" else None,
        )


def forward_order(model_name: str, sae_names: tuple[str, ...]) -> list[str]:
    """SAE names sorted by where they read in the forward pass (rows of a graph, earliest first)."""
    saes = resources.saes(model_name, sae_names)
    return sorted(saes, key=lambda name: (hooks.order(hooks.site(saes[name]).read), name))


def prompts(source: str, count: int, text: str) -> list[str]:
    """The prompt set of a batch run: `count` snippets of the built-in held-out plays, or one per line of `text`."""
    if source == "held-out":
        return batch.held_out_prompts(count)
    return [line.strip() for line in text.splitlines() if line.strip()]


def across_prompts(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt_set: tuple[str, ...],
    sae: str,
    feature: int,
    at: str,
    direction: str,
    method: str,
    progress: Progress | None = None,
) -> batch.BatchResult:
    """One feature's connections ranked on every prompt of the set, aggregated per edge."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)
    key = (model_name, sae_names, prompt_set, sae, feature, at, direction, method)
    return _batches.get(
        key,
        lambda: batch.rank_many(
            model, saes, list(prompt_set), batch.FeatureSpec(sae, feature, at), direction, method, progress=progress
        ),
    )


def feature_map(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt_set: tuple[str, ...],
    sae: str,
    method: str,
    n_clusters: int,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, clustering.Coherence]:
    """The features of `sae` placed and clustered by their connection profiles over the prompt set."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)

    def compute() -> tuple[pd.DataFrame, clustering.Coherence]:
        profiles = clustering.connection_profiles(model, saes, list(prompt_set), sae, method=method, progress=progress)
        frame = clustering.cluster_features(profiles, saes, n_clusters=n_clusters)
        return frame, clustering.label_coherence(frame, permutations=200)

    return _maps.get((model_name, sae_names, prompt_set, sae, method, n_clusters), compute)
