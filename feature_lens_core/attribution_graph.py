"""Whole-prompt attribution graphs as circuit-tracer defines them, on any chosen SAE set, and their scores.

Nodes, in this order (the adjacency's rows and columns):

- **features**: every feature active on the prompt, of every chosen SAE (forward order), at every position;
- **errors**: one per SAE and position, what the SAE fails to reconstruct there;
- **tokens**: one per position, its token embedding (`hook_embed`; a positional embedding, like a bias, is
  the same for every prompt and is not a node);
- **logits**: the most probable next tokens at the last position, until their probabilities add up to
  `logit_probability` (at most `max_logits`), each the logit minus the mean logit (`LogitRef`).

`adjacency[t, s]` is the direct edge from source s to target t: the linear effect of s on t along every path
through no other node, with LayerNorm scales and attention patterns frozen at the clean run (`direct`
attribution, docs/methods.md): for a feature source, its activation times its decoder row dotted with the
target's frozen derivative at its write hook; for an error node, the error vector in place of that product;
for a token, its embedding. A feature target is scored on its activation (for an active feature, the
derivative of its pre-activation), a logit on its centred value. Rows of error and token nodes are zero:
they are sources only. The features of one SAE share one forward pass of up to 64 copies of the prompt, and
each batch of them costs one backward pass through it (`methods.linear.frozen_pass`), not one ranking per
node.

Influence and pruning follow circuit-tracer 0.5.0's `graph.py` (`normalize_matrix`, `compute_influence`,
`prune_graph`, `compute_graph_scores`): with `Â` the adjacency's absolute values, each row divided by its sum,
and `w` the logit nodes' probabilities, a node's influence on the logits is `w (Â + Â² + Â³ + ...)` (the
graph has no cycles, so the series ends). Pruning keeps the nodes that carry `node_threshold` of the total
influence (tokens and logits always), then the edges that carry `edge_threshold` of the edge influence
(`Â[t, s]` times the influence of t plus its logit weight), then drops nodes left without an outgoing edge
(or, for features, without an incoming one) until nothing changes. The **replacement score** is the
tokens' share of the influence that tokens and errors have (1 when every path from input to output runs
through features); the **completeness score** is each node's non-error share of its inputs, averaged with
weights (its influence plus its logit weight).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks, validation
from feature_lens_core.connectome import EDGE_COLUMNS, LOGIT_NODE, NODE_COLUMNS, Graph, faithfulness
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods.linear import frozen_pass, target_gradients
from feature_lens_core.methods.nodes import check_finite, source_nodes
from feature_lens_core.methods.runner import batch_size as default_batch_size
from feature_lens_core.methods.runner import run
from feature_lens_core.methods.types import Anchor, Baseline, LogitAnchor, Nodes
from feature_lens_core.ranking import anchor_of, other_side
from feature_lens_core.targets import FeatureRef, LogitRef, node_id
from feature_lens_core.validation import prompt_tokens

TOKEN_HOOK = "hook_embed"
TOKEN_NODE = "tokens"  # the `sae` column of a token node
MAX_BATCH = 64  # targets per backward pass: beyond this the passes are long and the gain small


@dataclass(frozen=True)
class GraphScores:
    """circuit-tracer's two graph scores (see the module docstring), each from 0 to 1."""

    replacement: float
    completeness: float


@dataclass(frozen=True)
class Pruning:
    """Which nodes and edges a pruned graph keeps: `edges[t, s]` keeps the edge from s to t."""

    nodes: Bool[Tensor, " n"]
    edges: Bool[Tensor, "n n"]


