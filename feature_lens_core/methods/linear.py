"""First-order scores, -<delta, dg/dx_U[p]>, on the model itself or on its frozen linearisation.

Both attribution patching and direct attribution are this product of a source's `delta` with the
target's derivative at the source's write hook; they differ in the model that derivative is taken on.

- `frozen=False` (attribution patching): the model as it is, every path included.
- `frozen=True` (direct attribution): LayerNorm scales (ln1, ln2, ln_final) and attention patterns held
  at their clean values, and the output of every block that a chosen SAE covers (an attention `hook_z`
  SAE, an MLP-output SAE or a transcoder of that layer) held at its clean value too. What is left is
  linear in a change of the residual stream except the MLPs no SAE covers, which are linearised at their
  clean input: uncovered attention passes a change on through its frozen pattern and OV circuit, an
  uncovered MLP through its Jacobian, and a covered block passes nothing on (paths through it run through
  its SAE's nodes, features and error, which are nodes of the graph themselves). The target's readout is
  frozen the same way: its SAE's encoder at the clean input, or ln_final at its clean scale for a logit.
  With every block between source and target covered, only the residual stream carries the change.

Upstream: one forward pass (truncated at the target's position, stopped at its read hook) with a zero leaf
at every source write hook and one backward pass from the target to all leaves; the model's and SAE's
weights are frozen for that pass, so it records only what activation gradients need. Downstream: one
forward-mode pass, the source's `delta` as the tangent at its write hook; every downstream feature's
directional derivative comes out of that one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwad
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods.nodes import (
    anchor_delta,
    downstream_allowed,
    first_order_scores,
    target_nodes,
    target_value,
    token_strings,
    upstream_hooks,
)
from feature_lens_core.methods.runner import Edit, run, weights_frozen
from feature_lens_core.methods.types import Anchor, Baseline, Nodes, Scored, Target

FROZEN = ("ln1.hook_scale", "ln2.hook_scale", "attn.hook_pattern")
MEDIATING_KINDS = ("attn_z", "mlp_out", "transcoder")  # SAE kinds whose write hook is a whole block's output


def load_forward_mode() -> None:
    """Load what forward-mode autodiff loads on its first use in a process (torch imports its JVP decompositions
    then, about 0.5 s), so that the first downstream ranking by a linear method does not wait for it. Forward-mode
    levels are the process's, so this holds the compute lock as every forward-mode pass does."""
    with exclusive(), fwad.dual_level():
        fwad.make_dual(torch.zeros(()), torch.zeros(()))


def held(act: Tensor) -> Tensor:
    """`act` at its clean value with no derivative: detached (backward) and without a tangent (forward mode)."""
    return fwad.unpack_dual(act).primal.detach()


def frozen_hooks(model: HookedTransformer) -> list[str]:
    """The hooks direct attribution holds at their clean values: every LayerNorm scale and attention pattern."""
    names = [f"blocks.{layer}.{name}" for layer in range(model.cfg.n_layers) for name in FROZEN]
    return [name for name in names if name in model.hook_dict]


def covered_blocks(saes: Iterable[SAE]) -> set[str]:
    """Write hooks of the SAEs that cover a whole block's output (attention hook_z, MLP out, transcoders)."""
    return {hooks.site(sae).write for sae in saes if hooks.site(sae).kind in MEDIATING_KINDS}


@contextmanager
def frozen_pass(
    model: HookedTransformer,
    tokens: Int[Tensor, "1 pos"],
    sources: Mapping[str, SAE],
    target: Target,
    *,
    rows: int,
    frozen: bool,
    also: Collection[str] = (),
) -> Iterator[tuple[dict[str, Tensor], Callable[[Float[Tensor, ""]], dict[str, Tensor]]]]:
    """One forward pass of `rows` copies of the prompt, up to `target`'s read hook, kept for several backward
    passes: yields the captured activations and `gradient_of(total)`, the derivative of a scalar computed from
    them at every source write hook and every hook in `also` ([rows, pos, ...] as the hook's activation is
    shaped; zeros where `total` does not depend on it).

    Rows are independent, so a sum over rows of one target per row gives each row its own target's derivative.
    Targets that read at one hook through the same modules share the pass (circuit-tracer's attribution keeps
    one forward for all its backward passes the same way). The compute lock is held until the block ends.
    """
    writes = sorted({hooks.site(sae).write for sae in sources.values()} | set(also))
    covered = covered_blocks(sources.values()) if frozen else set()
    leaves: dict[str, Tensor] = {}

    def leaf_at(hook: str) -> Edit:
        def edit(act: Tensor) -> Tensor:
            leaves[hook] = torch.zeros_like(act, requires_grad=True)
            return (held(act) if hook in covered else act) + leaves[hook]

        return edit

    edits: dict[str, Edit] = {hook: held for hook in frozen_hooks(model)} if frozen else {}
    edits |= {w: leaf_at(w) for w in writes}

    def gradient_of(total: Tensor) -> dict[str, Tensor]:
        grads = torch.autograd.grad(total, [leaves[w] for w in writes], allow_unused=True, retain_graph=True)
        return {w: torch.zeros_like(leaves[w]) if d is None else d for w, d in zip(writes, grads, strict=True)}

    with exclusive(), weights_frozen(model, *target.modules), torch.enable_grad():
        capture = upstream_hooks(sources, target)
        yield run(model, tokens.expand(rows, -1), capture=capture, stop_at=target.read, edits=edits), gradient_of


