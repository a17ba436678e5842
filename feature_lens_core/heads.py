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

from collections.abc import Mapping, Sequence
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
from feature_lens_core.methods.nodes import reachable, source_nodes, target_value, token_strings
from feature_lens_core.methods.runner import Edit, run, weights_frozen
from feature_lens_core.methods.types import BaselineValues, Target
from feature_lens_core.options import BaselineKind
from feature_lens_core.ranking import anchor_of, other_side
from feature_lens_core.targets import FeatureRef
from feature_lens_core.targets import Target as TargetRef

HEAD_COLUMNS = ["layer", "head", "covered", "score"]
HEAD_TYPES = {"layer": int, "head": int, "covered": bool, "score": float}  # kept when no head lies on the way
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
    whose score for this node equals `edge`. `head_loadings_many` splits several edges into one target at once.

    Returns:
        `HeadSplit`: heads (layer, head, covered, score), residual and edge.
    """
    split = head_loadings_many(model, saes, prompt, [source], target, baseline=baseline, corrupt_prompt=corrupt_prompt)
    return split[0]


def head_loadings_many(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    sources: Sequence[FeatureRef],
    target: TargetRef,
    *,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
) -> list[HeadSplit]:
    """`head_loadings` of every edge from `sources` into `target`, in their order.

    Two kinds of pass on the frozen model: one backward pass from the target with every uncovered attention
    layer's change cut at `hook_z` (the residual part of every source, and the target's derivative with respect
    to each head's output with every other head held), shared by all the sources; and one forward-mode pass per
    source SAE, its sources as a batch, carrying each source's change to every head's output along all paths.
    A head's term is the product of the two.
    """
    validation.sae_set(model, saes)
    validation.choice(baseline, ("zero", "mean", "corrupt"), "baseline")
    tokens = validation.prompt_tokens(model, prompt)
    validation.check_target(saes, target, tokens.shape[1])
    anchor = anchor_of(model, saes, target)
    upstream = other_side(saes, target, "upstream")
    if isinstance(sources, FeatureRef | str) or not sources:
        raise FeatureLensError("Give the sources as a non-empty list of FeatureRef(sae, feature, position).")
    for source in sources:
        _check_source(saes, upstream, source, anchor, tokens.shape[1])
    base = validation.baseline(model, tokens, baseline, corrupt_prompt)
    q = anchor.position
    tokens = tokens[:, : q + 1]
    covered = covered_blocks(upstream.values())
    writes = sorted({hooks.site(saes[source.sae]).write for source in sources}, key=hooks.order)
    layers = _attention_layers(model, writes[0], anchor.read)
    open_layers = [layer for layer in layers if _z_hook(layer) not in covered]
    with exclusive():
        acts, to_sources, to_heads = _gradients(model, tokens, upstream, anchor, writes, open_layers)
        with torch.no_grad():
            values = base.values(model, {source.sae: saes[source.sae] for source in sources}, q + 1)
            deltas = [_source_delta(source, saes[source.sae], acts, values[source.sae]) for source in sources]
        reaching: dict[int, dict[int, Tensor]] = {}  # source index -> layer -> change at its hook_z
        for write in writes:
            batch = [i for i, source in enumerate(sources) if hooks.site(saes[source.sae]).write == write]
            later = [layer for layer in open_layers if hooks.is_before(write, _z_hook(layer))]
            changes = _changes_at_heads(
                model, tokens, covered, write, [(sources[i].position, deltas[i]) for i in batch], later
            )
            reaching |= {i: {layer: change[row] for layer, change in changes.items()} for row, i in enumerate(batch)}
    out = []
    for i, source in enumerate(sources):
        write = hooks.site(saes[source.sae]).write
        residual = -float((deltas[i] * hooks.flat(to_sources[write], write)[source.position]).sum())
        rows = []
        for layer in _attention_layers(model, write, anchor.read):
            if layer in open_layers:
                scores = -(reaching[i][layer] * to_heads[layer]).sum(dim=(0, 2))
            else:
                scores = torch.zeros(model.cfg.n_heads, dtype=deltas[i].dtype)
            rows += [[layer, h, layer not in open_layers, float(score)] for h, score in enumerate(scores.tolist())]
        frame = pd.DataFrame(rows, columns=HEAD_COLUMNS).astype(HEAD_TYPES)
        frame = frame.iloc[np.argsort(-frame.score.abs().to_numpy(), kind="stable")].reset_index(drop=True)
        out.append(HeadSplit(str(source), str(target), frame, residual, residual + float(frame.score.sum())))
    return out


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
    writes: list[str],
    open_layers: list[int],
) -> tuple[dict[str, Tensor], dict[str, Float[Tensor, "pos ..."]], dict[int, Float[Tensor, "pos n_heads d_head"]]]:
    """One backward pass of the frozen model with every open attention layer's change cut at its output.

    Returns the clean activations, the target's derivative with respect to each of the `writes` hooks along
    paths through no open attention layer, and its derivative with respect to each open layer's `hook_z` with every
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
    edits |= {write: leaf_at(write, hold=write in covered) for write in writes}
    sae_hooks = {h for sae in sources.values() for h in (hooks.site(sae).read, hooks.site(sae).write)}
    with weights_frozen(model, *target.modules), torch.enable_grad():
        acts = run(model, tokens, capture=sae_hooks | {target.read}, stop_at=target.read, edits=edits)
        g = target_value(target, acts[target.read][0], token_strings(model, tokens), frozen_norm=True)
        wanted = [*writes, *(_z_hook(layer) for layer in open_layers)]
        grads = torch.autograd.grad(g, [leaves[hook] for hook in wanted], allow_unused=True)
    found = {hook: torch.zeros_like(leaves[hook]) if d is None else d for hook, d in zip(wanted, grads, strict=True)}
    acts = {hook: act.detach() for hook, act in acts.items()}
    return acts, {w: found[w][0] for w in writes}, {layer: found[_z_hook(layer)][0] for layer in open_layers}


