"""Activation patching: the exact score, by running each ablation.

What makes it cheap (issue 5), none of which changes a number beyond float rounding:

- the clean run is done once, keeping the residual stream entering every block and every
  attention layer's keys and values (TransformerLens's own key/value cache);
- an ablation at position p cannot change earlier positions, so a patched run resumes at the
  source's block *and* at position p, reading the clean keys and values of positions < p;
- upstream, it is truncated at the target's position q (later tokens cannot matter) and stops at
  the target's read hook; the ablations of one source SAE at one position run as one batch (in
  chunks that fit memory), whose row 0 is unpatched so the clean value is computed exactly as the
  patched ones are;
- downstream, one patched pass gives every downstream feature at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from feature_lens_core import hooks
from feature_lens_core.methods.nodes import (
    anchor_delta,
    downstream_allowed,
    node_keys,
    target_nodes,
    target_value,
    token_strings,
    upstream_hooks,
    upstream_nodes,
)
from feature_lens_core.methods.runner import Edit, batch_size, run
from feature_lens_core.methods.types import Anchor, Baseline, Nodes, Scored, Target


def _clean_run(
    model: HookedTransformer, tokens: Tensor, capture: set[str], stop_at: str
) -> tuple[dict[str, Tensor], TransformerLensKeyValueCache]:
    """The clean activations at `capture` and every attention layer's keys and values (up to `stop_at`)."""
    past = TransformerLensKeyValueCache.init_cache(model.cfg, tokens.device, batch_size=1)
    # An explicit all-ones mask: TransformerLens would otherwise infer one that hides pad tokens, which
    # the other methods' runs (no cache, no mask) do not.
    acts = run(
        model,
        tokens,
        capture=capture,
        stop_at=stop_at,
        past_kv_cache=past,
        attention_mask=torch.ones_like(tokens),
    )
    return acts, past


def _prefix(past: TransformerLensKeyValueCache, first: int, rows: int) -> TransformerLensKeyValueCache | None:
    """Clean keys and values of positions < `first`, for `rows` batch rows, frozen (None if first is 0)."""
    if first == 0:
        return None
    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys[:, :first].expand(rows, -1, -1, -1),
            e.past_values[:, :first].expand(rows, -1, -1, -1),
            frozen=True,
        )
        for e in past.entries
    ]
    mask = torch.ones(rows, first, dtype=torch.int, device=past.previous_attention_mask.device)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)


def _resume(
    model: HookedTransformer,
    clean: Mapping[str, Tensor],
    past: TransformerLensKeyValueCache,
    write: str,
    positions: Int[Tensor, " n"],
    delta: Float[Tensor, "n d_write"],
    first: int,
    last: int,
    reads: set[str],
) -> dict[str, Tensor]:
    """Activations at `reads` (positions first..last) with `delta[i]` added at `write`, `positions[i]`, in row
    i + 1 of a batch whose row 0 is unpatched; resumed from the clean run at block `start_layer(write)`.
    """
    start = hooks.start_layer(write)
    rows = len(positions) + 1
    residual = clean[hooks.block_input(start)][:, first : last + 1].expand(rows, -1, -1)
    changed = torch.arange(1, rows, device=positions.device)

    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[changed, positions - first] += hooks.unflat(model, delta, write).to(act.dtype)
        return act

    edits: dict[str, Edit] = {}
    if hooks.writes_at_block_input(write):
        residual = edit(residual)
    else:
        edits[write] = edit
    acts = {read: residual for read in reads if hooks.reads_block_input(read) == start}
    if reads - set(acts):
        acts |= run(
            model,
            residual,
            capture=reads - set(acts),
            stop_at=max(reads, key=hooks.order),
            edits=edits,
            start_layer=start,
            past_kv_cache=_prefix(past, first, rows),
        )
    return acts


def _ablate(
    model: HookedTransformer,
    clean: Mapping[str, Tensor],
    past: TransformerLensKeyValueCache,
    nodes: Nodes,
    target: Target,
) -> Float[Tensor, " n"]:
    """Exact scores of `nodes` on the target, batched by position; nodes that change nothing score 0."""
    write, read, q = hooks.site(nodes.sae).write, target.read, target.position
    scores = torch.zeros(len(nodes.positions), dtype=nodes.delta.dtype, device=nodes.delta.device)
    moving = (nodes.delta != 0).any(-1)
    for p in nodes.positions.unique().tolist():
        at_p = (moving & (nodes.positions == p)).nonzero().flatten()
        for chunk in at_p.split(batch_size(model, q + 1 - p)):
            read_act = _resume(model, clean, past, write, nodes.positions[chunk], nodes.delta[chunk], p, q, {read})
            g = target.value(read_act[read][:, q - p])
            scores[chunk] = (g[0] - g[1:]).to(scores.dtype)
    return scores


def upstream(
    model: HookedTransformer,
    tokens: Tensor,
    sources: Mapping[str, SAE],
    target: Target,
    baseline: Baseline,
    keep: Mapping[str, Int[Tensor, " k"]] | None = None,
) -> list[Scored]:
    """Exact scores of every node of every source SAE on the target (only nodes whose `node_keys` are in
    `keep[name]`, if given)."""
    q = target.position
    tokens = tokens[:, : q + 1]
    read = target.read
    resumes = {hooks.block_input(hooks.start_layer(hooks.site(sae).write)) for sae in sources.values()}
    with torch.no_grad():
        clean, past = _clean_run(model, tokens, upstream_hooks(sources, target) | resumes, stop_at=read)
        target_value(target, clean[read][0], token_strings(model, tokens))
        out = []
        for nodes in upstream_nodes(model, sources, target, baseline, clean):
            if keep is not None:
                wanted = torch.isin(node_keys(nodes.sae, nodes.positions, nodes.features), keep[nodes.name])
                nodes = nodes.subset(wanted)
            out.append(nodes.scored(_ablate(model, clean, past, nodes, target)))
    return out


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """Exact scores of the source's ablation on every active feature of every target SAE: one patched pass."""
    where, p = hooks.site(source.sae), source.position
    n_pos = tokens.shape[1]
    reads = {hooks.site(sae).read for sae in targets.values()}
    residual_hook = hooks.block_input(hooks.start_layer(where.write))
    with torch.no_grad():
        capture = reads | {where.read, where.write, residual_hook}
        clean, past = _clean_run(model, tokens, capture, stop_at=max(reads, key=hooks.order))
        base = baseline.values(model, {source.name: source.sae}, n_pos)[source.name]
        delta = anchor_delta(source, clean[where.read][0], base, token_strings(model, tokens), clean[where.write].dtype)
        at_p = torch.tensor([p], device=delta.device)
        patched = _resume(model, clean, past, where.write, at_p, delta[None], p, n_pos - 1, reads)
        out = []
        for name, sae in targets.items():
            read = hooks.site(sae).read
            acts = hooks.encode(sae, clean[read][0])
            score = torch.zeros_like(acts)
            if delta.any():  # an ablation that changes nothing (baseline = activation) scores exactly zero
                rows = hooks.encode(sae, patched[read])  # row 0 unpatched, row 1 patched
                score[p:] = rows[0] - rows[1]
            allowed = downstream_allowed(source, read, n_pos, acts.device)
            out.append(target_nodes(name, sae, acts, allowed, score))
    return out
