"""Multi-hop feature graphs around one feature, and how much of the feature they explain (faithfulness).

`build_graph` expands from a target feature hop by hop with `ranking.rank`: the target's upstream
(or downstream) nodes, then theirs, keeping the strongest edges of each hop within a node budget.
`faithfulness` measures a set of upstream nodes the way Sparse Feature Circuits does: every node of
the SAEs upstream of the target that is *not* in the set (features at every position up to the
target's, whether active or not, and error nodes) is set to its baseline, and

    faithfulness = (m(set) - m(empty)) / (m(full) - m(empty)),

where m is the target's activation, m(full) the clean run (nothing ablated) and m(empty) the run
with every node ablated. Ablations are applied in forward order within one pass: a node downstream
of an ablated one is set to its baseline, or left free to respond if it is kept (SAEs writing at the
same hook are applied in the order given).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks, validation
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.files import write_atomically
from feature_lens_core.methods.linear import frozen_hooks
from feature_lens_core.methods.runner import run
from feature_lens_core.methods.types import Anchor, BaselineValues, LogitAnchor
from feature_lens_core.options import (
    BASELINES,
    GRAPH_DIRECTIONS,
    METHODS,
    BaselineKind,
    Direction,
    GraphDirection,
    Method,
)
from feature_lens_core.ranking import activations, anchor_of, has_side, other_side, rank
from feature_lens_core.targets import FeatureRef, LogitDiffRef, Target, node_id
from feature_lens_core.validation import prompt_tokens

if TYPE_CHECKING:
    from feature_lens_core.attribution_graph import GraphScores

RANK_FIELDS = ["sae", "hook", "layer", "kind", "feature", "position", "token", "activation"]
NODE_COLUMNS = ["id", *RANK_FIELDS, "label", "hop", "side"]
EDGE_COLUMNS = ["source", "target", "score", "hop"]
LOGIT_NODE = "logits"  # the `sae` column of a logit target node
ROUNDING = 1e-6  # relative differences below this are float rounding (float32 is ~6e-8)
# A graph ranks each node it adds before its last hop: these bound it to about a thousand rankings, minutes
# with the linear methods and tens of minutes with activation patching on a small model (docs/reliability.md).
MAX_NODE_BUDGET = 1000
MAX_HOPS = 10


@dataclass(frozen=True)
class Faithfulness:
    """The target's activation with everything (`full`), nothing (`empty`) and only the kept nodes (`kept`)."""

    full: float
    empty: float
    kept: float

    @property
    def score(self) -> float:
        """(kept - empty) / (full - empty): 1 when the kept nodes carry everything, 0 when nothing; NaN when
        ablating every node changes the target by no more than float rounding (1e-6 relative)."""
        gap = self.full - self.empty
        if abs(gap) <= ROUNDING * max(abs(self.full), abs(self.empty)):
            return math.nan
        return (self.kept - self.empty) / gap


