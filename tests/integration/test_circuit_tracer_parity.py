"""Whole-prompt graphs over transcoders equal circuit-tracer 0.5.0's `attribute()` on the same weights.

circuit-tracer runs in its own virtual environment (its pins clash with this project's), named by
`FEATURE_LENS_CIRCUIT_TRACER_PYTHON`; these tests are skipped without it. Its graph is built from the same
files (tests/peers/circuit_tracer_graph.py) and compared edge by edge: feature, error and token sources, logit
and feature targets, cross-position edges included. circuit-tracer computes in float32, so agreement is to
float32 precision relative to the largest edge.

One difference is by definition: circuit-tracer zeroes every node at the BOS position (its features are not
nodes, its error nodes have no edges), where feature-lens keeps them. The comparison is over circuit-tracer's
nodes; the BOS error columns are checked to be zero on its side and left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feature_lens_core import loading
from feature_lens_core.attribution_graph import AttributionGraph, adjacency
from feature_lens_core.validation import prompt_tokens
from feature_lens_core.zoo import paths
from tests.helpers import PROMPT, random_transcoders, tiny_model
from tests.peers import CIRCUIT_TRACER_PYTHON, aligned, circuit_tracer_graph, circuit_tracer_ids, write_model

pytestmark = pytest.mark.skipif(
    not CIRCUIT_TRACER_PYTHON,
    reason="set FEATURE_LENS_CIRCUIT_TRACER_PYTHON to a Python with circuit-tracer==0.5.0 to run its own check",
)


def _compare(graph: AttributionGraph, theirs: dict[str, np.ndarray]) -> float:
    """The largest difference between the two adjacencies over circuit-tracer's nodes, relative to the
    largest edge; asserts the node sets match up to the BOS position."""
    ids = circuit_tracer_ids(theirs, graph)
    ours_features = set(graph.nodes.id[(graph.nodes.kind == "feature") & (graph.nodes.position > 0)])
    assert set(ids[: len(theirs["active_features"])]) == ours_features
    bos_errors = np.array([":error@0" in i for i in ids])
    assert not theirs["adjacency"][:, bos_errors].any()
    ours = aligned(graph, ids)[:, ~bos_errors]
    mine = theirs["adjacency"].astype(np.float64)[:, ~bos_errors]
    assert np.abs(mine).max() > 0.1
    return float(np.abs(ours - mine).max() / np.abs(mine).max())


@torch.no_grad()
def test_the_built_in_models_transcoder_graph_equals_circuit_tracers():
    model = loading.load_model("toy")
    names = [f"L{layer}.transcoder" for layer in range(model.cfg.n_layers)]
    saes = {name: loading.load_sae("toy", name) for name in names}
    prompt = "O Romeo, Romeo, wherefore art thou Romeo?"
    graph = adjacency(model, saes, prompt)
    tokens = prompt_tokens(model, prompt)[0].tolist()
    theirs = circuit_tracer_graph(paths.MODEL_DIR, paths.TOKENIZER_DIR, [paths.SAES_DIR / n for n in names], tokens)
    assert _compare(graph, theirs) < 1e-5


@torch.no_grad()
def test_a_tiny_random_models_transcoder_graph_equals_circuit_tracers(tmp_path: Path):
    model = tiny_model(n_layers=3, seed=4)
    transcoders = random_transcoders(model, d_sae=48, firing=0.25, seed=5)
    model_dir, tokenizer_dir = write_model(model, tmp_path)
    folders = []
    for name, sae in transcoders.items():
        sae.save_model(str(tmp_path / name))
        folders.append(tmp_path / name)
    graph = adjacency(model, transcoders, PROMPT)
    theirs = circuit_tracer_graph(model_dir, tokenizer_dir, folders, prompt_tokens(model, PROMPT)[0].tolist())
    assert graph.n_features > len(theirs["active_features"]) > 100  # theirs lacks only the BOS position's
    assert _compare(graph, theirs) < 1e-5