def target_gradients(
    model: HookedTransformer,
    tokens: Int[Tensor, "1 pos"],
    sources: Mapping[str, SAE],
    targets: Sequence[Target],
    *,
    frozen: bool,
    value: Callable[[Float[Tensor, "batch pos ..."]], Float[Tensor, " batch"]],
    also: Collection[str] = (),
) -> tuple[dict[str, Tensor], dict[str, Float[Tensor, "batch pos d_write"]]]:
    """The derivative of each target at every source write hook, one batch row per target: one forward, one
    backward (`frozen_pass`).

    The targets share one read hook and their modules. Returns the captured activations (row 0 is the clean
    run) and, per source write hook and per hook in `also` (such as `hook_embed`), the gradient
    [batch, pos, ...] as the hook's activation is shaped (zeros where the target does not depend on it).
    """
    with frozen_pass(model, tokens, sources, targets[0], rows=len(targets), frozen=frozen, also=also) as (
        acts,
        gradient_of,
    ):
        return acts, gradient_of(value(acts[targets[0].read]).sum())


def upstream(
    model: HookedTransformer,
    tokens: Tensor,
    sources: Mapping[str, SAE],
    target: Target,
    baseline: Baseline,
    *,
    frozen: bool,
) -> list[Scored]:
    """First-order scores of every node of every source SAE on the target: one forward, one backward."""
    tokens = tokens[:, : target.position + 1]
    strings = token_strings(model, tokens)

    def value(read_act: Tensor) -> Tensor:
        return target_value(target, read_act[0], strings, frozen_norm=frozen)[None]

    acts, gradient = target_gradients(model, tokens, sources, [target], frozen=frozen, value=value)

    def at_write(nodes: Nodes) -> Tensor:
        write = hooks.site(nodes.sae).write
        return hooks.flat(gradient[write][0], write)

    with torch.no_grad():
        return first_order_scores(model, sources, target, baseline, acts, at_write)


def downstream(
    model: HookedTransformer,
    tokens: Tensor,
    source: Anchor,
    targets: Mapping[str, SAE],
    baseline: Baseline,
    *,
    frozen: bool,
) -> list[Scored]:
    """First-order scores of the source on every active feature of every target SAE: one forward-mode pass."""
    where = hooks.site(source.sae)
    str_tokens = token_strings(model, tokens)
    reads = {hooks.site(sae).read for sae in targets.values()}
    covered = covered_blocks([source.sae, *targets.values()]) if frozen else set()
    base = baseline.values(model, {source.name: source.sae}, tokens.shape[1])[source.name]
    seen: dict[str, Tensor] = {}  # activations as they reach a hook, before it is held or perturbed

    def perturb(act: Tensor) -> Tensor:
        delta = anchor_delta(source, seen.get(where.read, act)[0], base, str_tokens, act.dtype)
        tangent = torch.zeros_like(act)
        tangent[0, source.position] = hooks.unflat(model, delta, where.write)
        return fwad.make_dual(held(act) if where.write in covered else act, tangent)

    def hold(hook: str) -> Edit:
        def edit(act: Tensor) -> Tensor:
            seen[hook] = act  # a target reading this block's output reads it before it is held
            return held(act)

        return edit

    def remember(act: Tensor) -> Tensor:
        seen[where.read] = act
        return act

    edits: dict[str, Edit] = {hook: held for hook in frozen_hooks(model)} if frozen else {}
    edits |= {hook: hold(hook) for hook in covered - {where.write}}
    edits |= {where.write: perturb} | ({where.read: remember} if where.read != where.write else {})
    with torch.no_grad(), fwad.dual_level():
        acts = run(model, tokens, capture=reads, stop_at=max(reads, key=hooks.order), edits=edits)
        out = []
        for name, sae in targets.items():
            read = hooks.site(sae).read
            primal, tangent = fwad.unpack_dual(hooks.encode(sae, seen.get(read, acts[read])[0]))
            score = torch.zeros_like(primal) if tangent is None else -tangent
            allowed = downstream_allowed(source, read, tokens.shape[1], primal.device)
            out.append(target_nodes(name, sae, primal, allowed, score))
    return out
