"""Head loadings: a direct edge split by the attention head that carries it, and an attention SAE feature's
input split by head and source position (direct feature attribution).

Direct attribution freezes LayerNorm scales and attention patterns at the clean run (`methods.linear`), so the
direct edge from a source node to a target is linear in the source's change and can be split exactly:

- **By head** (`head_loadings`): every path from the source to the target either passes through no uncovered
  attention layer (the *residual* part) or has a *last* attention head it passes through: head h of layer l,
  after which it reaches the target through the residual stream and uncovered MLPs only. The edge is the
  residual part plus one term per head, each path counted once under its last head. For a target that reads
  attention (a `hook_z` SAE), that last head is always one of the target's own layer, so its residual part is 0.
  A layer whose output a chosen SAE covers (its `hook_z` SAE is in the set) mediates: its terms are 0.
- **By source position and head** (`direct_feature_attribution`): a `hook_z` SAE feature's pre-activation at
  query position q is `sum_{s, h} A[h, q, s] v[s, h] . W_enc[h, :, g] + bias`, the convention of sae_vis and of
  Kissane et al. (2024); `v` includes `b_V`, and bias = `b_enc[g] - b_dec . W_enc[:, g]` when the SAE subtracts
  its decoder bias from the input (else `b_enc[g]`).

docs/methods.md ("Attention, opened up") has the definitions and the proofs in the test suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.autograd.forward_ad as fwad
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, validation
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods.linear import covered_blocks, frozen_hooks, held
from feature_lens_core.methods.nodes import node_keys, reachable, source_nodes, target_value, token_strings
from feature_lens_core.methods.runner import Edit, run, weights_frozen
from feature_lens_core.methods.types import Baseline, Target
from feature_lens_core.options import BaselineKind
from feature_lens_core.ranking import anchor_of, other_side
from feature_lens_core.targets import FeatureRef
from feature_lens_core.targets import Target as TargetRef

HEAD_COLUMNS = ["layer", "head", "covered", "score"]
DFA_COLUMNS = ["position", "token", "head", "score"]


@dataclass(frozen=True)
class HeadSplit:
    """A direct edge split by the last attention head each of its paths passes through.

    `heads` has one row per head of every attention layer between the source's write and the target's read
    (columns layer, head, covered: whether a chosen `hook_z` SAE covers that layer, so its term is 0; score),
    sorted by |score|. `edge = residual + heads.score.sum()` is the direct score of the edge.
    """

    source: str
    target: str
    heads: pd.DataFrame
    residual: float
    edge: float


@dataclass(frozen=True)
class DirectFeatureAttribution:
    """A `hook_z` SAE feature's pre-activation split by source position and head.

    `terms` has one row per (source position, head) at positions 0..q (columns position, token, head, score),
    in that order; `terms.score.sum() + bias == pre_activation`.
    """

    feature: int
    position: int
    terms: pd.DataFrame
    pre_activation: float
    bias: float

    def grid(self) -> Float[np.ndarray, "pos n_heads"]:
        """The terms as a [source position, head] array."""
        return self.terms.pivot(index="position", columns="head", values="score").to_numpy()


def _z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _attention_layers(model: HookedTransformer, write: str, read: str) -> list[int]:
    """Layers whose attention output lies after `write` and no later than `read` (the read itself included)."""
    return [
        layer
        for layer in range(model.cfg.n_layers)
        if hooks.is_before(write, _z_hook(layer)) and not hooks.is_before(read, _z_hook(layer))
    ]


def head_loadings(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    source: FeatureRef,
    target: TargetRef,
    *,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
) -> HeadSplit:
    """Split the direct edge from `source` to `target` into its residual part and one term per attention head.

    `source` is a node of one of `saes` upstream of the target: a feature, or the SAE's error node (feature -1).
    The chosen set (covered blocks, frozen readout) is as in `rank(..., direction="upstream", method="direct")`,
    whose score for this node equals `edge`. Two passes on the frozen model: one backward pass from the target
    with every uncovered attention layer's change cut at `hook_z` (giving the residual part and the derivative
    of the target with respect to each head's output, every later head held), one forward-mode pass of the
    source's change (giving the change reaching each head's output along all paths); their product per head is
    that head's term.

    Returns:
        `HeadSplit`: heads (layer, head, covered, score), residual and edge.
    """
    validation.sae_set(model, saes)
    validation.choice(baseline, ("zero", "mean", "corrupt"), "baseline")
    tokens = validation.prompt_tokens(model, prompt)
    validation.check_target(saes, target, tokens.shape[1])
    anchor = anchor_of(model, saes, target)
    sources = other_side(saes, target, "upstream")
    _check_source(saes, sources, source, anchor, tokens.shape[1])
    base = validation.baseline(model, tokens, baseline, corrupt_prompt)
    q = anchor.position
    tokens = tokens[:, : q + 1]
    sae = saes[source.sae]
    write = hooks.site(sae).write
    layers = _attention_layers(model, write, anchor.read)
    covered = covered_blocks(sources.values())
    open_layers = [layer for layer in layers if _z_hook(layer) not in covered]
    with exclusive():
        acts, to_source, to_heads = _gradients(model, tokens, sources, anchor, write, open_layers)
        with torch.no_grad():
            delta = _source_delta(model, source, sae, acts, base, q)
        reaching = _changes_at_heads(model, tokens, covered, write, source.position, delta, open_layers)
    residual = -float((delta * hooks.flat(to_source, write)[source.position]).sum())
    rows = []
    for layer in layers:
        if layer in open_layers:
            scores = -(reaching[layer] * to_heads[layer]).sum(dim=(0, 2))
        else:
            scores = torch.zeros(model.cfg.n_heads, dtype=delta.dtype)
        rows += [[layer, head, layer not in open_layers, float(score)] for head, score in enumerate(scores.tolist())]
    frame = pd.DataFrame(rows, columns=HEAD_COLUMNS)
    frame = frame.iloc[np.argsort(-frame.score.abs().to_numpy(), kind="stable")].reset_index(drop=True)
    return HeadSplit(str(source), str(target), frame, residual, residual + float(frame.score.sum()))


def _check_source(
    saes: Mapping[str, SAE], sources: Mapping[str, SAE], source: object, anchor: Target, n_pos: int
) -> FeatureRef:
    """`source` if it is a node of an SAE upstream of the target, at a position that can reach the target."""
    if not isinstance(source, FeatureRef):
        raise FeatureLensError(f"The source must be a FeatureRef(sae, feature, position), not {source!r}.")
    if source.sae not in saes:
        raise FeatureLensError(f"SAE '{source.sae}' of the source is not among the SAEs given. Add it to the SAEs.")
    if source.sae not in sources:
        raise FeatureLensError(
            f"SAE '{source.sae}' does not write before the target {anchor.name} reads, so it has no edge to it. "
            f"Pick a source from an earlier SAE ({', '.join(sources) or 'none given'})."
        )
    if source.feature != -1:
        validation.index(source.feature, "Feature", saes[source.sae].cfg.d_sae, f"SAE '{source.sae}' (or -1, error)")
    validation.check_target(saes, FeatureRef(source.sae, max(source.feature, 0), source.position), n_pos)
    write, q = hooks.site(saes[source.sae]).write, anchor.position
    if source.position > q or not reachable(write, anchor.read, q + 1, q, upstream=True)[source.position]:
        where = f"positions <= {q}" if hooks.crosses_positions(write, anchor.read) else f"the target's position {q}"
        raise FeatureLensError(
            f"The source at position {source.position} cannot reach the target at position {q}: from "
            f"'{source.sae}' only nodes at {where} can. Pick another source position."
        )
    return source


def _gradients(
    model: HookedTransformer,
    tokens: Tensor,
    sources: Mapping[str, SAE],
    target: Target,
    write: str,
    open_layers: list[int],
) -> tuple[dict[str, Tensor], Float[Tensor, "pos ..."], dict[int, Float[Tensor, "pos n_heads d_head"]]]:
    """One backward pass of the frozen model with every open attention layer's change cut at its output.

    Returns the clean activations, the target's derivative with respect to the source's write hook along paths
    through no open attention layer, and its derivative with respect to each open layer's `hook_z` with every
    other open layer held (what a change of that layer's head outputs does to the target without passing any
    later attention).
    """
    covered = covered_blocks(sources.values())
    leaves: dict[str, Tensor] = {}

    def leaf_at(hook: str, *, hold: bool) -> Edit:
        def edit(act: Tensor) -> Tensor:
            leaves[hook] = torch.zeros_like(act, requires_grad=True)
            return (held(act) if hold else act) + leaves[hook]

        return edit

    edits: dict[str, Edit] = {hook: held for hook in [*frozen_hooks(model), *covered]}
    edits |= {_z_hook(layer): leaf_at(_z_hook(layer), hold=True) for layer in open_layers}
    edits[write] = leaf_at(write, hold=write in covered)
    sae_hooks = {h for sae in sources.values() for h in (hooks.site(sae).read, hooks.site(sae).write)}
    with weights_frozen(model, *target.modules), torch.enable_grad():
        acts = run(model, tokens, capture=sae_hooks | {target.read}, stop_at=target.read, edits=edits)
        g = target_value(target, acts[target.read][0], token_strings(model, tokens), frozen_norm=True)
        wanted = [write, *(_z_hook(layer) for layer in open_layers)]
        grads = torch.autograd.grad(g, [leaves[hook] for hook in wanted], allow_unused=True)
    found = {hook: torch.zeros_like(leaves[hook]) if d is None else d for hook, d in zip(wanted, grads, strict=True)}
    acts = {hook: act.detach() for hook, act in acts.items()}
    return acts, found[write][0], {layer: found[_z_hook(layer)][0] for layer in open_layers}


def _source_delta(
    model: HookedTransformer, source: FeatureRef, sae: SAE, acts: Mapping[str, Tensor], base: Baseline, q: int
) -> Float[Tensor, " d_write"]:
    """What ablating the source node adds at its write hook, at its position (as the rankings build it)."""
    where = hooks.site(sae)
    values = base.values(model, {source.sae: sae}, q + 1)[source.sae]
    only = torch.zeros(q + 1, dtype=torch.bool, device=acts[where.write].device)
    only[source.position] = True
    nodes = source_nodes(source.sae, sae, acts[where.read][0], acts[where.write][0], values, only)
    key = node_keys(sae, torch.tensor([source.position]), torch.tensor([source.feature]))
    match = (node_keys(sae, nodes.positions, nodes.features) == key.to(nodes.positions.device)).nonzero().flatten()
    if len(match) == 0:
        raise FeatureLensError(
            f"Feature {source.feature} of '{source.sae}' is not active at position {source.position} (nor on the "
            "baseline), so it is not a node and has no edge. Pick an active feature (see `activations`)."
        )
    return nodes.delta[int(match[0])]


def _changes_at_heads(
    model: HookedTransformer,
    tokens: Tensor,
    covered: set[str],
    write: str,
    position: int,
    delta: Float[Tensor, " d_write"],
    open_layers: list[int],
) -> dict[int, Float[Tensor, "pos n_heads d_head"]]:
    """One forward-mode pass of the frozen model: the change each open attention layer's `hook_z` gets from the
    source's `delta` (at its write hook and position) along every path."""
    if not open_layers:
        return {}

    def perturb(act: Tensor) -> Tensor:
        tangent = torch.zeros_like(act)
        tangent[0, position] = hooks.unflat(model, delta.to(act.dtype), write)
        return fwad.make_dual(held(act) if write in covered else act, tangent)

    edits: dict[str, Edit] = {hook: held for hook in [*frozen_hooks(model), *(covered - {write})]}
    edits[write] = perturb
    wanted = [_z_hook(layer) for layer in open_layers]
    out = {}
    with torch.no_grad(), fwad.dual_level():
        acts = run(model, tokens, capture=wanted, stop_at=max(wanted, key=hooks.order), edits=edits)
        for layer, hook in zip(open_layers, wanted, strict=True):
            primal, tangent = fwad.unpack_dual(acts[hook])
            out[layer] = (torch.zeros_like(primal) if tangent is None else tangent)[0].clone()
    return out


