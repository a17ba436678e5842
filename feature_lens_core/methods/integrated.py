"""Integrated gradients: attribution patching averaged along the path from clean to ablated.

For a source SAE U whose nodes (at the positions that can reach the target) together add `D` at U's
write hook when all are ablated at once, the score of node i is

    score_i = -<delta_i, (1/N) sum_{k=0}^{N-1} dg/dx_U [x_U + (k/N) D]>,

a left Riemann sum over N interpolation steps, as Sparse Feature Circuits computes it: every node of
one SAE moves together from its clean value towards its baseline, the rest of the model is its own
computation. With N = 1 it is attribution patching. Completeness: summed over all of U's nodes,
the scores tend to g(clean) - g(all of U ablated at once) as N grows (the error is O(1/N)).

Upstream: per source SAE, one forward and one backward pass over a batch of N interpolated copies.
Downstream: one forward-mode pass over N copies, the source's `delta` as the tangent, U interpolated
at every position (positions that cannot reach a target do not change it, so each target's score is
the one upstream gives).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.autograd.forward_ad as fwad
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, validation
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods.nodes import (
    anchor_delta,
    downstream_allowed,
    first_order_scores,
    source_nodes,
    target_nodes,
    target_value,
    token_strings,
    upstream_hooks,
)
from feature_lens_core.methods.runner import batch_size, run, weights_frozen
from feature_lens_core.methods.types import Anchor, Baseline, Nodes, Scored, Target

STEPS = 10


def alphas(steps: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> Float[Tensor, " steps"]:
    """The interpolation points k/N, k = 0..N-1 (left Riemann sum)."""
    validation.count(steps, "steps")
    return torch.arange(steps, dtype=dtype, device=device) / steps


def total_delta(nodes: Nodes, n_pos: int) -> Float[Tensor, "pos d_write"]:
    """What ablating all of `nodes` at once adds at their SAE's write hook, per position."""
    total = torch.zeros(n_pos, nodes.delta.shape[-1], dtype=nodes.delta.dtype, device=nodes.delta.device)
    return total.index_add_(0, nodes.positions, nodes.delta)


def _along(model: HookedTransformer, write: str, path: Tensor, steps: Tensor) -> Tensor:
    """`path` [pos, d_write] scaled by each step, shaped like a batch of activations at `write`."""
    shaped = hooks.unflat(model, path, write)
    return steps.reshape(-1, *[1] * shaped.dim()) * shaped


def mean_gradient(
    model: HookedTransformer,
    tokens: Tensor,
    write: str,
    path: Float[Tensor, "pos d_write"],
    target: Target,
    steps: int,
) -> Float[Tensor, "pos d_write"]:
    """(1/N) sum_k dg/dx [x + (k/N) path] at hook `write`, for the target feature g (tokens end at its position)."""
    read, q = target.read, target.position
    points = alphas(steps, path.dtype, path.device)
    total = torch.zeros_like(path)
    for chunk in points.split(batch_size(model, tokens.shape[1])):
        shape = (len(chunk), *hooks.unflat(model, path, write).shape)
        leaf = torch.zeros(shape, dtype=path.dtype, device=path.device, requires_grad=True)
        shift = _along(model, write, path, chunk)
        # Frozen weights: the pass keeps only what the gradient w.r.t. the leaf needs.
        with exclusive(), weights_frozen(model, *target.modules), torch.enable_grad():
            acts = run(
                model,
                tokens.expand(len(chunk), -1),
                capture={read},
                stop_at=read,
                edits={write: lambda act, shift=shift, leaf=leaf: act + shift.to(act.dtype) + leaf},
            )
            g = target.value(acts[read][:, q])
            (grad,) = torch.autograd.grad(g.sum(), leaf)
        total += hooks.flat(grad, write).sum(0).to(total.dtype)
    return total / steps


def upstream(
    model: HookedTransformer,
    tokens: Tensor,
    sources: Mapping[str, SAE],
    target: Target,
    baseline: Baseline,
    steps: int = STEPS,
) -> list[Scored]:
    """Integrated-gradients scores of every node of every source SAE on the target, each SAE interpolated alone."""
    alphas(steps, torch.float64)  # refuse a bad step count before any pass
    q = target.position
    tokens = tokens[:, : q + 1]
    read = target.read
    with torch.no_grad():
        clean = run(model, tokens, capture=upstream_hooks(sources, target), stop_at=read)
        target_value(target, clean[read][0], token_strings(model, tokens))

        def along_path(nodes: Nodes) -> Tensor:
            return mean_gradient(model, tokens, hooks.site(nodes.sae).write, total_delta(nodes, q + 1), target, steps)

        return first_order_scores(model, sources, target, baseline, clean, along_path)


def downstream(
    model: HookedTransformer,
    tokens: Tensor,
    source: Anchor,
    targets: Mapping[str, SAE],
    baseline: Baseline,
    steps: int = STEPS,
) -> list[Scored]:
    """Integrated-gradients scores of the source on every active feature of every target SAE."""
    points = alphas(steps, torch.float64)
    where, p, n_pos = hooks.site(source.sae), source.position, tokens.shape[1]
    reads = {hooks.site(sae).read for sae in targets.values()}
    with torch.no_grad():
        clean = run(model, tokens, capture={where.read, where.write}, stop_at=where.write)
        read_act, write_act = clean[where.read][0], clean[where.write][0]
        base = baseline.values(model, {source.name: source.sae}, n_pos)[source.name]
        delta = anchor_delta(source, read_act, base, token_strings(model, tokens), write_act.dtype)
        everywhere = torch.ones(n_pos, dtype=torch.bool, device=write_act.device)
        path = total_delta(source_nodes(source.name, source.sae, read_act, write_act, base, everywhere), n_pos)
        primal: dict[str, Tensor] = {}
        derivative: dict[str, Tensor] = {}
        for chunk in points.to(path.device, path.dtype).split(batch_size(model, n_pos)):
            shift = _along(model, where.write, path, chunk)

            def perturb(act: Tensor, shift: Tensor = shift) -> Tensor:
                tangent = torch.zeros_like(act)
                tangent[:, p] = hooks.unflat(model, delta, where.write).to(act.dtype)
                return fwad.make_dual(act + shift.to(act.dtype), tangent)

            with fwad.dual_level():
                acts = run(
                    model,
                    tokens.expand(len(chunk), -1),
                    capture=reads,
                    stop_at=max(reads, key=hooks.order),
                    edits={where.write: perturb},
                )
                for name, sae in targets.items():
                    value, tangent = fwad.unpack_dual(hooks.encode(sae, acts[hooks.site(sae).read]))
                    primal.setdefault(name, value[0])  # the first step is alpha = 0: the clean run
                    change = torch.zeros_like(value) if tangent is None else tangent
                    derivative[name] = derivative.get(name, 0) + change.sum(0)
    out = []
    for name, sae in targets.items():
        allowed = downstream_allowed(source, hooks.site(sae).read, n_pos, primal[name].device)
        out.append(target_nodes(name, sae, primal[name], allowed, -derivative[name] / steps))
    return out
