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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

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
from feature_lens_core.methods.runner import Edit, batch_size, run, weights_frozen
from feature_lens_core.methods.types import BaselineValues, Target
from feature_lens_core.options import BaselineKind
from feature_lens_core.ranking import anchor_of, other_side
from feature_lens_core.targets import FeatureRef
from feature_lens_core.targets import Target as TargetRef

HEAD_COLUMNS = ["layer", "head", "covered", "score"]
DFA_COLUMNS = ["position", "token", "head", "score"]


@dataclass(frozen=True)
class HeadSplit:
    """A direct edge split by the last attention head each of its paths passes through.

    `terms[i, h]` is head h of layer `layers[i]`, for every attention layer between the source's write and the
    target's read (`covered[i]`: whether a chosen `hook_z` SAE covers that layer, so its terms are 0).
    `edge = residual + terms.sum()` is the direct score of the edge. `heads` is the same as a table.
    """

    source: str
    target: str
    layers: tuple[int, ...]
    covered: tuple[bool, ...]
    terms: Float[np.ndarray, "layers n_heads"]
    residual: float
    edge: float

    @cached_property
    def heads(self) -> pd.DataFrame:
        """One row per head (columns layer, head, covered, score), sorted by |score| (built on first use: a
        graph splits thousands of edges and shows a few)."""
        n_heads = self.terms.shape[1]
        scores = self.terms.flatten()
        order = np.argsort(-np.abs(scores), kind="stable")
        return pd.DataFrame(
            {
                "layer": np.repeat(np.asarray(self.layers, dtype=int), n_heads)[order],
                "head": np.tile(np.arange(n_heads, dtype=int), len(self.layers))[order],
                "covered": np.repeat(np.asarray(self.covered, dtype=bool), n_heads)[order],
                "score": scores[order],
            },
            columns=HEAD_COLUMNS,
        )

    def top(self, count: int) -> list[tuple[int, int, float]]:
        """The `count` heads with the largest |term| (layer, head, term), leaving out terms that are 0."""
        flat = self.terms.flatten()
        order = [i for i in np.argsort(-np.abs(flat), kind="stable")[:count] if flat[i] != 0]
        n_heads = self.terms.shape[1]
        return [(self.layers[i // n_heads], int(i % n_heads), float(flat[i])) for i in order]


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
    """`head_loadings` of every edge from `sources` into `target`, in their order (see `edge_head_loadings`)."""
    if isinstance(sources, FeatureRef | str) or not sources:
        raise FeatureLensError("Give the sources as a non-empty list of FeatureRef(sae, feature, position).")
    edges = [(source, target) for source in sources]
    return edge_head_loadings(model, saes, prompt, edges, baseline=baseline, corrupt_prompt=corrupt_prompt)


def edge_head_loadings(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    edges: Sequence[tuple[FeatureRef, TargetRef]],
    *,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
) -> list[HeadSplit]:
    """`head_loadings` of every (source, target) edge, in their order: a whole graph's edges at once.

    A head's term is the product of two derivatives of the frozen model, each shared by many edges:

    - the change a source makes at every attention layer's output (`hook_z`) along every path through no
      covered block does not depend on the target, so it comes from one forward-mode pass per source write
      hook with every distinct source of that hook as a batch row;
    - the target's derivative with respect to each uncovered attention layer's output (every other one held)
      and to each source write hook (the residual part) comes from one backward pass per group of targets
      that read at one hook, one batch row each.

    Returns:
        One `HeadSplit` per edge, as `head_loadings` gives it.
    """
    validation.sae_set(model, saes)
    validation.choice(baseline, ("zero", "mean", "corrupt"), "baseline")
    tokens = validation.prompt_tokens(model, prompt)
    n_pos = tokens.shape[1]
    if isinstance(edges, tuple | str) and len(edges) == 2 or not edges:
        raise FeatureLensError("Give the edges as a non-empty list of (FeatureRef source, target) pairs.")
    anchors: dict[TargetRef, Target] = {}
    upstreams: dict[TargetRef, dict[str, SAE]] = {}
    for _, target in edges:
        if target not in anchors:
            validation.check_target(saes, target, n_pos)
            anchors[target], upstreams[target] = anchor_of(model, saes, target), other_side(saes, target, "upstream")
    for source, target in edges:
        _check_source(saes, upstreams[target], source, anchors[target], n_pos)
    sources = list(dict.fromkeys(source for source, _ in edges))
    names = list(dict.fromkeys(source.sae for source in sources))
    base = validation.baseline(model, tokens, baseline, corrupt_prompt)
    values = base.values(model, {name: saes[name] for name in names}, n_pos)
    with exclusive():
        gradients, clean = _target_gradients(model, saes, tokens, list(anchors), anchors, upstreams, names)
        deltas = _source_deltas(saes, clean, sources, values)
        needed: dict[FeatureRef, set[int]] = {}  # the layers open for some target of the source's edges
        for source, target in edges:
            write = hooks.site(saes[source.sae]).write
            later = (layer for layer in gradients[target][1] if hooks.is_before(write, _z_hook(layer)))
            needed.setdefault(source, set()).update(later)
        changes = _changes_at_heads(model, saes, tokens, deltas, needed)
    out = []
    for source, target in edges:
        write, (to_writes, to_heads) = hooks.site(saes[source.sae]).write, gradients[target]
        delta = deltas[source]
        residual = -float((delta * hooks.flat(to_writes[write], write)[source.position]).sum())
        layers = _attention_layers(model, write, anchors[target].read)
        terms = torch.zeros(len(layers), model.cfg.n_heads, dtype=torch.float64)
        for i, layer in enumerate(layers):
            if layer in to_heads:
                reached = changes[source][layer][: len(to_heads[layer])]
                terms[i] = -(reached * to_heads[layer]).sum(dim=(0, 2)).double().cpu()
        covered = tuple(layer not in to_heads for layer in layers)
        edge = residual + float(terms.sum())
        out.append(HeadSplit(str(source), str(target), tuple(layers), covered, terms.numpy(), residual, edge))
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


def _source_deltas(
    saes: Mapping[str, SAE],
    clean: Mapping[str, Float[Tensor, "pos ..."]],
    sources: list[FeatureRef],
    base: Mapping[str, BaselineValues],
) -> dict[FeatureRef, Float[Tensor, " d_write"]]:
    """What ablating each source node adds at its write hook, at its position, as the rankings build it, from the
    clean activations `clean` (the first positions of the prompt, at least up to every source's)."""
    out = {}
    with torch.no_grad():
        for name, values in base.items():
            where, sae = hooks.site(saes[name]), saes[name]
            mine = [source for source in sources if source.sae == name]
            at = torch.tensor(sorted({source.position for source in mine}), device=clean[where.write].device)
            read, write = clean[where.read][at], clean[where.write][at]  # only the sources' positions are encoded
            rows = BaselineValues(values.features[at], values.error[at], values.widens)
            nodes = source_nodes(name, sae, read, write, rows, torch.ones(len(at), dtype=torch.bool, device=at.device))
            keys = node_keys(sae, at[nodes.positions], nodes.features).tolist()
            row = {key: i for i, key in enumerate(keys)}
            for source in mine:
                key = int(node_keys(sae, torch.tensor(source.position), torch.tensor(source.feature)))
                if key not in row:
                    raise FeatureLensError(
                        f"Feature {source.feature} of '{name}' is not active at position {source.position} (nor on "
                        "the baseline), so it is not a node and has no edge. Pick an active feature (see "
                        "`activations`)."
                    )
                out[source] = nodes.delta[row[key]]
    return out


def _changes_at_heads(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Tensor,
    deltas: Mapping[FeatureRef, Float[Tensor, " d_write"]],
    needed: Mapping[FeatureRef, set[int]],
) -> dict[FeatureRef, dict[int, Float[Tensor, "pos n_heads d_head"]]]:
    """The change each source's delta makes at the `needed` attention layers' `hook_z` along every path through
    no covered block: one forward-mode pass of the frozen model per source write hook that has a layer to reach,
    one batch row per source.

    A layer's change is read as it reaches `hook_z`, before a covering SAE holds it: a target of that SAE sees
    the layer open, every later target sees it covered (and takes nothing through it).
    """
    covered = covered_blocks(saes.values())
    out: dict[FeatureRef, dict[int, Tensor]] = {}
    by_write: dict[str, list[FeatureRef]] = {}
    for source in deltas:
        if needed[source]:
            by_write.setdefault(hooks.site(saes[source.sae]).write, []).append(source)
    for write, batch in by_write.items():
        later = sorted(set().union(*(needed[source] for source in batch)))
        seen: dict[str, Tensor] = {}

        def perturb(act: Tensor, write: str = write, batch: list[FeatureRef] = batch) -> Tensor:
            tangent = torch.zeros_like(act)
            for row, source in enumerate(batch):
                tangent[row, source.position] = hooks.unflat(model, deltas[source].to(act.dtype), write)
            return fwad.make_dual(held(act) if write in covered else act, tangent)

        def reach(hook: str, seen: dict[str, Tensor] = seen) -> Edit:
            def edit(act: Tensor) -> Tensor:
                primal, tangent = fwad.unpack_dual(act)
                seen[hook] = torch.zeros_like(primal) if tangent is None else tangent.clone()
                return held(act) if hook in covered else act

            return edit

        wanted = [_z_hook(layer) for layer in later]
        edits: dict[str, Edit] = {hook: held for hook in [*frozen_hooks(model), *(covered - {write, *wanted})]}
        edits |= {hook: reach(hook) for hook in wanted} | {write: perturb}
        with torch.no_grad(), fwad.dual_level():
            run(model, tokens.expand(len(batch), -1), stop_at=wanted[-1], edits=edits)
            for row, source in enumerate(batch):
                out[source] = {layer: seen[hook][row] for layer, hook in zip(later, wanted, strict=True)}
    return out


def _target_gradients(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Tensor,
    targets: list[TargetRef],
    anchors: Mapping[TargetRef, Target],
    upstreams: Mapping[TargetRef, dict[str, SAE]],
    names: Collection[str],
) -> tuple[
    dict[TargetRef, tuple[dict[str, Float[Tensor, "pos ..."]], dict[int, Float[Tensor, "pos n_heads d_head"]]]],
    dict[str, Float[Tensor, "pos ..."]],
]:
    """Each target's derivative with respect to every upstream write hook along paths through no uncovered
    attention layer, and with respect to each uncovered attention layer's `hook_z` with every other one held:
    one backward pass of the frozen model per group of targets reading at one hook (one batch row each, at most
    `batch_size` rows). Also the clean activations at the read and write hooks of the SAEs `names` (each over
    the most positions a pass ran), which the sources' deltas are built from."""
    groups: dict[tuple[str, tuple[str, ...]], list[TargetRef]] = {}
    for target in targets:
        groups.setdefault((anchors[target].read, tuple(upstreams[target])), []).append(target)
    rows = batch_size(model, tokens.shape[1])
    out, clean = {}, {}
    for (read, upstream), group in groups.items():
        sources = {name: saes[name] for name in upstream}
        capture = {
            h for name in upstream if name in names for h in (hooks.site(saes[name]).read, hooks.site(saes[name]).write)
        }
        covered = covered_blocks(sources.values())
        writes = sorted({hooks.site(sae).write for sae in sources.values()}, key=hooks.order)
        layers = _attention_layers(model, writes[0], read)
        open_layers = [layer for layer in layers if _z_hook(layer) not in covered]
        for begin in range(0, len(group), rows):
            batch = group[begin : begin + rows]
            found = _gradients(model, tokens, sources, [anchors[t] for t in batch], writes, open_layers, capture)
            for row, target in enumerate(batch):
                to_writes = {write: found[0][write][row] for write in writes}
                out[target] = (to_writes, {layer: found[1][layer][row] for layer in open_layers})
            clean |= {hook: act for hook, act in found[2].items() if len(act) > len(clean.get(hook, ()))}
    return out, clean


def _gradients(
    model: HookedTransformer,
    tokens: Tensor,
    sources: Mapping[str, SAE],
    targets: list[Target],
    writes: list[str],
    open_layers: list[int],
    capture: Collection[str],
) -> tuple[
    dict[str, Float[Tensor, "batch pos ..."]],
    dict[int, Float[Tensor, "batch pos n_heads d_head"]],
    dict[str, Float[Tensor, "pos ..."]],
]:
    """One backward pass of the frozen model, one batch row per target (all reading at one hook), with every open
    attention layer's change cut at its output: the derivatives at the `writes` hooks along paths through no
    open attention layer, and at each open layer's `hook_z` with every other open layer held; and the clean
    activations at the `capture` hooks."""
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
    n = max(target.position for target in targets) + 1
    read = targets[0].read
    strings = token_strings(model, tokens[:, :n])
    modules = {id(m): m for target in targets for m in target.modules}
    with weights_frozen(model, *modules.values()), torch.enable_grad():
        acts = run(model, tokens[:, :n].expand(len(targets), -1), capture={read, *capture}, stop_at=read, edits=edits)
        g = torch.stack([target_value(t, acts[read][row], strings, frozen_norm=True) for row, t in enumerate(targets)])
        wanted = [*writes, *(_z_hook(layer) for layer in open_layers)]
        grads = torch.autograd.grad(g.sum(), [leaves[hook] for hook in wanted], allow_unused=True)
    found = {hook: torch.zeros_like(leaves[hook]) if d is None else d for hook, d in zip(wanted, grads, strict=True)}
    clean = {hook: acts[hook][0].detach() for hook in capture}
    return {w: found[w] for w in writes}, {layer: found[_z_hook(layer)] for layer in open_layers}, clean


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
