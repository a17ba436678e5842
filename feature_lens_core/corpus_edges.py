"""A feature's causes and effects across a corpus: the direct feature-to-feature edges of whole-prompt attribution
graphs (`attribution_graph.adjacency`), summed over many prompts.

On one prompt, an *occurrence* of a feature is one position where it is active (the first position, BOS, is left
out: its activations are outliers). For an occurrence t of feature f and another feature g, the edge g → t is the
sum of the direct edges into t from g's occurrences at every position (g can fire at several earlier positions);
likewise t → h sums t's direct edges into h's occurrences. Over the prompts:

- `score[f, g]`: the sum, over f's occurrences, of the edge from g (equally the sum over g's occurrences of
  their edge into f);
- `upstream_count[f, g]`: how many of f's occurrences have an edge from g (non-zero);
- `downstream_count[g, f]`: how many of g's occurrences have an edge into f.

A feature's top causes are ranked by `|score[f, g]| / occurrences[f]` (its mean over all f's occurrences, a
missing edge counting as 0) and each is reported with its *mean score* where it appears (`score / count`) and
its *frequency* (`count / occurrences`); its top effects the same way from the other side. Features are indexed
globally: SAE i's feature j is `offsets[i] + j`.

`causal_panels` is what both the zoo's shipped panels and the Feature page's on-demand ones are computed by:
the aggregate, then each SAE's top `K` per feature. The sums are kept sparse, only for the pairs of features that
meet on some prompt (an upstream pair: 20 bytes, its key, score and count; a downstream pair: 12 bytes), so their
memory grows with the edges seen, not with the square of the set's features; at most `MAX_EDGE_BYTES` of them.
Each prompt's edges are added one by one in the order the earlier dense sums added them, so the sums (float64)
are the same to the last bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks, validation
from feature_lens_core.attribution_graph import AttributionGraph, adjacency
from feature_lens_core.batch import Executor, SerialExecutor
from feature_lens_core.errors import FeatureLensError

Progress = Callable[[int, int], None]
K = 8  # causes and effects kept per feature
BYTES_PER_UPSTREAM = 20  # an upstream pair: its key (int64), summed score (float64) and count (int32)
BYTES_PER_DOWNSTREAM = 12  # a downstream pair: its key and count
MAX_EDGE_BYTES = 2 * 2**30  # about 100 million pairs of features met: beyond, use fewer prompts or SAEs


@dataclass
class CorpusEdges:
    """Feature-to-feature edges of the SAE set `saes` (forward order) summed over `n_prompts` prompts.

    The sums are sparse: `up_keys` (sorted) are the pairs (f, g) with an edge from g into an occurrence of f, as
    `f * n_features + g`, with their `up_score` and `up_count`; `down_keys` the pairs (g, f) with an edge from an
    occurrence of g into f, with their `down_count`. `score`, `upstream_count` and `downstream_count` are the same
    sums as dense [g, g] matrices, for a small set only.
    """

    saes: tuple[str, ...]
    d_sae: tuple[int, ...]
    occurrences: Int[Tensor, " g"]
    up_keys: Int[Tensor, " e"]
    up_score: Float[Tensor, " e"]
    up_count: Int[Tensor, " e"]
    down_keys: Int[Tensor, " d"]
    down_count: Int[Tensor, " d"]
    n_prompts: int = 0
    n_positions: int = 0
    _views: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)  # dense views, until `add`

    @classmethod
    def empty(cls, saes: Mapping[str, SAE], order: Sequence[str]) -> CorpusEdges:
        d_sae = tuple(int(saes[name].cfg.d_sae) for name in order)
        keys, counts = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32)
        return cls(
            tuple(order),
            d_sae,
            torch.zeros(sum(d_sae), dtype=torch.int32),
            keys,
            torch.zeros(0, dtype=torch.float64),
            counts,
            keys,
            counts,
        )

    @property
    def n_features(self) -> int:
        return len(self.occurrences)

    @property
    def offsets(self) -> list[int]:
        """Where each SAE's features start in the global index."""
        return [sum(self.d_sae[:i]) for i in range(len(self.d_sae))]

    @property
    def nbytes(self) -> int:
        """The memory the sparse sums take."""
        return BYTES_PER_UPSTREAM * len(self.up_keys) + BYTES_PER_DOWNSTREAM * len(self.down_keys)

    def _dense(self, name: str, keys: Tensor, values: Tensor) -> Tensor:
        if name not in self._views:
            g = self.n_features
            self._views[name] = torch.zeros(g * g, dtype=values.dtype).index_put_((keys,), values).reshape(g, g)
        return self._views[name]

    @property
    def score(self) -> Float[Tensor, "g g"]:
        """`score[f, g]`, dense (g * g float64: a small set only)."""
        return self._dense("score", self.up_keys, self.up_score)

    @property
    def upstream_count(self) -> Int[Tensor, "g g"]:
        """`upstream_count[f, g]`, dense."""
        return self._dense("upstream_count", self.up_keys, self.up_count)

    @property
    def downstream_count(self) -> Int[Tensor, "g g"]:
        """`downstream_count[g, f]`, dense."""
        return self._dense("downstream_count", self.down_keys, self.down_count)

    def add(self, graph: AttributionGraph) -> None:
        """Add one prompt's feature-to-feature edges (its graph must be built on exactly this SAE set)."""
        nodes = graph.nodes.iloc[: graph.n_features]
        unknown = set(nodes["sae"]) - set(self.saes)
        if unknown:
            raise FeatureLensError(
                f"The graph has features of {', '.join(sorted(unknown))}, which are not in this corpus's SAE set "
                f"({', '.join(self.saes)}). Build every prompt's graph on the same SAEs."
            )
        start = dict(zip(self.saes, self.offsets, strict=True))
        keep = torch.tensor((nodes["position"] > 0).to_numpy())
        gid = torch.tensor([start[s] for s in nodes["sae"]]) + torch.tensor(nodes["feature"].to_numpy())
        gid = gid[keep]
        edges = graph.adjacency[: graph.n_features, : graph.n_features][keep][:, keep]
        g = self.n_features
        # Rows are target nodes, columns source nodes; in row-major order, as the dense sums read them.
        target, source = edges.nonzero(as_tuple=True)
        value = edges[target, source].double()
        # Upstream: per (target node r, source feature) the sum of its edges, then added into (gid[r], feature)
        # node by node, r ascending.
        node_keys, node_sum = _summed(target * g + gid[source], value)
        node, feature = node_keys // g, node_keys % g
        self.up_keys, (self.up_score, self.up_count) = _merged(
            self.up_keys, (self.up_score, self.up_count), gid[node] * g + feature, (node_sum, (node_sum != 0).int())
        )
        # Downstream: per (source node r, target feature) the sum of its edges into that feature's occurrences.
        order = torch.argsort(source, stable=True)  # the dense sums read columns: source node first, then target
        node_keys, node_sum = _summed(source[order] * g + gid[target[order]], value[order])
        node, feature = node_keys // g, node_keys % g
        self.down_keys, (self.down_count,) = _merged(
            self.down_keys, (self.down_count,), gid[node] * g + feature, ((node_sum != 0).int(),)
        )
        self.occurrences.index_add_(0, gid, torch.ones_like(gid, dtype=torch.int32))
        self._views.clear()
        self.n_prompts += 1
        self.n_positions += graph.n_tokens - 1
        if self.nbytes > MAX_EDGE_BYTES:
            raise FeatureLensError(
                f"The edges of the SAE set ({', '.join(self.saes)}) over {self.n_prompts} prompts met "
                f"{len(self.up_keys):,} pairs of features: their sums take {self.nbytes / 2**20:,.0f} MB "
                f"(at most {MAX_EDGE_BYTES / 2**20:,.0f} MB). Use fewer or shorter prompts, or fewer SAEs."
            )

    def top(self, name: str, *, k: int = 8) -> dict[str, Tensor]:
        """SAE `name`'s top-k causes (`upstream_*`) and effects (`downstream_*`) per feature, as [d_sae, k]
        tensors: the SAE's index in `saes` (-1: no such edge), the feature, the mean score where the edge
        appears and its frequency; plus `occurrences` [d_sae]."""
        validation.count(k, "k")
        if name not in self.saes:
            raise FeatureLensError(f"SAE '{name}' is not in this corpus's SAE set ({', '.join(self.saes)}).")
        i = self.saes.index(name)
        first, d = self.offsets[i], self.d_sae[i]
        g = self.n_features
        occurrences = self.occurrences[first : first + d]
        out: dict[str, Tensor] = {"occurrences": occurrences}
        # The downstream pair (g, f) has the score of the upstream pair (f, g), which exists wherever it does.
        down_row, down_other = self.down_keys // g, self.down_keys % g
        down_score = self.up_score[torch.searchsorted(self.up_keys, down_other * g + down_row)]
        width = min(k, g)  # as many as there are features, at most
        for side, row, other, score, count in (
            ("upstream", self.up_keys // g, self.up_keys % g, self.up_score, self.up_count),
            ("downstream", down_row, down_other, down_score, self.down_count),
        ):
            here = (row >= first) & (row < first + d) & (count > 0)
            row, other, score, count = row[here] - first, other[here], score[here], count[here]
            # Strongest first within each row: a stable sort by strength, then by row.
            order = torch.argsort(-score.abs(), stable=True)
            order = order[torch.argsort(row[order], stable=True)]
            row, other, score, count = row[order], other[order], score[order], count[order]
            rank = torch.arange(len(row)) - torch.searchsorted(row, row)  # place within its row
            kept = rank < width
            row, rank, other, score, count = row[kept], rank[kept], other[kept], score[kept], count[kept].double()
            sae_index = torch.bucketize(other, torch.tensor(self.offsets[1:], dtype=torch.int64), right=True)
            fields = {
                "sae": (torch.full((d, width), -1, dtype=torch.int32), sae_index.int()),
                "feature": (
                    torch.full((d, width), -1, dtype=torch.int32),
                    (other - torch.tensor(self.offsets)[sae_index]).int(),
                ),
                "score": (torch.zeros(d, width, dtype=torch.float32), (score / count).float()),
                "frequency": (
                    torch.zeros(d, width, dtype=torch.float32),
                    (count / occurrences[row].clamp(min=1).double()).float(),
                ),
            }
            for key, (table, values) in fields.items():
                table[row, rank] = values
                out[f"{side}_{key}"] = table
        return out


def _summed(keys: Int[Tensor, " n"], values: Float[Tensor, " n"]) -> tuple[Int[Tensor, " u"], Float[Tensor, " u"]]:
    """The distinct keys (sorted) and each one's values summed, in the order they come: `_merged` into nothing."""
    unique, (sums,) = _merged(keys[:0], (values[:0],), keys, (values,))
    return unique, sums


def _merged(
    keys: Int[Tensor, " e"], sums: tuple[Tensor, ...], new_keys: Int[Tensor, " n"], new_values: tuple[Tensor, ...]
) -> tuple[Int[Tensor, " u"], tuple[Tensor, ...]]:
    """Running sums `sums` at sorted `keys` with `new_values` at `new_keys` added one by one, in order."""
    unique, inverse = torch.unique(torch.cat([keys, new_keys]), return_inverse=True)
    merged = tuple(
        torch.zeros(len(unique), dtype=old.dtype).index_add_(0, inverse, torch.cat([old, new.to(old.dtype)]))
        for old, new in zip(sums, new_values, strict=True)
    )
    return unique, merged


def corpus_edges(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompts: Sequence[str],
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> CorpusEdges:
    """The feature-to-feature edges of `saes` summed over `prompts` (see the module docstring), one whole-prompt
    adjacency per prompt; `progress(done, total)` is called after each.

    Each prompt's adjacency is a task for `executor.map` (serial by default; `batch.RayExecutor` runs them on a
    Ray cluster). The graphs are added in the prompts' order whatever runs them, so the sums are the same.
    """
    validation.sae_set(model, saes)
    if not prompts:
        raise FeatureLensError("No prompts were given. Give at least one text to aggregate the edges over.")
    order = sorted(saes, key=lambda name: (hooks.order(hooks.site(saes[name]).read), name))
    edges = CorpusEdges.empty(saes, order)
    task = functools.partial(adjacency, model, dict(saes))
    for done, graph in enumerate((executor or SerialExecutor()).map(task, list(prompts)), start=1):
        edges.add(graph)
        if progress is not None:
            progress(done, len(prompts))
    return edges


@dataclass(frozen=True)
class CausalPanels:
    """Each SAE's top causes and effects per feature (`CorpusEdges.top`, a dict of tensors per SAE name) over
    `n_prompts` prompts (`n_positions` tokens after BOS) on the SAE set `saes`."""

    saes: tuple[str, ...]
    n_prompts: int
    n_positions: int
    top: dict[str, dict[str, Tensor]]

    def panel(self, name: str, feature: int) -> feature_data.CausalPanel:
        """Feature `feature` of SAE `name`: its causes and effects, strongest first."""
        if name not in self.top:
            raise FeatureLensError(f"SAE '{name}' is not in these panels' SAE set ({', '.join(self.saes)}).")
        return feature_data.panel_of(self.top[name], self.saes, self.n_prompts, feature)


def causal_panels(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompts: Sequence[str],
    *,
    k: int = K,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> CausalPanels:
    """Every feature's top-k causes and effects over `prompts` on the SAE set `saes` (`corpus_edges`, then
    `CorpusEdges.top` for each SAE); the prompts run on `executor` (serial by default) and `progress(done, total)`
    is called after each."""
    validation.count(k, "k")
    edges = corpus_edges(model, saes, prompts, executor=executor, progress=progress)
    top = {name: {key: value.contiguous() for key, value in edges.top(name, k=k).items()} for name in edges.saes}
    return CausalPanels(edges.saes, edges.n_prompts, edges.n_positions, top)


def text_prompts(model: HookedTransformer, text: str, *, n: int, length: int) -> list[str]:
    """At most `n` prompts of `length` tokens cut one after another from `text` (the last may be shorter),
    each decoded back to text (the adjacency tokenizes it again, with BOS)."""
    validation.count(n, "n")
    validation.count(length, "length")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so it cannot read a text. Load it with one.")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: n * length]
    prompts = [
        str(tokenizer.decode(ids[s : s + length], skip_special_tokens=True)).strip() for s in range(0, len(ids), length)
    ]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise FeatureLensError("The text has no tokens to read. Paste some text.")
    return prompts
