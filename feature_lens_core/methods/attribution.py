"""Attribution patching: the first-order estimate -<delta, dg/dx_U[p]>, gradients through every path.

Upstream: one forward pass (truncated to the target's position, stopped at its read hook) with a
zero leaf added at every source write hook, and one backward pass from the target to all leaves. The
model's and SAE's weights are frozen for that pass, so it records only what activation gradients need.
Downstream: one forward pass in forward-mode AD, the source's `delta` as the tangent at its write
hook; every downstream feature's directional derivative comes out of that one pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.autograd.forward_ad as fwad
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods import (
    Anchor,
    Baseline,
    Edit,
    Scored,
    anchor_activation,
    anchor_delta,
    reachable,
    run,
    source_nodes,
    target_nodes,
    weights_frozen,
)


def upstream(
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Anchor, baseline: Baseline
) -> list[Scored]:
    """First-order scores of every node of every source SAE on the target: one forward, one backward."""
    q = target.position
    tokens = tokens[:, : q + 1]
    str_tokens = model.to_str_tokens(tokens[0])
    sites = {name: hooks.site(sae) for name, sae in sources.items()}
    read = hooks.site(target.sae).read
    writes = sorted({s.write for s in sites.values()})
    leaves: dict[str, Tensor] = {}

    def leaf_at(hook: str) -> Edit:
        def edit(act: Tensor) -> Tensor:
            leaves[hook] = torch.zeros_like(act, requires_grad=True)
            return act + leaves[hook]

        return edit

    wanted = {h for s in sites.values() for h in (s.read, s.write)} | {read}
    with exclusive(), weights_frozen(model, target.sae), torch.enable_grad():
        acts = run(model, tokens, capture=wanted, stop_at=read, edits={w: leaf_at(w) for w in writes})
        g = anchor_activation(target, acts[read][0], str_tokens, every_position=False)  # type: ignore[arg-type]
        grads = torch.autograd.grad(g, [leaves[w] for w in writes], allow_unused=True)
    gradient = {w: torch.zeros_like(leaves[w]) if d is None else d for w, d in zip(writes, grads, strict=True)}

    with torch.no_grad():
        base = baseline.values(model, sources, q + 1)
        out = []
        for name, sae in sources.items():
            where = sites[name]
            allowed = reachable(where.write, read, q + 1, q, upstream=True)
            nodes = source_nodes(
                name, sae, acts[where.read][0].detach(), acts[where.write][0].detach(), base[name], allowed
            )
            grad = hooks.flat(gradient[where.write][0], where.write)[nodes.positions]
            out.append(nodes.scored(-(nodes.delta * grad).sum(-1)))
    return out


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """First-order scores of the source on every active feature of every target SAE: one forward-mode pass."""
    where = hooks.site(source.sae)
    str_tokens = model.to_str_tokens(tokens[0])
    reads = {hooks.site(sae).read for sae in targets.values()}
    base = baseline.values(model, {source.name: source.sae}, tokens.shape[1])[source.name]
    seen: dict[str, Tensor] = {}

    def remember(act: Tensor) -> Tensor:
        seen["read"] = act
        return act

    def perturb(act: Tensor) -> Tensor:
        delta = anchor_delta(source, seen.get("read", act)[0], base, str_tokens, act.dtype)  # type: ignore[arg-type]
        tangent = torch.zeros_like(act)
        tangent[0, source.position] = hooks.unflat(model, delta, where.write)
        return fwad.make_dual(act, tangent)

    edits = {where.write: perturb} | ({where.read: remember} if where.read != where.write else {})
    with torch.no_grad(), fwad.dual_level():
        acts = run(model, tokens, capture=reads, stop_at=max(reads, key=hooks.order), edits=edits)
        out = []
        for name, sae in targets.items():
            read = hooks.site(sae).read
            primal, tangent = fwad.unpack_dual(hooks.encode(sae, acts[read][0]))
            score = torch.zeros_like(primal) if tangent is None else -tangent
            allowed = reachable(where.write, read, tokens.shape[1], source.position, upstream=False)
            out.append(target_nodes(name, sae, primal, allowed, score))
    return out
