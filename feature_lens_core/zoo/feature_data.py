"""Compute the shipped per-feature data behind the dashboards: top examples, density, logit effects, labels.

For each SAE folder this writes `feature_data.safetensors` and `labels.json` beside the
weights. Examples come from the held-out plays, so a dashboard never shows training text.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core.logit_effects import logit_effects
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import hooks_of, reconstruct

N_EXAMPLES = 10
N_TOKENS = 8
CONTEXT = 12


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


def stream_index(window: Tensor, position: Tensor, n_ctx: int) -> Tensor:
    """Index into the held-out token stream of (window, position >= 1)."""
    return window * (n_ctx - 1) + position - 1


def auto_label(tokens: list[str], previous: list[str], boosted: list[str]) -> str:
    """A short label from what the top examples share: the tokens, what precedes them, what they predict."""
    if not tokens:
        return "never fires on held-out text"
    tokens, previous = [_shown(t) for t in tokens], [_shown(t) for t in previous]
    counts = Counter(tokens).most_common(2)
    shared = [f'"{t}"' for t, c in counts if c >= 2] or [f'"{counts[0][0]}"']
    label = "/".join(shared)
    before, n_before = Counter(previous).most_common(1)[0] if previous else ("", 0)
    if n_before >= max(3, len(previous) // 2):
        label += f' after "{before}"'
    # A byte-level BPE token can be part of a multi-byte character, which decodes to "\ufffd" on its own.
    readable = [t for t in boosted if t.strip() and t.isprintable() and "\ufffd" not in t]
    if counts[0][1] < 3 and readable:
        label += f' → "{_shown(readable[0])}"'
    return label


def _shown(token: str) -> str:
    """A token as a one-line label shows it: line breaks as ⏎."""
    return token.replace("\r", "").replace("\n", "⏎")


def build_feature_data(model: HookedTransformer, sae: SAE, held_out: Int[Tensor, " n"], folder: Path) -> None:
    """Write one SAE's `feature_data.safetensors` and `labels.json`."""
    bos = model.tokenizer.bos_token_id  # type: ignore[union-attr]
    n_ctx = model.cfg.n_ctx
    windows = consecutive_windows(held_out, n_ctx, bos)
    acts = feature_activations(model, sae, windows)[:, 1:]  # BOS positions are not text
    flat = acts.reshape(-1, acts.shape[-1])
    density = (flat > 0).float().mean(0)
    mean_activation = flat.mean(0)
    top_act, top_flat = flat.topk(N_EXAMPLES, dim=0)  # [k, d_sae]
    window, position = top_flat // (n_ctx - 1), top_flat % (n_ctx - 1) + 1
    top_index = stream_index(window, position, n_ctx).T.contiguous()  # [d_sae, k]
    top_act = top_act.T.contiguous()
    top_index[top_act <= 0] = -1
    effects = logit_effects(model, sae, N_TOKENS)
    save_file(
        {
            "mean_activation": mean_activation,
            "density": density,
            "top_index": top_index.to(torch.int32),
            "top_activation": top_act,
            "boosted": effects.boosted.to(torch.int32),
            "boosted_value": effects.boosted_value,
            "suppressed": effects.suppressed.to(torch.int32),
            "suppressed_value": effects.suppressed_value,
        },
        str(folder / "feature_data.safetensors"),
    )

    def strings(ids: list[int]) -> list[str]:
        return [model.tokenizer.decode([i]) for i in ids]  # type: ignore[union-attr]

    labels = []
    for f in range(sae.cfg.d_sae):
        idx = [i for i in top_index[f].tolist() if i >= 0]
        tokens = strings(held_out[idx].tolist())
        previous = strings(held_out[[i - 1 for i in idx if i > 0]].tolist())
        labels.append(auto_label(tokens, previous, strings(effects.boosted[f].tolist())))
    (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))


def build_all_feature_data(model: HookedTransformer, held_out: Int[Tensor, " n"], saes_dir: Path) -> None:
    """Feature data for every SAE folder under `saes_dir`."""
    for folder in tqdm(sorted(p for p in saes_dir.iterdir() if (p / "cfg.json").exists()), desc="feature data"):
        build_feature_data(model, SAE.load_from_disk(folder), held_out, folder)
