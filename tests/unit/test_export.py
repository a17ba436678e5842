"""Graphs exported as circuit-tracer's graph-file JSON: the schema its frontend reads (circuit-tracer 0.5.0's
`frontend/graph_models.py`), checked here field by field, and by circuit-tracer's own pydantic model when a
Python with circuit-tracer installed is named in FEATURE_LENS_CIRCUIT_TRACER_PYTHON (its pins clash with
this project's, so it lives in a venv of its own: docs/connectome.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from feature_lens_core import cli
from feature_lens_core.connectome import build_graph
from feature_lens_core.targets import FeatureRef, LogitRef
from tests.helpers import PROMPT

pytestmark = pytest.mark.unit
# Field -> type of circuit-tracer's frontend models (Metadata, QParams, Node, links).
METADATA = {"slug": str, "scan": str, "transcoder_list": list, "prompt_tokens": list, "prompt": str}
QPARAMS = {"pinnedIds": list, "supernodes": list, "linkType": str, "clickedId": str, "sg_pos": str}
NODE = {
    "node_id": str,
    "feature": int,
    "layer": str,
    "ctx_idx": int,
    "feature_type": str,
    "token_prob": float,
    "is_target_logit": bool,
    "run_idx": int,
    "reverse_ctx_idx": int,
    "jsNodeId": str,
    "clerp": str,
}


def _logit_graph(model, saes):
    q = 9
    with torch.no_grad():
        token = int(model(model.to_tokens(PROMPT))[0, q].argmax())
    chosen = {n: saes[n] for n in ["L0.attn_z", "L0.transcoder", "L1.transcoder", "L2.resid_pre"]}
    return build_graph(model, chosen, PROMPT, LogitRef(token, q), method="direct", hops=2, node_budget=10)


def _check_schema(graph_file: dict) -> None:
    for key, kind in METADATA.items():
        assert isinstance(graph_file["metadata"][key], kind), key
    for key, kind in QPARAMS.items():
        assert isinstance(graph_file["qParams"][key], kind), key
    ids = [node["node_id"] for node in graph_file["nodes"]]
    assert len(ids) == len(set(ids))
    for node in graph_file["nodes"]:
        for key, kind in NODE.items():
            assert isinstance(node[key], kind), (key, node)
    for link in graph_file["links"]:
        assert {link["source"], link["target"]} <= set(ids) and isinstance(link["weight"], float)


def test_a_logit_graph_exports_in_circuit_tracers_layout(model, saes, tmp_path: Path):
    graph = _logit_graph(model, saes)
    path = tmp_path / "graph.json"
    text = graph.to_circuit_tracer_json(path, slug="tiny")
    assert path.read_text(encoding="utf-8") == text
    graph_file = json.loads(text)
    _check_schema(graph_file)
    meta = graph_file["metadata"]
    assert meta["slug"] == "tiny" and meta["prompt"] == PROMPT and len(meta["prompt_tokens"]) == len(graph.tokens)
    rows = meta["transcoder_list"]
    assert rows == sorted(rows, key=["L0.attn_z", "L0.transcoder", "L1.transcoder", "L2.resid_pre"].index)
    logits = [n for n in graph_file["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == 1 and logits[0]["is_target_logit"] and logits[0]["layer"] == str(len(rows) + 1)
    assert len(graph_file["links"]) == len(graph.edges)
    weights = sorted(link["weight"] for link in graph_file["links"])
    assert weights == pytest.approx(sorted(graph.edges.score.tolist()))


def test_a_feature_graph_exports_too(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 8), 8)
    graph = build_graph(model, saes, PROMPT, target, method="attribution", hops=1, node_budget=6)
    _check_schema(json.loads(graph.to_circuit_tracer_json()))


def test_the_cli_writes_the_graph_file(toy_model, capsys):
    status = cli.main(
        ["graph", "--model", "toy", "--prompt", "To be, or not to be, that is the", "--logit", " king"]
        + ["--position", "11", "--saes", "L1.transcoder,L2.transcoder", "--hops", "1", "--node-budget", "4"]
        + ["--format", "circuit-tracer"]
    )
    assert status == 0
    graph_file = json.loads(capsys.readouterr().out)
    _check_schema(graph_file)
    assert graph_file["metadata"]["scan"] == "feature-lens/shakespeare-3l"


@pytest.mark.skipif(
    not os.environ.get("FEATURE_LENS_CIRCUIT_TRACER_PYTHON"),
    reason="set FEATURE_LENS_CIRCUIT_TRACER_PYTHON to a Python with circuit-tracer==0.5.0 to run its own check",
)
def test_circuit_tracers_own_model_reads_the_file(model, saes, tmp_path: Path):
    path = tmp_path / "graph.json"
    _logit_graph(model, saes).to_circuit_tracer_json(path)
    check = (
        "import sys; from circuit_tracer.frontend.graph_models import Model; "
        "print(len(Model.model_validate_json(open(sys.argv[1]).read()).nodes))"
    )
    out = subprocess.run(
        [os.environ["FEATURE_LENS_CIRCUIT_TRACER_PYTHON"], "-c", check, str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(json.loads(path.read_text())["nodes"])