@dataclass(frozen=True)
class AttributionGraph:
    """A prompt's full attribution graph: `nodes` (NODE_COLUMNS, in adjacency order: features, errors, tokens,
    logits) and `adjacency[t, s]`, the direct edge from node s to node t (float64, on the CPU)."""

    nodes: pd.DataFrame
    adjacency: Float[Tensor, "n n"]
    logit_probabilities: Float[Tensor, " n_logits"]
    n_features: int
    n_errors: int
    n_tokens: int
    prompt: str
    tokens: tuple[str, ...]
    model: str

    @property
    def n_logits(self) -> int:
        return len(self.logit_probabilities)

    def logit_weights(self) -> Float[Tensor, " n"]:
        """Each node's weight as an output: the logit nodes' probabilities, zero elsewhere."""
        weights = torch.zeros(len(self.adjacency), dtype=self.adjacency.dtype)
        weights[len(self.adjacency) - self.n_logits :] = self.logit_probabilities
        return weights

    def influence(self, adjacency: Tensor | None = None) -> Float[Tensor, " n"]:
        """Each node's influence on the logits, `w (Â + Â² + ...)`, on `adjacency` (default: the full one)."""
        return _influence(_normalised(self.adjacency if adjacency is None else adjacency), self.logit_weights())

    def prune(self, *, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruning:
        """The nodes and edges kept by circuit-tracer's pruning (module docstring) at these thresholds."""
        validation.fraction(node_threshold, "node_threshold")
        validation.fraction(edge_threshold, "edge_threshold")
        n, always = len(self.adjacency), self.n_tokens + self.n_logits
        weights = self.logit_weights()
        influence = self.influence()
        keep = influence >= _cut(influence, node_threshold)
        keep[n - always :] = True
        kept = self.adjacency * keep[:, None] * keep[None, :]
        normalised = _normalised(kept)
        edge_influence = normalised * (_influence(normalised, weights) + weights)[:, None]
        edges = edge_influence >= _cut(edge_influence.flatten(), edge_threshold)
        edges &= keep[:, None] & keep[None, :]
        while True:
            before = keep.clone()
            keep[: n - always] &= edges[:, : n - always].any(0)  # features and errors need an outgoing edge
            keep[: self.n_features] &= edges[: self.n_features].any(1)  # features need an incoming one
            edges &= keep[:, None] & keep[None, :]
            if torch.equal(keep, before):
                return Pruning(keep, edges)

    def scores(self, pruning: Pruning | None = None) -> GraphScores:
        """Replacement and completeness scores of the full graph, or of the pruned one (its kept edges only)."""
        adjacency = self.adjacency if pruning is None else self.adjacency * pruning.edges
        normalised = _normalised(adjacency)
        weights = self.logit_weights()
        influence = _influence(normalised, weights)
        errors = slice(self.n_features, self.n_features + self.n_errors)
        tokens = slice(errors.stop, errors.stop + self.n_tokens)
        token_influence, error_influence = float(influence[tokens].sum()), float(influence[errors].sum())
        total = token_influence + error_influence
        output = influence + weights
        non_error = 1 - normalised[:, errors].sum(-1)
        return GraphScores(
            replacement=token_influence / total if total > 0 else float("nan"),
            completeness=float((non_error * output).sum() / output.sum()),
        )

    def edges(self, pruning: Pruning | None = None) -> pd.DataFrame:
        """The graph's non-zero edges (kept ones only, given a pruning) as EDGE_COLUMNS, strongest first; `hop`
        is the source's distance in edges from the nearest logit."""
        mask = self.adjacency != 0
        if pruning is not None:
            mask &= pruning.edges
        targets, sources = mask.nonzero(as_tuple=True)
        ids = self.nodes.id.to_numpy()
        hops = _hops_to_logits(mask, self.n_logits)
        frame = pd.DataFrame(
            {
                "source": ids[sources.numpy()],
                "target": ids[targets.numpy()],
                "score": self.adjacency[targets, sources].numpy(),
                "hop": hops[sources.numpy()],
            },
            columns=EDGE_COLUMNS,
        )
        return frame.iloc[np.argsort(-frame.score.abs().to_numpy(), kind="stable")].reset_index(drop=True)


def _normalised(adjacency: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """|adjacency| with each row divided by its sum (rows of zeros stay zero)."""
    magnitude = adjacency.abs()
    return magnitude / magnitude.sum(-1, keepdim=True).clamp(min=1e-10)


def _influence(normalised: Float[Tensor, "n n"], weights: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """`weights (A + A² + ...)`: the series ends within n terms, since the graph has no cycles."""
    step = weights @ normalised
    total = step.clone()
    for _ in range(len(weights)):
        if not step.any():
            return total
        step = step @ normalised
        total += step
    raise FeatureLensError("The attribution graph has a cycle, so influence is undefined. This is a bug.")


def _cut(scores: Float[Tensor, " k"], share: float) -> Tensor:
    """The smallest score among the largest ones that together hold `share` of the total."""
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    index = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype)))
    return ordered[min(index, len(ordered) - 1)]


