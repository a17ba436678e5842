"""Direct attribution: the attribution estimate carried by the direct path only, by matrix products.

The direct path runs from the source's write hook along the residual stream (every attention and
MLP block in between held at its clean output) to where the target SAE reads, through what that
reader itself applies, frozen at the clean run:

- residual SAEs: nothing (identity);
- transcoders (`ln2.hook_normalized`): ln2 with its clean scale, J v = (v - mean v) / sigma;
- attention SAEs (`hook_z`): ln1 with its clean scale and weight, then each head's W_V, weighted by
  the clean attention pattern A[h, q, s], so a source at s <= q reaches the target at q;
- MLP-output SAEs (`hook_mlp_out`): ln2 frozen, then the MLP's Jacobian at its clean input (the one
  non-linear step; linearised, as the path is not linear there).

The SAE's own encoder is differentiated at the clean input (its gate). Upstream pulls the target's
encoder gradient back to the residual stream once and dots it with every source's decoder rows;
downstream pushes one source's decoder row forward to every target. No backward pass through the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import einops
import torch
import torch.autograd.forward_ad as fwad
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor, nn
from transformer_lens import HookedTransformer
from transformer_lens.components import LayerNorm, LayerNormPre

from feature_lens_core import hooks
from feature_lens_core.methods.nodes import (
    anchor_delta,
    downstream_allowed,
    target_nodes,
    target_value,
    token_strings,
    upstream_hooks,
    upstream_nodes,
)
from feature_lens_core.methods.runner import run
from feature_lens_core.methods.types import Anchor, Baseline, Scored, Target


def _norm(model: HookedTransformer, read: str) -> nn.Module:
    """The normalisation a reader at `read` looks through: ln1 for attention, ln2 otherwise."""
    block = model.blocks[hooks.layer_of(read)]
    return block.ln1 if hooks.read_path(read) == "attention" else block.ln2


def _frozen_inputs(model: HookedTransformer, read: str) -> set[str]:
    """Hooks of the clean run the direct path through `read` is frozen at."""
    layer, path = hooks.layer_of(read), hooks.read_path(read)
    norm = "ln1" if path == "attention" else "ln2"
    wanted = {f"blocks.{layer}.{norm}.hook_scale"} if hasattr(_norm(model, read), "hook_scale") else set()
    if path == "attention":
        wanted.add(f"blocks.{layer}.attn.hook_pattern")
    if path == "mlp":
        wanted.add(f"blocks.{layer}.hook_resid_mid")
    return wanted if path != "residual" else set()


def _norm_jacobian(
    norm: nn.Module,
    vectors: Float[Tensor, "... d_model"],
    scale: Tensor | None,
    weighted: bool,
    transpose: bool,
) -> Float[Tensor, "... d_model"]:
    """The normalisation's Jacobian with its scale frozen (or its transpose): centre, divide, times w."""
    weight = getattr(norm, "w", None) if weighted else None
    if transpose and weight is not None:
        vectors = vectors * weight.detach()
    if isinstance(norm, LayerNorm | LayerNormPre):
        vectors = vectors - vectors.mean(-1, keepdim=True)
    if scale is not None:
        vectors = vectors / scale
    if not transpose and weight is not None:
        vectors = vectors * weight.detach()
    return vectors


def _frozen(model: HookedTransformer, read: str, acts: Mapping[str, Tensor]) -> tuple[nn.Module, Tensor | None]:
    """The reader's normalisation and its clean scale [pos, 1] (None when it has no scale)."""
    norm = _norm(model, read)
    scale = next((acts[h][0] for h in _frozen_inputs(model, read) if h.endswith("hook_scale")), None)
    return norm, scale


def _pull_back(
    model: HookedTransformer, read: str, acts: Mapping[str, Tensor], grad: Tensor, q: int
) -> Float[Tensor, "pos d_model"]:
    """Direct-path gradient w.r.t. the residual stream at each source position, from `grad` at the read."""
    layer, path = hooks.layer_of(read), hooks.read_path(read)
    n_pos = acts[read].shape[1]
    out = torch.zeros(n_pos, model.cfg.d_model, dtype=grad.dtype, device=grad.device)
    norm, scale = _frozen(model, read, acts)
    if path == "residual":
        out[q] = grad
    elif path == "ln2":
        out[q] = _norm_jacobian(norm, grad, None if scale is None else scale[q], weighted=False, transpose=True)
    elif path == "mlp":
        with torch.enable_grad():
            mlp_in = norm(acts[f"blocks.{layer}.hook_resid_mid"][:, q : q + 1]).detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(model.blocks[layer].mlp(mlp_in), mlp_in, grad[None, None])
        out[q] = _norm_jacobian(norm, slope[0, 0], None if scale is None else scale[q], weighted=True, transpose=True)
    else:
        w_v = model.blocks[layer].attn.W_V.detach().to(grad.dtype)
        per_head = einops.einsum(w_v, grad, "h m d, h d -> h m")
        pattern = acts[f"blocks.{layer}.attn.hook_pattern"][0, :, q, :]
        per_source = einops.einsum(pattern, per_head, "h s, h m -> s m")
        out = _norm_jacobian(norm, per_source, scale, weighted=True, transpose=True)
    return out


