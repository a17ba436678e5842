"""circuit-tracer 0.5.0's `attribute()` on a model folder and SAE-Lens transcoder folders, from the files alone.

Run with a Python that has circuit-tracer installed (its pins clash with this project's, so it lives in its
own virtual environment; feature-lens is not imported here):

    $CT_PYTHON tests/peers/circuit_tracer_graph.py MODEL_DIR TOKENIZER_DIR OUT.npz TC_DIR [TC_DIR ...]
        --tokens 0,12,7 [--repeats 3]

`MODEL_DIR` holds `config.json` (a HookedTransformerConfig's fields) and `model.safetensors` (a
HookedTransformer's state dict); each `TC_DIR` an SAE-Lens transcoder of one layer, in layer order
(`cfg.json` reading `blocks.L.ln2.hook_normalized` and writing `blocks.L.hook_mlp_out`, ReLU,
`sae_weights.safetensors`). The replacement model is built the way circuit-tracer's README builds one from
local weights: `ReplacementModel.from_config` with the model's weights under circuit-tracer's module names
(`mlp.*` -> `mlp.old_mlp.*`, `unembed.*` -> `unembed.old_unembed.*`) and SAE-Lens's `W_enc` transposed.
Token ids are passed, not text (circuit-tracer's text path assumes a BOS id other than 0).

Writes `OUT.npz`: `adjacency` (circuit-tracer's node order: active features, errors by layer then position,
tokens, logits), `active_features` (layer, position, feature per row), `logit_tokens`, `logit_probabilities`
and `seconds` (the median wall time of `attribute()` over `--repeats` runs, the model already built).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from circuit_tracer import ReplacementModel, attribute
from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
from safetensors.torch import load_file
from transformer_lens import HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

RENAMED = {"mlp.": "mlp.old_mlp.", "unembed.": "unembed.old_unembed."}


def _transcoder(folder: Path, layer: int) -> SingleLayerTranscoder:
    cfg = json.loads((folder / "cfg.json").read_text())
    hooks = (cfg["metadata"]["hook_name"], cfg["metadata"]["hook_name_out"])
    assert hooks == (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"), hooks
    weights = load_file(str(folder / "sae_weights.safetensors"))
    transcoder = SingleLayerTranscoder(
        cfg["d_in"], cfg["d_sae"], torch.nn.ReLU(), layer, dtype=torch.float32, device=torch.device("cpu")
    )
    transcoder.load_state_dict(
        {"W_enc": weights["W_enc"].T, "W_dec": weights["W_dec"], "b_enc": weights["b_enc"], "b_dec": weights["b_dec"]}
    )
    return transcoder


def _tokenizer(folder: Path, saved: str) -> PreTrainedTokenizerBase:
    # The folder's tokenizer_config.json is transformers 5's; circuit-tracer pins transformers 4, which reads
    # the tokenizer.json but not that config's class name. TransformerLens reloads a tokenizer by its path to
    # add BOS, so it is saved again in transformers 4's layout in `saved` (kept while the model is built).
    config = json.loads((folder / "tokenizer_config.json").read_text())
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token") if k in config}
    PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special).save_pretrained(saved)
    return AutoTokenizer.from_pretrained(saved)


def _renamed(key: str) -> str:
    for old, new in RENAMED.items():
        head, _, tail = key.partition(old)
        if tail and (not head or head.endswith(".")):
            return f"{head}{new}{tail}"
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("tokenizer_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("transcoders", type=Path, nargs="+")
    parser.add_argument("--tokens", required=True, help="comma-separated token ids of the prompt")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    config = json.loads((args.model_dir / "config.json").read_text())
    transcoders = TranscoderSet(
        {layer: _transcoder(folder, layer) for layer, folder in enumerate(args.transcoders)},
        feature_input_hook="ln2.hook_normalized",
        feature_output_hook="hook_mlp_out",
    )
    with tempfile.TemporaryDirectory() as saved:
        tokenizer = _tokenizer(args.tokenizer_dir, saved)
        model_config = HookedTransformerConfig(**config, device="cpu")
        model = ReplacementModel.from_config(model_config, transcoders, tokenizer=tokenizer)
    state = {_renamed(k): v for k, v in load_file(str(args.model_dir / "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith(("IGNORE", "mask")) or "transcoders" in k for k in missing), missing
    model.eval()
    tokens = torch.tensor([int(t) for t in args.tokens.split(",")])
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        graph = attribute(tokens, model, batch_size=256)
        times.append(time.perf_counter() - start)
    np.savez(
        args.out,
        adjacency=graph.adjacency_matrix.numpy(),
        active_features=graph.active_features.numpy(),
        logit_tokens=np.array([t.vocab_idx for t in graph.logit_targets]),
        logit_probabilities=graph.logit_probabilities.numpy(),
        seconds=statistics.median(times),
    )


if __name__ == "__main__":
    main()
