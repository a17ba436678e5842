"""Which output tokens a feature's decoder direction promotes and suppresses, through the final norm and unembedding."""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.components.layer_norm import LayerNorm
from transformer_lens.components.layer_norm_pre import LayerNormPre


@dataclass(frozen=True)
class LogitEffects:
    """Top-k token ids and logit values per feature: `boosted`/`suppressed` are [d_sae, k]."""

    boosted: Int[Tensor, "d_sae k"]
    boosted_value: Float[Tensor, "d_sae k"]
    suppressed: Int[Tensor, "d_sae k"]
    suppressed_value: Float[Tensor, "d_sae k"]


def layer_of(hook_name: str) -> int:
    """The block index in a TransformerLens hook name such as `blocks.3.attn.hook_z`."""
    return int(hook_name.split(".")[1])


def decoder_in_residual(model: HookedTransformer, sae: SAE) -> Float[Tensor, "d_sae d_model"]:
    """Each feature's write into the residual stream: hook_z decoder rows go through W_O first."""
    w_dec = sae.W_dec.detach()
    if sae.cfg.reshape_activations == "hook_z" or str(sae.cfg.metadata.hook_name).endswith("hook_z"):
        w_o = model.W_O[layer_of(sae.cfg.metadata.hook_name)].detach()
        per_head = einops.rearrange(w_dec, "f (h d) -> f h d", h=model.cfg.n_heads)
        return einops.einsum(per_head, w_o, "f h d, h d m -> f m")
    return w_dec


def through_final_norm(model: HookedTransformer, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    """Residual-stream directions as the unembedding sees them: centred by a LayerNorm, times its weight.

    The final norm's division by the residual's scale is the same for every direction, so it is
    left out. A model loaded with its LayerNorm weights folded (`fold_ln`, TransformerLens's default
    for hub models) has no `w` here: the weight already sits in `W_U`.
    """
    final = getattr(model, "ln_final", None)
    if isinstance(final, LayerNorm | LayerNormPre):
        directions = directions - directions.mean(-1, keepdim=True)
    weight = getattr(final, "w", None)
    return directions * weight.detach() if isinstance(weight, Tensor) else directions


@torch.no_grad()
def logit_effects(model: HookedTransformer, sae: SAE, k: int) -> LogitEffects:
    """Direct logit effect of each decoder direction, `through_final_norm(W_dec) @ W_U`: the top and bottom `k`."""
    logits = through_final_norm(model, decoder_in_residual(model, sae)) @ model.W_U.detach()
    top = logits.topk(k, dim=-1)
    bottom = (-logits).topk(k, dim=-1)
    return LogitEffects(top.indices, top.values, bottom.indices, -bottom.values)
