"""clustering: profiles are rank_many's mean scores, clusters and the map cover them, label coherence is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_lens_core.clustering import (
    MAP_COLUMNS,
    cluster_features,
    connection_profiles,
    embedding,
    label_coherence,
    label_tokens,
)
from feature_lens_core.errors import FeatureLensError
from tests.helpers import PROMPTS

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def picked(saes):
    return {name: saes[name] for name in ("L0.resid_pre", "L0.attn_z", "L1.resid_pre", "L1.attn_z", "L2.resid_pre")}


@pytest.fixture(scope="module")
def profiles(model, picked):
    calls = []
    found = connection_profiles(
        model,
        picked,
        PROMPTS,
        "L1.resid_pre",
        at="last",
        max_per_prompt=4,
        min_occurrences=1,
        progress=lambda d, n: calls.append((d, n)),
    )
    assert calls[-1] == (6, 6) and len(calls) == 6
    return found


def test_profiles_are_the_batch_mean_scores(profiles):
    matrix = profiles.matrix
    assert set(matrix.columns.get_level_values(0)) == {"upstream", "downstream"}
    assert set(matrix.columns.get_level_values(1)) == {"L0.resid_pre", "L0.attn_z", "L1.attn_z", "L2.resid_pre"}
    assert list(matrix.index) == sorted(profiles.runs["upstream"].occurrences.feature.unique())
    for side, run in profiles.runs.items():
        edges = run.edges[run.edges.kind == "feature"]
        for edge in edges.sample(30, random_state=0).itertuples():
            assert matrix.loc[edge.anchor_feature, (side, edge.sae, edge.feature)] == edge.mean_score
        assert (matrix[side].abs().sum(axis=1) > 0).all()
    points = embedding(profiles)
    half = matrix["upstream"].shape[1]
    for part in (points[:, :half], points[:, half:]):
        assert np.linalg.norm(part, axis=1) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_clusters_and_map_cover_every_profiled_feature(profiles, picked, method):
    frame = cluster_features(profiles, picked, n_clusters=3, method=method)
    assert list(frame.columns) == MAP_COLUMNS
    assert sorted(frame.feature) == list(profiles.matrix.index)
    assert set(frame.cluster) == {0, 1, 2}
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()
    assert (frame.label == [f"#{f}" for f in frame.feature]).all()  # the tiny SAEs have no labels
    assert (frame.occurrences >= 1).all()


def test_label_coherence_on_known_groups():
    assert label_tokens("' thou' after ' art' (84%) · \"'s\" (5%) → ','") == {"thou", "art", "'s", ","}
    assert label_tokens('"ran"/"o" → "ak"') == {"ran", "o", "ak"}  # the labels' earlier form reads the same
    assert label_tokens('" world" after " the"') == {"world", "the"}
    assert label_tokens('"\\n" after "\\n"') == {"\\n"}
    labels = ['" this"', '" this"/"a"', '"b"', '"b" after "c"', '"d"', '"d"', '"e"', '"e"/"e"']
    frame = pd.DataFrame({"label": labels, "cluster": [0, 0, 1, 1, 2, 2, 3, 3]})
    result = label_coherence(frame, permutations=200)
    assert result.within == pytest.approx((1 / 2 + 1 / 2 + 1 + 1) / 4)
    assert result.across == 0.0
    assert result.p_value < 0.05  # 1 in 105 ways to pair 8 features puts the equal labels together
    shuffled = label_coherence(frame.assign(cluster=[0, 1, 2, 3, 0, 1, 2, 3]), permutations=200)
    assert shuffled.within == 0.0 and shuffled.p_value > 0.5


def test_bad_clustering_arguments_are_refused(model, picked, profiles):
    with pytest.raises(FeatureLensError, match="n_clusters must be"):
        cluster_features(profiles, picked, n_clusters=1)
    with pytest.raises(FeatureLensError, match="n_clusters must be"):
        cluster_features(profiles, picked, n_clusters=1000)
    with pytest.raises(FeatureLensError, match="Unknown clustering"):
        cluster_features(profiles, picked, method="dbscan")
    with pytest.raises(FeatureLensError, match="not among the SAEs"):
        connection_profiles(model, picked, PROMPTS, "L2.mlp_out")
    with pytest.raises(FeatureLensError, match="No SAE given is upstream or downstream"):
        connection_profiles(model, {"L1.resid_pre": picked["L1.resid_pre"]}, PROMPTS, "L1.resid_pre")
