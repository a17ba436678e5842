"""Compute the shipped causal panels: each built-in feature's top causes and effects across the held-out text.

For each built-in SAE set (the attention and MLP outputs of every layer, the transcoders, the residual SAEs) this
sums the whole-prompt adjacency's feature-to-feature edges over `N_PROMPTS` held-out prompts (`corpus_edges`) and writes
`causal_panels.safetensors` into each of the set's SAE folders: per feature its top `K` upstream and downstream
features (`upstream_sae` indexing the set's names in the file's metadata, `upstream_feature`, `upstream_score`,
`upstream_frequency`, the same for `downstream_*`) and `occurrences`, how often it was active.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from sae_lens import SAE
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core.batch import held_out_prompts
from feature_lens_core.corpus_edges import K, causal_panels
from feature_lens_core.files import write_atomically

SAE_SETS = {
    "outputs": ("L0.attn_z", "L0.mlp_out", "L1.attn_z", "L1.mlp_out", "L2.attn_z", "L2.mlp_out"),
    "transcoders": ("L0.transcoder", "L1.transcoder", "L2.transcoder"),
    # Residual SAEs do not mediate (docs/methods.md): an edge runs past the residual SAEs in between.
    "residual": ("L0.resid_pre", "L1.resid_pre", "L2.resid_pre", "L2.resid_post"),
}
N_PROMPTS = 12  # about 4 minutes on the 2-core build machine, both sets (see docs/model-zoo.md)
PROMPT_TOKENS = 32
FILE = "causal_panels.safetensors"


def build_causal_panels(
    model: HookedTransformer, saes_dir: Path, *, n_prompts: int = N_PROMPTS, sets: tuple[str, ...] = tuple(SAE_SETS)
) -> None:
    """Write `causal_panels.safetensors` for every SAE of the `sets` of `SAE_SETS` (default: all)."""
    prompts = held_out_prompts(n_prompts, PROMPT_TOKENS)
    for set_name in sets:
        names = SAE_SETS[set_name]
        saes = {name: SAE.load_from_disk(saes_dir / name) for name in names}
        with tqdm(total=len(prompts), desc=f"causal panels ({set_name})") as bar:
            panels = causal_panels(model, saes, prompts, k=K, progress=functools.partial(_advance, bar))
        metadata = {
            "saes": json.dumps(list(panels.saes)),
            "n_prompts": str(panels.n_prompts),
            "n_positions": str(panels.n_positions),
            "prompt_tokens": str(PROMPT_TOKENS),
        }
        for name in names:
            write_atomically(saes_dir / name / FILE, functools.partial(_save, panels.top[name], metadata))


def _advance(bar: tqdm, done: int, _total: int) -> None:
    bar.update(done - bar.n)


def _save(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    save_file(tensors, str(path), metadata=metadata)
