"""Issue 7 end to end on the built-in model: graph, integrated gradients, batch runs, clusters, directions, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from feature_lens_core.batch import FeatureSpec, held_out_prompts, rank_many
from feature_lens_core.clustering import cluster_features, connection_profiles, label_coherence
from feature_lens_core.connectome import build_graph, faithfulness
from feature_lens_core.directions import direction_sae, steering_vector
from feature_lens_core.ranking import FeatureRef, activations, rank
from scripts.connectome_report import LOVE, PARTITION, WAR

pytestmark = pytest.mark.integration
PROMPT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
Q = 20


@pytest.fixture(scope="module")
def picked(toy_saes):
    """The built-in SAEs that partition what L2.resid_pre reads, and L2.resid_pre."""
    return {name: toy_saes[name] for name in [*PARTITION, "L2.resid_pre"]}


@pytest.fixture(scope="module")
def target(toy_model, picked):
    acts = activations(toy_model, picked["L2.resid_pre"], PROMPT)
    return FeatureRef("L2.resid_pre", int(acts[acts.position == Q].iloc[0].feature), Q)


def test_graph_and_faithfulness(toy_model, picked, target):
    graph = build_graph(toy_model, picked, PROMPT, target, hops=2, node_budget=12, baseline="mean")
    nodes = graph.nodes
    assert 6 <= len(nodes) <= 13 and set(nodes.hop) == {0, 1, 2}
    features = nodes[nodes.kind == "feature"]
    assert all(label and not label.startswith("#") for label in features.label)  # the shipped labels
    faith = graph.faithfulness
    assert faith is not None and math.isfinite(faith.score)
    assert faith.full == pytest.approx(float(nodes.activation.iloc[0]), rel=1e-5)
    active = pd.concat(
        [activations(toy_model, picked[n], PROMPT).assign(sae=n) for n in PARTITION]
        + [pd.DataFrame({"sae": n, "feature": -1, "position": range(Q + 1)}) for n in PARTITION]
    )
    # With the zero baseline, setting the inactive features to their baseline changes nothing.
    assert faithfulness(toy_model, picked, PROMPT, target, active).score == pytest.approx(1.0)


def test_integrated_gradients_in_both_directions(toy_model, picked, target):
    up = rank(toy_model, picked, PROMPT, target, direction="upstream", method="integrated")
    assert len(up) > 100 and up.score.abs().is_monotonic_decreasing
    row = up[up.kind == "feature"].iloc[0]
    source = FeatureRef(row.sae, int(row.feature), int(row.position))
    down = rank(toy_model, picked, PROMPT, source, direction="downstream", method="integrated")
    match = down[(down.sae == target.sae) & (down.feature == target.feature) & (down.position == Q)]
    assert match.score.iloc[0] == pytest.approx(row.score, rel=1e-4)


def test_batch_over_held_out_text(toy_model, picked):
    prompts = held_out_prompts(3)
    spec = FeatureSpec("L2.resid_pre", None, "last", max_per_prompt=2)
    result = rank_many(toy_model, picked, prompts, spec, direction="upstream", method="direct")
    assert len(result.occurrences) == 6 and result.edges.frequency.between(0, 1).all()
    first = result.occurrences.iloc[0]
    frame = rank(
        toy_model,
        picked,
        prompts[0],
        FeatureRef(spec.sae, int(first.feature), int(first.position)),
        direction="upstream",
        method="direct",
    )
    summed = frame.groupby(["sae", "kind", "feature"]).score.sum()
    mine = result.per_prompt[(result.per_prompt.prompt == 0) & (result.per_prompt.anchor_feature == first.feature)]
    for row in mine.itertuples():
        assert row.score == pytest.approx(summed.loc[(row.sae, row.kind, row.feature)], rel=1e-9)


def test_a_steering_vector_is_a_feature(toy_model, picked):
    hook = "blocks.1.hook_resid_pre"
    saes = {n: picked[n] for n in ("L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L2.resid_pre")}
    saes["love-war"] = direction_sae(toy_model, hook, steering_vector(toy_model, hook, LOVE, WAR), "love-war")
    prompt = LOVE[0]
    acts = activations(toy_model, saes["love-war"], prompt)
    position = int(acts.sort_values("activation").position.iloc[-1])
    target = FeatureRef("love-war", 0, position)
    up = rank(toy_model, saes, prompt, target, direction="upstream", method="attribution")
    down = rank(toy_model, saes, prompt, target, direction="downstream", method="attribution")
    assert set(up.sae) == {"L0.resid_pre", "L0.attn_z", "L0.transcoder"} and set(down.sae) == {
        "L1.attn_z",
        "L2.resid_pre",
    }
    source = FeatureRef(up.sae.iloc[0], int(up.feature.iloc[0]), int(up.position.iloc[0]))
    if source.feature >= 0:
        as_target = rank(toy_model, saes, prompt, source, direction="downstream", method="attribution")
        assert "love-war" in set(as_target.sae)
    graph = build_graph(toy_model, saes, prompt, target, direction="both", hops=1, node_budget=8)
    assert graph.faithfulness is not None and len(graph.nodes) == 9


@pytest.mark.slow
def test_clusters_of_the_built_in_model(toy_model, picked):
    profiles = connection_profiles(
        toy_model, picked, held_out_prompts(4), "L1.transcoder", at="last", max_per_prompt=6, min_occurrences=1
    )
    frame = cluster_features(profiles, picked, n_clusters=3)
    assert len(frame) == len(profiles.matrix) >= 6 and set(frame.cluster) == {0, 1, 2}
    assert 0 <= label_coherence(frame, permutations=50).p_value <= 1


@pytest.mark.slow
def test_cli_graph_and_batch_as_subprocesses(tmp_path, target):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "feature_lens_core", *args], capture_output=True, text=True, timeout=300
        )

    graph = cli(
        "graph",
        "--model",
        "toy",
        "--prompt",
        PROMPT,
        "--feature",
        f"{target.sae}:{target.feature}@{Q}",
        "--saes",
        ",".join(PARTITION),
        "--node-budget",
        "8",
        "--format",
        "json",
    )
    assert graph.returncode == 0, graph.stderr
    assert len(json.loads(graph.stdout)["nodes"]) == 9
    out = tmp_path / "edges.parquet"
    many = cli(
        "batch",
        "--model",
        "toy",
        "--held-out",
        "2",
        "--feature",
        "L2.resid_pre",
        "--saes",
        "L1.attn_z",
        "--direction",
        "upstream",
        "--method",
        "direct",
        "--max-per-prompt",
        "1",
        "--out",
        str(out),
    )
    assert many.returncode == 0, many.stderr
    assert len(pd.read_parquet(out)) > 0
