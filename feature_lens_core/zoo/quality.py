"""Measure the zoo's quality floors on held-out text: `python -m feature_lens_core.zoo.quality`.

Model: held-out cross-entropy against the unigram entropy of the same tokens.
Each SAE / transcoder: fraction of variance explained, mean L0, fraction of features never
active, and the cross-entropy increase when its reconstruction replaces the activation
(no error term). BOS positions are left out of every statistic and are not spliced:
they carry no text, and SAE-Lens's splice skips special tokens the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from jaxtyping import Int
from sae_lens import SAE
from safetensors.torch import load_file
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import hooks_of, reconstruct, sae_target

FLOORS = {
    "ce_below_unigram": 1.5,
    "fve_min": 0.80,
    "l0_min": 4.0,
    "l0_max": 64.0,
    "dead_max": 0.20,
    "splice_ce_increase_max": 0.5,
}


def unigram_entropy(tokens: Int[Tensor, " n"]) -> float:
    """Entropy in nats of the empirical unigram distribution of `tokens` (the best unigram model of them)."""
    counts = torch.bincount(tokens).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _ce(model: HookedTransformer, windows: Tensor, fwd_hooks: list | None = None) -> float:  # type: ignore[type-arg]
    losses = []
    with torch.no_grad():
        for batch in windows.split(32):
            logits = model.run_with_hooks(batch, fwd_hooks=fwd_hooks or [])
            logp = logits[:, :-1].log_softmax(-1)
            losses.append(-logp.gather(-1, batch[:, 1:, None]).squeeze(-1))
    return float(torch.cat(losses).mean())


def _splice_hook(sae: SAE):
    """Replace the SAE's target activation by its reconstruction at every non-BOS position."""
    state: dict[str, Tensor] = {}

    def read(act: Tensor, hook) -> Tensor:  # noqa: ARG001
        state["acts"] = sae.encode(act)
        return act

    def write(act: Tensor, hook) -> Tensor:  # noqa: ARG001
        recon = (state["acts"] @ sae.W_dec + sae.b_dec).reshape(act.shape)
        out = act.clone()
        out[:, 1:] = recon[:, 1:]
        return out

    hook_in, hook_out = sae.cfg.metadata.hook_name, sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name
    return [(hook_in, read), (hook_out, write)]


def sae_quality(model: HookedTransformer, sae: SAE, windows: Tensor, clean_ce: float) -> dict[str, float]:
    """FVE, L0, dead fraction and splice CE increase of one SAE on `windows`."""
    sq_err = 0.0
    total_var_parts: list[Tensor] = []
    l0_sum, count = 0.0, 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for batch in windows.split(32):
            _, cache = model.run_with_cache(batch, names_filter=hooks_of(sae))
            acts, recon = reconstruct(sae, cache)
            target = sae_target(sae, cache)[:, 1:]
            acts, recon = acts[:, 1:], recon[:, 1:]
            sq_err += float((target - recon).pow(2).sum())
            total_var_parts.append(target.reshape(-1, target.shape[-1]))
            l0_sum += float((acts > 0).sum())
            count += acts.shape[0] * acts.shape[1]
            fired |= (acts > 0).reshape(-1, acts.shape[-1]).any(0)
    targets = torch.cat(total_var_parts)
    total_var = float((targets - targets.mean(0)).pow(2).sum())
    spliced_ce = _ce(model, windows, _splice_hook(sae))
    return {
        "fve": 1 - sq_err / total_var,
        "l0": l0_sum / count,
        "dead": float((~fired).float().mean()),
        "splice_ce_increase": spliced_ce - clean_ce,
    }


def measure_quality(model: HookedTransformer, held_out: Int[Tensor, " n"], saes_dir: Path) -> dict:  # type: ignore[type-arg]
    """The full quality report: model figures and one row per SAE, with pass/fail against FLOORS."""
    windows = consecutive_windows(held_out, model.cfg.n_ctx, model.tokenizer.bos_token_id)  # type: ignore[union-attr]
    clean_ce = _ce(model, windows)
    entropy = unigram_entropy(windows[:, 1:].flatten())
    report: dict = {  # type: ignore[type-arg]
        "floors": FLOORS,
        "held_out_tokens": int(windows[:, 1:].numel()),
        "model": {
            "cross_entropy": clean_ce,
            "unigram_entropy": entropy,
            "gap": entropy - clean_ce,
            "passes": entropy - clean_ce >= FLOORS["ce_below_unigram"],
        },
        "saes": {},
    }
    for folder in sorted(p for p in saes_dir.iterdir() if (p / "cfg.json").exists()):
        row = sae_quality(model, SAE.load_from_disk(folder), windows, clean_ce)
        row["passes"] = (
            row["fve"] >= FLOORS["fve_min"]
            and FLOORS["l0_min"] <= row["l0"] <= FLOORS["l0_max"]
            and row["dead"] <= FLOORS["dead_max"]
            and row["splice_ce_increase"] <= FLOORS["splice_ce_increase_max"]
        )
        report["saes"][folder.name] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the built-in zoo's quality floors on the held-out plays.")
    parser.add_argument("--max-tokens", type=int, default=0, help="evaluate on a prefix of the held-out text (0: all)")
    args = parser.parse_args()
    from feature_lens_core.loading import load_model

    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    if args.max_tokens:
        held_out = held_out[: args.max_tokens]
    report = measure_quality(load_model("toy"), held_out, paths.SAES_DIR)
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
