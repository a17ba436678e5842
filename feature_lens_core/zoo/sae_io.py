"""Run an SAE on the activation at its hook, whatever its kind (zoo build and evaluation)."""

from __future__ import annotations

import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import ActivationCache


def sae_input(sae: SAE, cache: ActivationCache) -> Tensor:
    """The activation the SAE reads, shaped as its `encode` expects."""
    return cache[sae.cfg.metadata.hook_name]


def sae_target(sae: SAE, cache: ActivationCache) -> Tensor:
    """The activation the SAE reconstructs, flattened to [..., d]: its output hook for a transcoder."""
    act = cache[sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name]
    return act.flatten(-2) if sae.cfg.reshape_activations == "hook_z" else act


def hooks_of(sae: SAE) -> list[str]:
    return [h for h in (sae.cfg.metadata.hook_name, sae.cfg.metadata.hook_name_out) if h]


def reconstruct(sae: SAE, cache: ActivationCache) -> tuple[Tensor, Tensor]:
    """Feature activations [..., d_sae] and the flattened reconstruction [..., d] of the SAE's target."""
    with torch.no_grad():
        acts = sae.encode(sae_input(sae, cache))
        recon = acts @ sae.W_dec + sae.b_dec
    return acts, recon