def _hops_to_logits(edges: Bool[Tensor, "n n"], n_logits: int) -> Int[np.ndarray, " n"]:
    """Each node's distance in edges to the nearest logit node (-1 where no path leads there)."""
    n = len(edges)
    hops = np.full(n, -1, dtype=np.int64)
    into = [row.nonzero().flatten().tolist() for row in edges]  # into[t]: the sources of t's edges
    queue = deque(range(n - n_logits, n))
    hops[n - n_logits :] = 0
    while queue:
        target = queue.popleft()
        for source in into[target]:
            if hops[source] < 0:
                hops[source] = hops[target] + 1
                queue.append(source)
    return hops


def _top_logits(
    logits: Float[Tensor, " d_vocab"], probability: float, most: int
) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """The most probable tokens until their probabilities reach `probability` (at most `most`)."""
    probs = logits.double().softmax(-1)
    top = probs.topk(min(most, len(probs)))
    enough = int(torch.searchsorted(top.values.cumsum(0), torch.tensor(probability, dtype=probs.dtype))) + 1
    k = min(enough, len(top.values))
    return top.indices[:k], top.values[:k]


@dataclass(frozen=True)
class _Sources:
    """Every source node of one SAE (its active features, then its error nodes) and their global indices."""

    nodes: Nodes
    index: Int[Tensor, " m"]