@dataclass(frozen=True)
class Graph:
    """A feature graph: `nodes` (NODE_COLUMNS) and `edges` (EDGE_COLUMNS: source -> target node ids).

    An edge's score is rank's score of its source on its target (target(clean) - target(source
    ablated)); `hop` is the expansion step that found it. `faithfulness` covers the upstream nodes
    (None for a downstream-only graph). A whole-prompt graph (`attribution_graph.attribution_graph`) also has
    circuit-tracer's replacement and completeness `scores`, of the full graph and of the pruned one it keeps.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    target: str
    faithfulness: Faithfulness | None
    prompt: str = ""
    tokens: tuple[str, ...] = ()
    model: str = ""
    scores: GraphScores | None = None
    pruned_scores: GraphScores | None = None

    def to_circuit_tracer_json(self, path: str | Path | None = None, *, slug: str | None = None) -> str:
        """The graph in the graph-file JSON that circuit-tracer's frontend and Neuronpedia's graph viewer read
        (see `export.circuit_tracer_graph`); written atomically to `path` if given. Returns the JSON text."""
        from feature_lens_core.export import circuit_tracer_graph

        text = json.dumps(circuit_tracer_graph(self, slug=slug), ensure_ascii=False, allow_nan=False)
        if path is not None:
            write_atomically(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
        return text


def _target_node(
    model: HookedTransformer, saes: Mapping[str, SAE], prompt: str, tokens: Tensor, target: Target
) -> dict:
    """The graph's target node: a feature with its activation, or a logit with its value (kind "logit",
    feature = the token id, activation = the centred logit or logit difference)."""
    token = model.to_str_tokens(tokens[0])[target.position]
    if isinstance(target, FeatureRef):
        acts = activations(model, saes[target.sae], prompt)
        here = acts[(acts.position == target.position) & (acts.feature == target.feature)]
        where = hooks.site(saes[target.sae])
        return {
            "id": str(target),
            "sae": target.sae,
            "hook": where.read,
            "layer": where.layer,
            "kind": "feature",
            "feature": target.feature,
            "position": target.position,
            "token": token,
            "activation": float(here.activation.iloc[0]) if len(here) else 0.0,
            "label": _label(saes[target.sae], target.feature),
            "hop": 0,
            "side": "target",
        }
    anchor = anchor_of(model, saes, target)
    with exclusive(), torch.no_grad():
        acts = run(model, tokens[:, : target.position + 1], capture={anchor.read}, stop_at=anchor.read)
        value = float(anchor.value(acts[anchor.read][0, target.position]))
    predicted = model.to_single_str_token(validation.token_id(model, target.token))
    label = f"logit {predicted!r}"
    if isinstance(target, LogitDiffRef):
        label += f" - {model.to_single_str_token(validation.token_id(model, target.other))!r}"
    return {
        "id": str(target),
        "sae": LOGIT_NODE,
        "hook": anchor.read,
        "layer": model.cfg.n_layers,
        "kind": "logit",
        "feature": validation.token_id(model, target.token),
        "position": target.position,
        "token": token,
        "activation": value,
        "label": label,
        "hop": 0,
        "side": "target",
    }


def _label(sae: SAE, feature: int) -> str:
    if feature < 0:
        return "error"
    return feature_data.feature_labels(sae)[feature] or f"#{feature}"


def ablate_outside(
    model: HookedTransformer,
    tokens: Tensor,
    universe: Mapping[str, SAE],
    target: Anchor | LogitAnchor,
    keep: Mapping[str, Bool[Tensor, "rows pos d_sae_plus_1"]],
    base: Mapping[str, BaselineValues],
    held: Mapping[str, Tensor] | None = None,
) -> Float[Tensor, " rows"]:
    """The target's activation in one batched pass where row r keeps the nodes with `keep[name][r]` true and
    sets every other node of `universe` to its baseline. Column 0 of `keep` is the error node, column f + 1
    feature f; `tokens` end at the target's position. `held` maps hooks (attention patterns, LayerNorm scales,
    `ln_final.hook_scale` for a logit target) to clean activations (batch 1) that every row uses instead."""
    held = held or {}
    rows = len(next(iter(keep.values())))
    read = target.read
    sites = {name: hooks.site(sae) for name, sae in universe.items()}
    writers: dict[str, list[str]] = {}
    for name in universe:
        writers.setdefault(sites[name].write, []).append(name)
    stash = {s.read for s in sites.values() if s.read != s.write}
    seen: dict[str, Tensor] = {}

    def ablate(name: str, act: Tensor) -> Tensor:
        sae, where, kept = universe[name], sites[name], keep[name]
        x = act if where.read == where.write else seen[where.read]
        codes = hooks.encode(sae, x)
        acts = codes.to(act.dtype)
        error = hooks.error(sae, x, act, where.write, acts=codes)
        features = torch.where(kept[..., 1:], acts, base[name].features)
        errors = torch.where(kept[..., :1], error, base[name].error)
        delta = (features - acts) @ hooks.decoder(sae, act.dtype) + (errors - error)
        return act + hooks.unflat(model, delta, where.write)

    def edit_at(hook: str):
        def edit(act: Tensor) -> Tensor:
            for name in writers.get(hook, []):
                act = ablate(name, act)
            if hook in stash:
                seen[hook] = act
            return act

        return edit

    def hold(hook: str):
        return lambda act: held[hook].expand_as(act)

    final = held.get("ln_final.hook_scale")
    with torch.no_grad():
        edits = {hook: hold(hook) for hook in held if hook in model.hook_dict and hook != "ln_final.hook_scale"}
        acts = run(
            model,
            tokens.expand(rows, -1),
            capture={read},
            stop_at=read,
            edits=edits | {hook: edit_at(hook) for hook in set(writers) | stash},
        )
        scale = None if final is None else final[:, target.position].expand(rows, -1)
        return target.value(acts[read][:, target.position], scale=scale)


def faithfulness(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    target: Target,
    nodes: pd.DataFrame,
    *,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
    frozen: bool = False,
) -> Faithfulness:
    """How much of `target`'s activation the upstream `nodes` (rows with sae, feature, position; feature -1 for
    error nodes) explain when every other node of the SAEs upstream of it in `saes` is set to the baseline.

    With `frozen`, in the local replacement model (circuit-tracer's setting for its graphs): attention patterns
    and LayerNorm scales (ln_final's too) are held at their clean values and every error node at its clean
    value, kept or not, so only features are ablated.

    Rows of other SAEs or later positions are ignored, so a Graph's nodes or a `rank` frame can be passed.
    """
    validation.choice(baseline, BASELINES, "baseline")
    validation.sae_set(model, saes)
    tokens = prompt_tokens(model, prompt)
    validation.check_target(saes, target, tokens.shape[1])
    missing = ", ".join(sorted({"sae", "feature", "position"} - set(nodes.columns)))
    if missing:
        raise FeatureLensError(f"The nodes need columns sae, feature and position: {missing} missing.")
    universe = other_side(saes, target, "upstream")
    q = target.position
    base = validation.baseline(model, tokens, baseline, corrupt_prompt).values(model, universe, q + 1)
    inside = nodes.loc[nodes.sae.isin(list(universe)) & (nodes.position <= q)]
    for name in set(inside.sae):
        features = inside.feature[inside.sae == name]
        if not features.between(-1, universe[name].cfg.d_sae - 1).all():
            raise FeatureLensError(f"Nodes of SAE '{name}' name features outside -1 (error) to its d_sae - 1.")
    tokens = tokens[:, : q + 1]
    keep = {}
    for name, sae in universe.items():
        mask = torch.zeros(3, q + 1, sae.cfg.d_sae + 1, dtype=torch.bool, device=tokens.device)
        mask[0] = True  # row 0 keeps everything (the clean run), row 1 nothing, row 2 the given nodes
        mine = inside.loc[inside.sae == name]
        positions, features = (
            torch.tensor(mine[c].to_numpy(np.int64), device=tokens.device) for c in ("position", "feature")
        )
        mask[2, positions, features + 1] = True
        keep[name] = mask
    anchor = anchor_of(model, saes, target)
    held: dict[str, Tensor] = {}
    if frozen:
        held, base = _local_replacement(model, tokens, universe, base)
        for mask in keep.values():
            mask[1:, :, 0] = False  # each error node at its clean value (the baseline now holds it)
    with exclusive():
        full, empty, kept = ablate_outside(model, tokens, universe, anchor, keep, base, held).tolist()
    return Faithfulness(full, empty, kept)


def _local_replacement(
    model: HookedTransformer, tokens: Tensor, universe: Mapping[str, SAE], base: Mapping[str, BaselineValues]
) -> tuple[dict[str, Tensor], dict[str, BaselineValues]]:
    """The clean attention patterns and LayerNorm scales to hold, and baselines whose error is the clean one."""
    sites = {name: hooks.site(sae) for name, sae in universe.items()}
    frozen = [*frozen_hooks(model), *(["ln_final.hook_scale"] if "ln_final.hook_scale" in model.hook_dict else [])]
    wanted = {h for where in sites.values() for h in (where.read, where.write)}
    with torch.no_grad():
        clean = run(model, tokens, capture=set(frozen) | wanted)
        errors = {
            name: hooks.error(sae, clean[sites[name].read][0], clean[sites[name].write][0], sites[name].write)
            for name, sae in universe.items()
        }
    held = {hook: clean[hook] for hook in frozen if hook in clean}
    return held, {name: dataclasses.replace(base[name], error=errors[name]) for name in universe}


def _expand(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    target: Target,
    start: dict,
    side: Direction,
    limits: tuple[int, int, float | None],
    settings: dict,
    nodes: dict[str, dict],
    edges: list[dict],
    ranked: Callable[[], None],
) -> None:
    """Grow `nodes` and `edges` from `start` on one side, hop by hop, within `limits` = (node budget, hops,
    threshold), ranking with `settings` (method, baseline, corrupt_prompt, candidates); `ranked` is called
    after each ranking. See build_graph."""
    budget, hops, threshold = limits
    frontier, added = [start], 0
    for hop in range(1, hops + 1):
        allowance = math.ceil((budget - added) / (hops - hop + 1))
        frames = []
        for node in frontier:
            if node is start:
                ref = target
            elif node["kind"] == "feature":
                ref = FeatureRef(node["sae"], int(node["feature"]), int(node["position"]))
                if not has_side(saes, ref, side):
                    continue  # nothing on that side of this node: it stays a leaf
            else:
                continue  # error nodes are leaves
            frame = rank(model, saes, prompt, ref, direction=side, **settings)
            ranked()
            frames.append(frame.assign(parent=node["id"]))
        if not frames or allowance <= 0:
            return
        pool = pd.concat(frames, ignore_index=True)
        pool = pool.iloc[np.argsort(-pool.score.abs().to_numpy(), kind="stable")]
        if threshold is not None:
            pool = pool[pool.score.abs() >= threshold]
        new = []
        for row in pool.itertuples(index=False):
            found = node_id(row.sae, row.feature, row.position)
            if found not in nodes:
                if len(new) == allowance:
                    break  # the budget's cut-off: weaker edges, even to nodes already in, are dropped
                nodes[found] = {
                    "id": found,
                    **{c: getattr(row, c) for c in RANK_FIELDS},
                    "label": _label(saes[row.sae], int(row.feature)),
                    "hop": hop,
                    "side": side,
                }
                new.append(nodes[found])
            tail, head = (found, row.parent) if side == "upstream" else (row.parent, found)
            edges.append({"source": tail, "target": head, "score": float(row.score), "hop": hop})
        frontier, added = new, added + len(new)


def graph_rankings(hops: int, node_budget: int, direction: GraphDirection = "upstream") -> int:
    """The most rankings `build_graph` runs (its cost model): the target's, once per side, then one for each
    node added before the last hop. Multiply by one ranking's time for the graph's.

    >>> graph_rankings(2, 30), graph_rankings(1, 30), graph_rankings(3, 30, "both")
    (16, 1, 22)
    """
    shares = [math.ceil(node_budget / 2), node_budget // 2] if direction == "both" else [node_budget]
    # _expand gives hop h ceil(remaining / hops left) nodes; the last hop's are never ranked.
    return sum(1 + share - math.ceil(share / hops) if hops > 1 else 1 for share in shares)


def build_graph(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    target: Target,
    *,
    method: Method = "attribution",
    direction: GraphDirection = "upstream",
    hops: int = 2,
    threshold: float | None = None,
    node_budget: int = 30,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
    candidates: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Graph:
    """The graph of nodes that cause (upstream), are caused by (downstream) or both, `target`, `hops` deep.

    Hop h ranks every feature node found at hop h - 1 (error nodes are leaves) with `rank(method)`,
    pools all their candidate edges, and keeps them strongest first (by |score|, at least `threshold`
    if given) until the hop's share of the node budget is used up: ceil(remaining / hops left), so
    later hops get nodes too. "both" gives half the budget to each side. Edges to nodes already in the
    graph are kept when they rank above that cut-off.

    Each ranking takes the compute lock on its own (`exclusive`), so another thread's pass waits for one
    ranking, not the graph. `candidates=K` (activation patching) patches only the K nodes attribution ranks
    highest in each upstream ranking (see `rank`). `progress(done, most)` is called after each ranking, with
    `most = graph_rankings(hops, node_budget, direction)`.

    Returns:
        Graph with nodes (id, sae, hook, layer, kind, feature, position, token, activation, label, hop,
        side: "target", "upstream" or "downstream"), edges (source, target, score, hop) and the
        faithfulness of its upstream nodes.
    """
    validation.choice(direction, GRAPH_DIRECTIONS, "direction")
    validation.choice(method, METHODS, "method")
    validation.count(hops, "hops")
    validation.count(node_budget, "node_budget")
    validation.count(candidates, "candidates", optional=True)
    for value, most, what in ((hops, MAX_HOPS, "hops"), (node_budget, MAX_NODE_BUDGET, "node_budget")):
        if value > most:  # type: ignore[operator]  # count() checked it is a whole number
            raise FeatureLensError(
                f"{what}={value} is more than this can finish: a graph ranks every node it adds, up to "
                f"{graph_rankings(min(hops, MAX_HOPS), min(node_budget, MAX_NODE_BUDGET), direction)} rankings at "
                f"the most allowed ({what} at most {most}). Ask for fewer, or use the whole-prompt graph "
                "(attribution_graph), which costs one batched pass per 64 nodes."
            )
    validation.non_negative(threshold, "threshold")
    validation.sae_set(model, saes)
    tokens = prompt_tokens(model, prompt)
    validation.check_target(saes, target, tokens.shape[1])
    if direction != "upstream" and not isinstance(target, FeatureRef):
        raise FeatureLensError(f"A logit target ({target}) has nothing downstream: build its graph upstream.")
    start = _target_node(model, saes, prompt, tokens, target)
    nodes, edges = {start["id"]: start}, []
    sides: list[Direction] = ["upstream", "downstream"] if direction == "both" else [direction]
    shares = [math.ceil(node_budget / 2), node_budget // 2] if direction == "both" else [node_budget]
    upstream_candidates = candidates if method == "activation" else None
    settings = {"method": method, "baseline": baseline, "corrupt_prompt": corrupt_prompt}
    most, done = graph_rankings(hops, node_budget, direction), 0

    def ranked() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, most)

    for side, share in zip(sides, shares, strict=True):
        if direction == "both" and not has_side(saes, target, side):
            continue  # "both" grows whichever sides have SAEs; one side asked for must have them
        side_settings = {**settings, "candidates": upstream_candidates if side == "upstream" else None}
        _expand(model, saes, prompt, target, start, side, (share, hops, threshold), side_settings, nodes, edges, ranked)
    node_frame = pd.DataFrame(list(nodes.values()), columns=NODE_COLUMNS)
    edge_frame = pd.DataFrame(edges, columns=EDGE_COLUMNS)
    faith = None
    if direction != "downstream":
        faith = faithfulness(model, saes, prompt, target, node_frame, baseline=baseline, corrupt_prompt=corrupt_prompt)
    str_tokens = tuple(str(t) for t in model.to_str_tokens(tokens[0]))
    return Graph(node_frame, edge_frame, start["id"], faith, prompt, str_tokens, model.cfg.model_name)
