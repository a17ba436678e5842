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
from feature_lens_core.methods import (
    Anchor,
    Baseline,
    Scored,
    anchor_activation,
    anchor_delta,
    reachable,
    run,
    source_nodes,
    target_nodes,
)


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
    out = torch.zeros(n_pos, model.cfg.d_model, dtype=grad.dtype)
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
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Anchor, baseline: Baseline
) -> list[Scored]:
    """Direct-path scores of every node of every source SAE on the target: one forward pass, then products."""
    q = target.position
    tokens = tokens[:, : q + 1]
    sites = {name: hooks.site(sae) for name, sae in sources.items()}
    read = hooks.site(target.sae).read
    wanted = {h for s in sites.values() for h in (s.read, s.write)} | {read} | _frozen_inputs(model, read)
    with torch.no_grad():
        acts = run(model, tokens, capture=wanted, stop_at=read)
        anchor_activation(target, acts[read][0], model.to_str_tokens(tokens[0]), every_position=False)  # type: ignore[arg-type]
    with torch.enable_grad():
        x = acts[read][0, q].detach().requires_grad_(True)
        (gate,) = torch.autograd.grad(hooks.encode(target.sae, x)[target.feature], x)
    with torch.no_grad():
        pulled = _pull_back(model, read, acts, gate.to(acts[read].dtype), q)
        base = baseline.values(model, sources, q + 1)
        out = []
        for name, sae in sources.items():
            where = sites[name]
            allowed = reachable(where.write, read, q + 1, q, upstream=True)
            nodes = source_nodes(name, sae, acts[where.read][0], acts[where.write][0], base[name], allowed)
            directions = hooks.residual_directions(model, nodes.delta, where.write)
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
        str_tokens = model.to_str_tokens(tokens[0])
        delta = anchor_delta(source, acts[where.read][0], base, str_tokens, acts[where.write].dtype)  # type: ignore[arg-type]
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
            allowed = reachable(where.write, read, tokens.shape[1], source.position, upstream=False)
            out.append(target_nodes(name, sae, primal, allowed, -tangent))
    return out
