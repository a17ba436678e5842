"""Features grouped by what they connect to: connection profiles over a prompt set, clusters, a 2-D map.

A feature's profile is its row of `batch.rank_many` mean scores: one column per upstream source
feature and one per downstream target feature (error nodes left out: nearly every feature has them as
partners, so they would dominate). Each side is scaled to unit length, so features cluster by the
pattern of their partners rather than by how strong their connections are, and the two sides weigh
the same. Clusters come from scikit-learn (k-means or agglomerative, Ward linkage); the map is the
profiles' first two principal components.

`label_coherence` measures whether clusters group features with related labels: the mean
Jaccard overlap of the quoted tokens in two features' labels, for pairs in the same cluster against
pairs in different clusters, with a permutation test over cluster assignments.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sae_lens import SAE
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data
from feature_lens_core.batch import BatchResult, Executor, FeatureSpec, Progress, rank_many
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.options import DIRECTIONS, Direction, Method
from feature_lens_core.ranking import has_side
from feature_lens_core.targets import FeatureRef

CLUSTERERS = ("kmeans", "agglomerative")
SIDES: tuple[Direction, ...] = DIRECTIONS
MAP_COLUMNS = ["sae", "feature", "label", "cluster", "x", "y", "occurrences"]
# A quoted token, as a built-in label quotes it (Python's repr: single quotes, double where the token holds a `'`).
QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'" r'|"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Profiles:
    """Connection profiles of features of SAE `sae`: `matrix` (one row per feature, indexed by feature;
    columns (side, sae, feature) of mean scores), `occurrences` per feature, and the batch runs behind them."""

    sae: str
    matrix: pd.DataFrame
    occurrences: pd.Series
    runs: dict[str, BatchResult]


def connection_profiles(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompts: Sequence[str],
    sae: str,
    *,
    method: Method = "attribution",
    at: str = "active",
    max_per_prompt: int | None = 8,
    min_occurrences: int = 2,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> Profiles:
    """Profiles of every feature of `sae` that occurs at least `min_occurrences` times on `prompts`.

    Each side is one `rank_many` run over every feature of `sae` (`FeatureSpec(sae, None, at,
    max_per_prompt)`); sides with no SAE in `saes` are skipped. `progress(done, total)` counts prompts
    over both runs.
    """
    if sae not in saes:
        raise FeatureLensError(f"SAE '{sae}' is not among the SAEs given ({', '.join(saes)}). Add it.")
    spec = FeatureSpec(sae, None, at, max_per_prompt)
    sides: list[Direction] = [s for s in SIDES if has_side(saes, FeatureRef(sae, 0, 0), s)]
    if not sides:
        raise FeatureLensError(f"No SAE given is upstream or downstream of '{sae}': add SAEs of other layers.")
    runs, columns = {}, []
    for number, side in enumerate(sides):
        report = None if progress is None else lambda d, n, k=number: progress(k * n + d, len(sides) * n)
        runs[side] = rank_many(
            model, saes, prompts, spec, direction=side, method=method, executor=executor, progress=report
        )
        edges = runs[side].edges
        edges = edges[edges.kind == "feature"]
        columns.append(
            edges.pivot_table(index="anchor_feature", columns=["sae", "feature"], values="mean_score", aggfunc="sum")
        )
    matrix = pd.concat(columns, axis=1, keys=sides).fillna(0.0)
    counts = runs[sides[0]].occurrences.feature.value_counts()
    keep = counts[counts >= min_occurrences].index.intersection(matrix.index).sort_values()
    return Profiles(sae, matrix.loc[keep], counts.loc[keep], runs)


def embedding(profiles: Profiles) -> np.ndarray:
    """The profile matrix with each side scaled to unit length per feature (zero sides stay zero)."""
    parts = []
    for side in profiles.matrix.columns.get_level_values(0).unique():
        block = profiles.matrix[side].to_numpy(dtype=np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        parts.append(np.divide(block, norms, out=np.zeros_like(block), where=norms > 0))
    return np.concatenate(parts, axis=1)


def cluster_features(
    profiles: Profiles,
    saes: Mapping[str, SAE],
    n_clusters: int = 8,
    method: str = "kmeans",
    seed: int = 0,
) -> pd.DataFrame:
    """Cluster the profiled features and place them on a 2-D map.

    Returns:
        DataFrame with columns sae, feature, label, cluster (0..n_clusters-1), x, y (first two principal
        components of the embedding) and occurrences, one row per feature, by cluster then feature.
    """
    if method not in CLUSTERERS:
        raise FeatureLensError(f"Unknown clustering {method!r}. Use one of: {', '.join(CLUSTERERS)}.")
    points = embedding(profiles)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or not 2 <= n_clusters <= len(points):
        raise FeatureLensError(
            f"n_clusters must be a whole number from 2 to the number of profiled features ({len(points)}); "
            f"got {n_clusters!r}. Use more prompts or a lower min_occurrences for more features."
        )
    if method == "kmeans":
        kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)  # pyright: ignore[reportArgumentType]
        clusters = kmeans.fit_predict(points)
    else:
        clusters = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(points)
    xy = np.zeros((len(points), 2))
    if points.shape[1] >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(points)
    labels = feature_data.feature_labels(saes[profiles.sae])
    features = profiles.matrix.index.to_numpy()
    frame = pd.DataFrame(
        {
            "sae": profiles.sae,
            "feature": features,
            "label": [labels[f] or f"#{f}" for f in features],
            "cluster": clusters,
            "x": xy[:, 0],
            "y": xy[:, 1],
            "occurrences": profiles.occurrences.loc[features].to_numpy(),
        },
        columns=MAP_COLUMNS,
    )
    return frame.sort_values(["cluster", "feature"], ignore_index=True)


def label_tokens(label: str) -> frozenset[str]:
    """The quoted tokens of a built-in label (`' this' (40%)`, `'ran' after 'o' (9%) → "'s"`), stripped and
    lower-cased."""
    tokens = (single or double for single, double in QUOTED.findall(label))
    return frozenset(t.strip().lower() for t in tokens if t.strip())


def overlaps(labels: Sequence[str]) -> np.ndarray:
    """Pairwise Jaccard overlap of the labels' token sets (0 where both are empty)."""
    sets = [label_tokens(label) for label in labels]
    out = np.zeros((len(sets), len(sets)))
    for i, j in itertools.combinations(range(len(sets)), 2):
        union = sets[i] | sets[j]
        out[i, j] = out[j, i] = len(sets[i] & sets[j]) / len(union) if union else 0.0
    return out


def _within_across(overlap: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    pairs = np.triu(np.ones_like(overlap, dtype=bool), k=1)
    same = pairs & (clusters[:, None] == clusters[None, :])
    other = pairs & ~same
    return float(overlap[same].mean()) if same.any() else 0.0, float(overlap[other].mean()) if other.any() else 0.0


@dataclass(frozen=True)
class Coherence:
    """Mean label-token overlap (Jaccard) of feature pairs within and across clusters, and the share of
    random reassignments of the same cluster sizes whose within - across gap is at least as large."""

    within: float
    across: float
    p_value: float


def label_coherence(frame: pd.DataFrame, permutations: int = 1000, seed: int = 0) -> Coherence:
    """Whether `cluster_features`' clusters group features with related labels (see Coherence)."""
    overlap = overlaps(list(frame.label))
    clusters = frame.cluster.to_numpy()
    within, across = _within_across(overlap, clusters)
    rng = np.random.default_rng(seed)
    gaps = [np.subtract(*_within_across(overlap, rng.permutation(clusters))) for _ in range(permutations)]
    p_value = (1 + sum(g >= within - across for g in gaps)) / (1 + permutations)
    return Coherence(within, across, float(p_value))
