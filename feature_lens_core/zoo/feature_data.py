"""Compute the shipped per-feature data behind the dashboards: top examples, density, logit effects.

For each SAE folder this writes `feature_data.safetensors` beside the weights (its `labels.json` is the
`labels` stage's, `feature_lens_core.zoo.labels`). Examples come from the held-out plays, so a dashboard never
shows training text.
"""

from __future__ import annotations

from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core.logit_effects import logit_effects
from feature_lens_core.zoo.model import bos_id, consecutive_windows
from feature_lens_core.zoo.sae_io import hooks_of, reconstruct

N_EXAMPLES = 10
N_TOKENS = 8


@torch.no_grad()
def feature_activations(
    model: HookedTransformer, sae: SAE, windows: Int[Tensor, "w n_ctx"]
) -> Float[Tensor, "w n_ctx d_sae"]:
    """The SAE's feature activations on every window."""
    out = []
    for batch in windows.split(32):
        _, cache = model.run_with_cache(batch, names_filter=hooks_of(sae))
        out.append(reconstruct(sae, cache)[0])
    return torch.cat(out)


def text_positions(windows: Int[Tensor, "w n_ctx"], special_ids: list[int]) -> Bool[Tensor, "w n_ctx-1"]:
    """Which positions after each window's BOS hold text: not a special token such as the document separator.

    Position p >= 1 of window w is stream token w * (n_ctx - 1) + p - 1, so the flattened
    mask is indexed by the stream index.
    """
    return ~torch.isin(windows[:, 1:], torch.tensor(special_ids, dtype=windows.dtype))


def build_feature_data(model: HookedTransformer, sae: SAE, held_out: Int[Tensor, " n"], folder: Path) -> None:
    """Write one SAE's `feature_data.safetensors`.

    Density, mean activation and top examples are over text positions only: each window's BOS
    and the `<|endoftext|>` between documents (the same token) are left out. `top_index` points
    into the held-out stream, `top_position` is the example's position in the window the model
    read (1: only BOS came before it); both are -1 where a feature has fewer active examples.
    """
    tokenizer = model.tokenizer
    assert tokenizer is not None
    bos = bos_id(model)
    n_ctx = model.cfg.n_ctx
    windows = consecutive_windows(held_out, n_ctx, bos)
    is_text = text_positions(windows, tokenizer.all_special_ids).flatten()
    flat = feature_activations(model, sae, windows)[:, 1:].flatten(0, 1)  # [stream index, d_sae]
    flat[~is_text] = 0.0
    n_text = int(is_text.sum())
    density = (flat > 0).sum(0).float() / n_text
    mean_activation = flat.sum(0) / n_text
    top_act, top_index = (t.T.contiguous() for t in flat.topk(N_EXAMPLES, dim=0))  # [d_sae, k]
    top_position = top_index % (n_ctx - 1) + 1
    top_index[top_act <= 0] = -1
    top_position[top_act <= 0] = -1
    effects = logit_effects(model, sae, N_TOKENS)
    save_file(
        {
            "mean_activation": mean_activation,
            "density": density,
            "top_index": top_index.to(torch.int32),
            "top_position": top_position.to(torch.int32),
            "top_activation": top_act,
            "boosted": effects.boosted.to(torch.int32),
            "boosted_value": effects.boosted_value,
            "suppressed": effects.suppressed.to(torch.int32),
            "suppressed_value": effects.suppressed_value,
        },
        str(folder / "feature_data.safetensors"),
    )


def build_all_feature_data(model: HookedTransformer, held_out: Int[Tensor, " n"], saes_dir: Path) -> None:
    """Feature data for every SAE folder under `saes_dir`."""
    for folder in tqdm(sorted(p for p in saes_dir.iterdir() if (p / "cfg.json").exists()), desc="feature data"):
        build_feature_data(model, SAE.load_from_disk(folder), held_out, folder)