def _push_forward(
    model: HookedTransformer,
    read: str,
    acts: Mapping[str, Tensor],
    direction: Float[Tensor, " d_model"],
    p: int,
) -> Float[Tensor, "pos ..."]:
    """The change of the read activation (every position) along the direct path from `direction` at `p`."""
    layer, path = hooks.layer_of(read), hooks.read_path(read)
    out = torch.zeros_like(acts[read][0])
    norm, scale = _frozen(model, read, acts)
    frozen_scale = None if scale is None else scale[p]
    if path == "residual":
        out[p] = direction
    elif path == "ln2":
        out[p] = _norm_jacobian(norm, direction, frozen_scale, weighted=False, transpose=False)
    elif path == "mlp":
        mlp_in = norm(acts[f"blocks.{layer}.hook_resid_mid"][:, p : p + 1])
        tangent = _norm_jacobian(norm, direction, frozen_scale, weighted=True, transpose=False)
        with fwad.dual_level():
            out[p] = fwad.unpack_dual(model.blocks[layer].mlp(fwad.make_dual(mlp_in, tangent[None, None]))).tangent[
                0, 0
            ]
    else:
        w_v = model.blocks[layer].attn.W_V.detach().to(direction.dtype)
        value = einops.einsum(_norm_jacobian(norm, direction, frozen_scale, True, False), w_v, "m, h m d -> h d")
        pattern = acts[f"blocks.{layer}.attn.hook_pattern"][0, :, :, p]
        out = einops.einsum(pattern, value, "h q, h d -> q h d")
    return out


def upstream(
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Target, baseline: Baseline
) -> list[Scored]:
    """Direct-path scores of every node of every source SAE on the target: one forward pass, then products."""
    q = target.position
    tokens = tokens[:, : q + 1]
    read = target.read
    with torch.no_grad():
        acts = run(model, tokens, capture=upstream_hooks(sources, target) | _frozen_inputs(model, read), stop_at=read)
        target_value(target, acts[read][0], token_strings(model, tokens))
    with torch.enable_grad():
        x = acts[read][0, q].detach().requires_grad_(True)
        # The target's own readout at its clean input: an SAE's encoder gate, or ln_final at its clean scale.
        (gate,) = torch.autograd.grad(target.value(x, frozen_norm=True), x)
    with torch.no_grad():
        pulled = _pull_back(model, read, acts, gate.to(acts[read].dtype), q)
        out = []
        for nodes in upstream_nodes(model, sources, target, baseline, acts):
            directions = hooks.residual_directions(model, nodes.delta, hooks.site(nodes.sae).write)
            out.append(nodes.scored(-(directions * pulled[nodes.positions]).sum(-1)))
    return out


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """Direct-path scores of the source on every active feature of every target SAE: one forward pass."""
    where = hooks.site(source.sae)
    reads = {hooks.site(sae).read for sae in targets.values()}
    frozen = set().union(*(_frozen_inputs(model, read) for read in reads))
    with torch.no_grad():
        acts = run(
            model,
            tokens,
            capture=reads | frozen | {where.read, where.write},
            stop_at=max(reads, key=hooks.order),
        )
        base = baseline.values(model, {source.name: source.sae}, tokens.shape[1])[source.name]
        delta = anchor_delta(source, acts[where.read][0], base, token_strings(model, tokens), acts[where.write].dtype)
        direction = hooks.residual_directions(model, delta, where.write)
        out = []
        for name, sae in targets.items():
            read = hooks.site(sae).read
            change = _push_forward(model, read, acts, direction, source.position)
            primal = hooks.encode(sae, acts[read][0])
            tangent = torch.zeros_like(primal)
            # Only positions the direct path reaches (the source's own, or later ones through attention) move.
            reached = hooks.flat(change, read).ne(0).any(-1).nonzero().flatten()
            if len(reached):
                with fwad.dual_level():
                    moved = hooks.encode(sae, fwad.make_dual(acts[read][0][reached], change[reached]))
                    tangent[reached] = fwad.unpack_dual(moved).tangent
            allowed = downstream_allowed(source, read, tokens.shape[1], primal.device)
            out.append(target_nodes(name, sae, primal, allowed, -tangent))
    return out
