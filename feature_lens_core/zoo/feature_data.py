"""Compute the shipped per-feature data behind the dashboards: top examples, density, logit effects, labels.

For each SAE folder this writes `feature_data.safetensors` and `labels.json` beside the
weights. Examples come from the held-out plays, so a dashboard never shows training text.
"""

from __future__ import annotations

import json
from collections import Counter
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


def auto_label(tokens: list[str], previous: list[str | None], boosted: list[str]) -> str:
    """A short label from what the top examples share: the tokens, what precedes them, what they predict.

    `previous[i]` is the token the model read before example i, `None` where that was only BOS
    (the example opens its window); shared, it reads "after BOS".
    """
    if not tokens:
        return "never fires on held-out text"
    tokens = [_shown(t) for t in tokens]
    counts = Counter(tokens).most_common(2)
    shared = [f'"{t}"' for t, c in counts if c >= 2] or [f'"{counts[0][0]}"']
    label = "/".join(shared)
    before, n_before = Counter(previous).most_common(1)[0] if previous else ("", 0)
    if n_before >= max(3, len(previous) // 2):
        label += " after BOS" if before is None else f' after "{_shown(before)}"'
    # A byte-level BPE token can be part of a multi-byte character, which decodes to "\ufffd" on its own.
    readable = [t for t in boosted if t.strip() and t.isprintable() and "\ufffd" not in t]
    if counts[0][1] < 3 and readable:
        label += f' → "{_shown(readable[0])}"'
    return label


def _shown(token: str) -> str:
    """A token as a one-line label shows it: line breaks as ⏎."""
    return token.replace("\r", "").replace("\n", "⏎")


def build_feature_data(model: HookedTransformer, sae: SAE, held_out: Int[Tensor, " n"], folder: Path) -> None:
    """Write one SAE's `feature_data.safetensors` and `labels.json`.

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

    def strings(ids: list[int]) -> list[str]:
        return [str(tokenizer.decode([i])) for i in ids]

    labels = []
    for f in range(sae.cfg.d_sae):
        shown = top_index[f] >= 0
        index, position = top_index[f][shown].tolist(), top_position[f][shown].tolist()
        # The token before an example is only what the model read: nothing but BOS at a window's first position.
        before = strings([int(held_out[i - 1]) for i in index])
        previous = [token if p > 1 else None for token, p in zip(before, position, strict=True)]
        tokens = strings(held_out[index].tolist())
        labels.append(auto_label(tokens, previous, strings(effects.boosted[f].tolist())))
    (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))


def build_all_feature_data(model: HookedTransformer, held_out: Int[Tensor, " n"], saes_dir: Path) -> None:
    """Feature data for every SAE folder under `saes_dir`."""
    for folder in tqdm(sorted(p for p in saes_dir.iterdir() if (p / "cfg.json").exists()), desc="feature data"):
        build_feature_data(model, SAE.load_from_disk(folder), held_out, folder)