def _linear_encoder(sae: SAE) -> tuple[Float[Tensor, "d_in d_sae"], Float[Tensor, " d_sae"]]:
    """W_enc and b_enc of an SAE whose pre-activation is `process_sae_in(x) @ W_enc + b_enc` (standard, JumpReLU
    and top-k SAEs); refuses others (a gated SAE's gate has its own bias)."""
    w_enc, b_enc = getattr(sae, "W_enc", None), getattr(sae, "b_enc", None)
    if not isinstance(w_enc, Tensor) or not isinstance(b_enc, Tensor):
        raise FeatureLensError(
            f"This SAE ({type(sae).__name__}) has no single linear encoder (W_enc, b_enc), so its pre-activation "
            "cannot be split by head. Direct feature attribution supports standard, JumpReLU and top-k SAEs."
        )
    return w_enc, b_enc


def direct_feature_attribution(
    model: HookedTransformer, sae: SAE, prompt: str, *, feature: int, position: int
) -> DirectFeatureAttribution:
    """Feature `feature` of the `hook_z` SAE `sae` at query `position`, its pre-activation split by source
    position and head: term[s, h] = A[h, q, s] v[s, h] . W_enc[h, :, feature] (v = ln1(x_s) W_V + b_V, the
    clean value vector), so that sum of terms + bias = the pre-activation (bias = b_enc, minus b_dec . W_enc
    when the SAE subtracts its decoder bias from its input).

    Returns:
        `DirectFeatureAttribution`: terms (position, token, head, score) for positions 0..q, pre_activation, bias.
    """
    where = hooks.check_fits(model, "sae", sae)
    if where.kind != "attn_z":
        raise FeatureLensError(
            f"Direct feature attribution splits an attention (hook_z) SAE's input by head; this SAE reads "
            f"'{where.read}'. Pick a feature of an attention SAE."
        )
    if getattr(sae.cfg, "normalize_activations", "none") not in ("none", None):
        raise FeatureLensError(
            "This SAE normalises its input at run time, so its pre-activation is not linear in the heads' "
            "outputs. Direct feature attribution needs an SAE with normalize_activations='none'."
        )
    tokens = validation.prompt_tokens(model, prompt)
    validation.index(feature, "Feature", sae.cfg.d_sae, "this SAE")
    validation.index(position, "Position", tokens.shape[1], "the prompt")
    layer, q = where.layer, position
    values, pattern_hook = f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_pattern"
    with exclusive(), torch.no_grad():
        acts = run(model, tokens[:, : q + 1], capture={values, pattern_hook, where.read}, stop_at=where.read)
        dtype = acts[values].dtype
        w_enc, b_enc = _linear_encoder(sae)
        encoder = w_enc.detach().to(dtype)[:, feature]
        per_head = encoder.unflatten(0, (model.cfg.n_heads, model.cfg.d_head))  # [head, d_head]
        pattern = acts[pattern_hook][0, :, q, : q + 1]  # [head, source]
        terms = torch.einsum("hs,shd,hd->sh", pattern, acts[values][0], per_head)
        bias = b_enc.detach().to(dtype)[feature]
        if sae.cfg.apply_b_dec_to_input:
            bias = bias - sae.b_dec.detach().to(dtype) @ encoder
        pre = sae.process_sae_in(acts[where.read][0, q]) @ w_enc[:, feature] + b_enc[feature]
    str_tokens = token_strings(model, tokens)
    n_heads = model.cfg.n_heads
    frame = pd.DataFrame(
        {
            "position": np.repeat(np.arange(q + 1), n_heads),
            "token": np.repeat(np.asarray(str_tokens[: q + 1], dtype=object), n_heads),
            "head": np.tile(np.arange(n_heads), q + 1),
            "score": terms.double().flatten().cpu().numpy(),
        },
        columns=DFA_COLUMNS,
    )
    return DirectFeatureAttribution(feature, q, frame, float(pre), float(bias))