def _source_delta(
    source: FeatureRef, sae: SAE, acts: Mapping[str, Tensor], base: BaselineValues
) -> Float[Tensor, " d_write"]:
    """What ablating the source node adds at its write hook, at its position (as the rankings build it; only
    its position is encoded)."""
    where, p = hooks.site(sae), source.position
    at = BaselineValues(base.features[p : p + 1], base.error[p : p + 1], base.widens)
    read, write = acts[where.read][0, p : p + 1], acts[where.write][0, p : p + 1]
    nodes = source_nodes(source.sae, sae, read, write, at, torch.ones(1, dtype=torch.bool, device=write.device))
    match = (nodes.features == source.feature).nonzero().flatten()
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
    changes: list[tuple[int, Float[Tensor, " d_write"]]],
    open_layers: list[int],
) -> dict[int, Float[Tensor, "batch pos n_heads d_head"]]:
    """One forward-mode pass of the frozen model, one batch row per (position, delta) in `changes` at `write`: the
    change each open attention layer's `hook_z` gets from it along every path."""
    if not open_layers:
        return {}

    def perturb(act: Tensor) -> Tensor:
        tangent = torch.zeros_like(act)
        for row, (position, delta) in enumerate(changes):
            tangent[row, position] = hooks.unflat(model, delta.to(act.dtype), write)
        return fwad.make_dual(held(act) if write in covered else act, tangent)

    edits: dict[str, Edit] = {hook: held for hook in [*frozen_hooks(model), *(covered - {write})]}
    edits[write] = perturb
    wanted = [_z_hook(layer) for layer in open_layers]
    out = {}
    with torch.no_grad(), fwad.dual_level():
        batch = tokens.expand(len(changes), -1)
        acts = run(model, batch, capture=wanted, stop_at=max(wanted, key=hooks.order), edits=edits)
        for layer, hook in zip(open_layers, wanted, strict=True):
            primal, tangent = fwad.unpack_dual(acts[hook])
            out[layer] = (torch.zeros_like(primal) if tangent is None else tangent).clone()
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
