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
from feature_lens_core.methods.nodes import (
    anchor_delta,
    downstream_allowed,
    target_nodes,
    target_value,
    token_strings,
    upstream_hooks,
    upstream_nodes,
)
from feature_lens_core.methods.runner import Edit, run, weights_frozen
from feature_lens_core.methods.types import Anchor, Baseline, Scored, Target


def upstream(
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Target, baseline: Baseline
) -> list[Scored]:
    """First-order scores of every node of every source SAE on the target: one forward, one backward."""
    q = target.position
    tokens = tokens[:, : q + 1]
    read = target.read
    writes = sorted({hooks.site(sae).write for sae in sources.values()})
    leaves: dict[str, Tensor] = {}

    def leaf_at(hook: str) -> Edit:
        def edit(act: Tensor) -> Tensor:
            leaves[hook] = torch.zeros_like(act, requires_grad=True)
            return act + leaves[hook]

        return edit

    capture = upstream_hooks(sources, target)
    with exclusive(), weights_frozen(model, *target.modules), torch.enable_grad():
        acts = run(model, tokens, capture=capture, stop_at=read, edits={w: leaf_at(w) for w in writes})
        g = target_value(target, acts[read][0], token_strings(model, tokens))
        grads = torch.autograd.grad(g, [leaves[w] for w in writes], allow_unused=True)
    gradient = {w: torch.zeros_like(leaves[w]) if d is None else d for w, d in zip(writes, grads, strict=True)}

    with torch.no_grad():
        out = []
        for nodes in upstream_nodes(model, sources, target, baseline, acts):
            write = hooks.site(nodes.sae).write
            grad = hooks.flat(gradient[write][0], write)[nodes.positions]
            out.append(nodes.scored(-(nodes.delta * grad).sum(-1)))
    return out


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """First-order scores of the source on every active feature of every target SAE: one forward-mode pass."""
    where = hooks.site(source.sae)
    str_tokens = token_strings(model, tokens)
    reads = {hooks.site(sae).read for sae in targets.values()}
    base = baseline.values(model, {source.name: source.sae}, tokens.shape[1])[source.name]
    seen: dict[str, Tensor] = {}

    def remember(act: Tensor) -> Tensor:
        seen["read"] = act
        return act

    def perturb(act: Tensor) -> Tensor:
        delta = anchor_delta(source, seen.get("read", act)[0], base, str_tokens, act.dtype)
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
            allowed = downstream_allowed(source, read, tokens.shape[1], primal.device)
            out.append(target_nodes(name, sae, primal, allowed, score))
    return out