def adjacency(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    *,
    logit_probability: float = 0.95,
    max_logits: int = 10,
    batch_size: int | None = None,
) -> AttributionGraph:
    """The full attribution graph of `prompt` on the SAE set `saes` (see the module docstring).

    Args:
        logit_probability: the logit nodes are the most probable next tokens until their probabilities add up
            to this (0 to 1), at most `max_logits` of them.
        batch_size: targets per backward pass (default: what fits the model's activations in about 64 MB,
            at most 64).

    Returns:
        AttributionGraph on the CPU, float64; its `nodes` have NODE_COLUMNS (kind "feature", "error",
        "token" or "logit"; side "target" for logits, "upstream" otherwise; hop -1, set by pruning).
    """
    validation.sae_set(model, saes)
    validation.fraction(logit_probability, "logit_probability")
    validation.count(max_logits, "max_logits")
    validation.count(batch_size, "batch_size", optional=True)
    tokens = prompt_tokens(model, prompt)
    n_pos = tokens.shape[1]
    order = sorted(saes, key=lambda name: (hooks.order(hooks.site(saes[name]).read), name))
    sites = {name: hooks.site(saes[name]) for name in order}
    wanted = {h for s in sites.values() for h in (s.read, s.write)}
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with exclusive(), torch.no_grad():
        clean = run(model, tokens, capture=wanted | {TOKEN_HOOK, final})
        logits = model.unembed(model.ln_final(clean[final][:, -1:]))[0, -1]  # one pass gives nodes and logits
    check_finite(logits, "The model's logits")
    token_ids, probabilities = _top_logits(logits, logit_probability, max_logits)

    base = Baseline("zero").values(model, dict(saes), n_pos)
    everywhere = torch.ones(n_pos, dtype=torch.bool, device=tokens.device)
    with torch.no_grad():
        nodes = {
            name: source_nodes(
                name, saes[name], clean[sites[name].read][0], clean[sites[name].write][0], base[name], everywhere
            )
            for name in order
        }
    n_features = sum(int((nodes[name].features >= 0).sum()) for name in order)
    n_errors = len(order) * n_pos
    n_total = n_features + n_errors + n_pos + len(token_ids)
    sources, start_feature, start_error = {}, 0, n_features
    for name in order:
        part = nodes[name]
        is_feature = part.features >= 0
        index = torch.empty(len(part.features), dtype=torch.long)
        index[is_feature.cpu()] = torch.arange(start_feature, start_feature + int(is_feature.sum()))
        index[~is_feature.cpu()] = torch.arange(start_error, start_error + n_pos)
        sources[name] = _Sources(part, index)
        start_feature, start_error = start_feature + int(is_feature.sum()), start_error + n_pos
    token_index = torch.arange(n_features + n_errors, n_features + n_errors + n_pos)
    embedding = clean[TOKEN_HOOK][0]

    adjacency = torch.zeros(n_total, n_total, dtype=torch.float64)
    rows = batch_size or max(1, min(MAX_BATCH, default_batch_size(model, n_pos)))

    def fill(row_index: Int[Tensor, " b"], upstream: list[str], gradient: Mapping[str, Tensor]) -> None:
        """Write one batch's rows: each source's -<delta, gradient at its position>, each token's embedding."""
        for name in upstream:
            part = sources[name]
            write = sites[name].write
            flat = hooks.flat(gradient[write], write)  # [batch, pos, d_write]
            scores = torch.zeros(len(row_index), len(part.index), dtype=flat.dtype, device=flat.device)
            for position in part.nodes.positions.unique().tolist():
                at = part.nodes.positions == position
                scores[:, at] = -(flat[:, position] @ part.nodes.delta[at].T)
            adjacency[row_index[:, None], part.index[None, :]] = scores.double().cpu()
        token_scores = (gradient[TOKEN_HOOK] * embedding).sum(-1)
        adjacency[row_index[:, None], token_index[None, :]] = token_scores.double().cpu()

    anchors = [anchor_of(model, saes, LogitRef(int(t), n_pos - 1)) for t in token_ids.tolist()]
    logit_anchors = [a for a in anchors if isinstance(a, LogitAnchor)]  # all of them: the refs are logits
    logit_rows = torch.arange(n_total - len(token_ids), n_total)
    for begin in range(0, len(logit_anchors), rows):
        batch = logit_anchors[begin : begin + rows]
        gradient = _gradients(model, tokens, dict(saes), batch)
        fill(logit_rows[begin : begin + rows], order, gradient)

    for name in order:
        part = sources[name]
        is_feature = part.nodes.features >= 0
        positions, features = part.nodes.positions[is_feature], part.nodes.features[is_feature]
        if not len(features):
            continue
        upstream = [n for n in order if n in _upstream_of(saes, name)]
        anchor = Anchor(name, saes[name], int(positions[0]), int(features[0]))
        width = min(rows, len(features))
        sources_of = {n: saes[n] for n in upstream}
        # One forward pass for all of this SAE's features; each batch is one backward pass through it.
        with frozen_pass(model, tokens, sources_of, anchor, rows=width, frozen=True, also=(TOKEN_HOOK,)) as (
            acts,
            gradient_of,
        ):
            for begin in range(0, len(features), width):
                at, which = positions[begin : begin + width], features[begin : begin + width]
                batch = torch.arange(len(which), device=at.device)
                values = hooks.encode(anchor.sae, acts[anchor.read][batch, at])[batch, which]
                gradient = {hook: g[: len(which)] for hook, g in gradient_of(values.sum()).items()}
                fill(part.index[is_feature.cpu()][begin : begin + width], upstream, gradient)
    check_finite(adjacency, "The attribution graph")

    frame = _node_frame(model, saes, order, sources, tokens, token_ids, probabilities, logits, n_total)
    strings = tuple(str(t) for t in model.to_str_tokens(tokens[0]))
    return AttributionGraph(
        frame, adjacency, probabilities.cpu(), n_features, n_errors, n_pos, prompt, strings, model.cfg.model_name
    )


def _upstream_of(saes: Mapping[str, SAE], name: str) -> set[str]:
    """The SAEs whose nodes can have edges into features of `name` (empty for none)."""
    try:
        return set(other_side(saes, FeatureRef(name, 0, 0), "upstream"))
    except FeatureLensError:
        return set()


def _gradients(
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], targets: list[LogitAnchor]
) -> dict[str, Tensor]:
    """Frozen derivatives of logit targets (all at the last position) at every source write and hook_embed."""

    def value(read_act: Tensor) -> Tensor:
        at = read_act[:, targets[0].position]
        return torch.stack([t.value(at[row], frozen_norm=True) for row, t in enumerate(targets)])

    _, gradient = target_gradients(model, tokens, sources, targets, frozen=True, value=value, also=(TOKEN_HOOK,))
    return gradient


