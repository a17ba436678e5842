"""Running peer tools beside feature-lens on the same weights, for parity tests and benchmarks.

circuit-tracer pins older transformers than this project, so it runs in its own virtual environment, named by
`FEATURE_LENS_CIRCUIT_TRACER_PYTHON` (a Python with circuit-tracer==0.5.0), as a subprocess that reads the
model and transcoders from files (`circuit_tracer_graph.py` beside this file) and writes its graph as arrays.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save_file
from transformer_lens import HookedTransformer

from feature_lens_core.attribution_graph import AttributionGraph

CIRCUIT_TRACER_PYTHON = os.environ.get("FEATURE_LENS_CIRCUIT_TRACER_PYTHON", "")
SCRIPT = Path(__file__).with_name("circuit_tracer_graph.py")
CONFIG_FIELDS = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "n_ctx",
    "act_fn",
    "normalization_type",
    "positional_embedding_type",
    "d_vocab",
    "default_prepend_bos",
    "model_name",
)


def write_model(model: HookedTransformer, folder: Path) -> tuple[Path, Path]:
    """Write `model` as the zoo stores the built-in one: `model/` (config.json, model.safetensors) and
    `tokenizer/`. Returns the two folders."""
    model_dir, tokenizer_dir = folder / "model", folder / "tokenizer"
    model_dir.mkdir(parents=True)
    config = {field: getattr(model.cfg, field) for field in CONFIG_FIELDS}
    (model_dir / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(("IGNORE", "mask"))}
    save_file(state, str(model_dir / "model.safetensors"))
    assert model.tokenizer is not None
    model.tokenizer.save_pretrained(str(tokenizer_dir))
    return model_dir, tokenizer_dir


def circuit_tracer_graph(
    model_dir: Path,
    tokenizer_dir: Path,
    transcoder_dirs: Sequence[Path],
    tokens: Sequence[int],
    *,
    repeats: int = 1,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """circuit-tracer's `attribute()` on these files and token ids: its adjacency, active features (layer,
    position, feature), logit tokens and probabilities, and `seconds` (median time of `attribute()`)."""
    assert CIRCUIT_TRACER_PYTHON, "set FEATURE_LENS_CIRCUIT_TRACER_PYTHON to a Python with circuit-tracer==0.5.0"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "graph.npz"
        command = [CIRCUIT_TRACER_PYTHON, str(SCRIPT), str(model_dir), str(tokenizer_dir), str(out)]
        command += [str(d) for d in transcoder_dirs] + ["--tokens", ",".join(map(str, tokens))]
        done = subprocess.run(
            command + ["--repeats", str(repeats)], capture_output=True, text=True, timeout=1200, env=env
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with np.load(out) as arrays:
            return {name: arrays[name] for name in arrays.files}


def circuit_tracer_ids(theirs: dict[str, np.ndarray], graph: AttributionGraph) -> list[str]:
    """feature-lens node ids for circuit-tracer's nodes, in its order (features, errors by layer then
    position, tokens, logits), for a graph over transcoders named `L{layer}.transcoder`."""
    n_pos, n_layers = graph.n_tokens, graph.n_errors // graph.n_tokens
    ids = [f"L{layer}.transcoder:{feature}@{position}" for layer, position, feature in theirs["active_features"]]
    ids += [f"L{layer}.transcoder:error@{position}" for layer in range(n_layers) for position in range(n_pos)]
    ids += [f"tokens@{position}" for position in range(n_pos)]
    logits = graph.nodes[graph.nodes.kind == "logit"]
    assert logits.feature.tolist() == theirs["logit_tokens"].tolist(), "the two tools chose different logits"
    return ids + logits.id.tolist()


def aligned(graph: AttributionGraph, ids: list[str]) -> np.ndarray:
    """feature-lens's adjacency over the nodes `ids`, in that order (float64)."""
    index = graph.nodes.reset_index(drop=True).reset_index().set_index("id")["index"]
    rows = index.loc[ids].to_numpy()
    return graph.adjacency.numpy()[np.ix_(rows, rows)]