def _node_frame(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    order: list[str],
    sources: Mapping[str, _Sources],
    tokens: Tensor,
    token_ids: Tensor,
    probabilities: Tensor,
    logits: Tensor,
    n_total: int,
) -> pd.DataFrame:
    """One row per node, in adjacency order."""
    strings = [str(t) for t in model.to_str_tokens(tokens[0])]
    n_pos = len(strings)
    rows: list[dict | None] = [None] * n_total
    for name in order:
        part, where = sources[name], hooks.site(saes[name])
        labels = feature_data.feature_labels(saes[name])
        for index, position, feature, activation in zip(
            part.index.tolist(),
            part.nodes.positions.tolist(),
            part.nodes.features.tolist(),
            part.nodes.activation.tolist(),
            strict=True,
        ):
            rows[index] = {
                "id": node_id(name, feature, position),
                "sae": name,
                "hook": where.read,
                "layer": where.layer,
                "kind": "feature" if feature >= 0 else "error",
                "feature": feature,
                "position": position,
                "token": strings[position],
                "activation": activation,
                "label": "error" if feature < 0 else (labels[feature] or f"#{feature}"),
                "hop": -1,
                "side": "upstream",
            }
    first_token = n_total - len(token_ids) - n_pos
    for position, token in enumerate(strings):
        rows[first_token + position] = {
            "id": f"{TOKEN_NODE}@{position}",
            "sae": TOKEN_NODE,
            "hook": TOKEN_HOOK,
            "layer": -1,
            "kind": "token",
            "feature": int(tokens[0, position]),
            "position": position,
            "token": token,
            "activation": float("nan"),
            "label": f"token {token!r}",
            "hop": -1,
            "side": "upstream",
        }
    centred = logits.double() - logits.double().mean()
    for offset, (token_id, probability) in enumerate(zip(token_ids.tolist(), probabilities.tolist(), strict=True)):
        text = model.to_single_str_token(token_id)
        rows[n_total - len(token_ids) + offset] = {
            "id": str(LogitRef(text if _round_trips(model, text, token_id) else token_id, n_pos - 1)),
            "sae": LOGIT_NODE,
            "hook": f"blocks.{model.cfg.n_layers - 1}.hook_resid_post",
            "layer": model.cfg.n_layers,
            "kind": "logit",
            "feature": token_id,
            "position": n_pos - 1,
            "token": strings[-1],
            "activation": float(centred[token_id]),
            "label": f"logit {text!r} (p = {probability:.2f})",
            "hop": 0,
            "side": "target",
        }
    return pd.DataFrame(rows, columns=NODE_COLUMNS)


def _round_trips(model: HookedTransformer, text: str, token_id: int) -> bool:
    """Whether `text` tokenizes back to exactly `token_id` (so a LogitRef can name the token by its text)."""
    try:
        return validation.token_id(model, text) == token_id
    except FeatureLensError:
        return False


def attribution_graph(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    *,
    logit_probability: float = 0.95,
    max_logits: int = 10,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    batch_size: int | None = None,
) -> Graph:
    """The pruned attribution graph of `prompt` (see `adjacency` and `AttributionGraph.prune`), as a `Graph`.

    Its target is the most probable logit; `faithfulness` is that logit's in the local replacement model
    (`connectome.faithfulness(frozen=True)`: attention patterns, LayerNorm scales and error nodes at their clean
    values) when every feature outside the pruned graph is set to zero; `scores` and `pruned_scores` are the
    full and pruned graphs' replacement and completeness scores.
    """
    full = adjacency(
        model, saes, prompt, logit_probability=logit_probability, max_logits=max_logits, batch_size=batch_size
    )
    pruning = full.prune(node_threshold=node_threshold, edge_threshold=edge_threshold)
    edges = full.edges(pruning)
    hops = dict(zip(edges.source, edges.hop, strict=True))
    kept = full.nodes.loc[pruning.nodes.numpy()].copy()
    kept["hop"] = [0 if kind == "logit" else int(hops.get(i, -1)) for i, kind in zip(kept.id, kept.kind, strict=True)]
    kept = kept.loc[kept.hop >= 0]  # tokens are always kept by pruning, but one with no kept edge draws nothing
    target = str(full.nodes.id.iloc[len(full.nodes) - full.n_logits])
    top = full.nodes.iloc[len(full.nodes) - full.n_logits]
    faith = faithfulness(model, saes, prompt, LogitRef(int(top.feature), int(top.position)), kept, frozen=True)
    return Graph(
        kept.reset_index(drop=True),
        edges,
        target,
        faith,
        prompt,
        full.tokens,
        full.model,
        scores=full.scores(),
        pruned_scores=full.scores(pruning),
    )
