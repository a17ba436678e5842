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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, validation
from feature_lens_core.attribution_graph import AttributionGraph, adjacency
from feature_lens_core.errors import FeatureLensError

Progress = Callable[[int, int], None]
CHUNK = 2048  # rows (or columns) of a prompt's adjacency aggregated at once: bounds the memory to ~100 MB


@dataclass
class CorpusEdges:
    """Feature-to-feature edges of the SAE set `saes` (forward order) summed over `n_prompts` prompts."""

    saes: tuple[str, ...]
    d_sae: tuple[int, ...]
    score: Float[Tensor, "g g"]
    upstream_count: Int[Tensor, "g g"]
    downstream_count: Int[Tensor, "g g"]
    occurrences: Int[Tensor, " g"]
    n_prompts: int = 0
    n_positions: int = 0

    @classmethod
    def empty(cls, saes: Mapping[str, SAE], order: Sequence[str]) -> CorpusEdges:
        d_sae = tuple(int(saes[name].cfg.d_sae) for name in order)
        g = sum(d_sae)
        return cls(
            tuple(order),
            d_sae,
            torch.zeros(g, g, dtype=torch.float64),
            torch.zeros(g, g, dtype=torch.int32),
            torch.zeros(g, g, dtype=torch.int32),
            torch.zeros(g, dtype=torch.int32),
        )

    @property
    def offsets(self) -> list[int]:
        """Where each SAE's features start in the global index."""
        return [sum(self.d_sae[:i]) for i in range(len(self.d_sae))]

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
        g = len(self.occurrences)
        for begin in range(0, len(gid), CHUNK):
            rows = slice(begin, begin + CHUNK)
            into = torch.zeros(len(gid[rows]), g, dtype=torch.float64).index_add_(1, gid, edges[rows])
            self.score.index_add_(0, gid[rows], into)
            self.upstream_count.index_add_(0, gid[rows], (into != 0).int())
            out_of = torch.zeros(g, len(gid[rows]), dtype=torch.float64).index_add_(0, gid, edges[:, rows])
            self.downstream_count.index_add_(0, gid[rows], (out_of != 0).T.int())
        self.occurrences.index_add_(0, gid, torch.ones_like(gid, dtype=torch.int32))
        self.n_prompts += 1
        self.n_positions += graph.n_tokens - 1

    def top(self, name: str, *, k: int = 8) -> dict[str, Tensor]:
        """SAE `name`'s top-k causes (`upstream_*`) and effects (`downstream_*`) per feature, as [d_sae, k]
        tensors: the SAE's index in `saes` (-1: no such edge), the feature, the mean score where the edge
        appears and its frequency; plus `occurrences` [d_sae]."""
        validation.count(k, "k")
        if name not in self.saes:
            raise FeatureLensError(f"SAE '{name}' is not in this corpus's SAE set ({', '.join(self.saes)}).")
        i = self.saes.index(name)
        here = slice(self.offsets[i], self.offsets[i] + self.d_sae[i])
        occurrences = self.occurrences[here]
        out: dict[str, Tensor] = {"occurrences": occurrences}
        for side, score, count in (
            ("upstream", self.score[here], self.upstream_count[here]),
            ("downstream", self.score[:, here].T, self.downstream_count[here]),
        ):
            ranked = torch.where(count > 0, score.abs(), -1.0)
            value, index = ranked.topk(min(k, ranked.shape[1]), dim=1)
            found = value >= 0
            chosen_count = count.gather(1, index).double()
            mean = torch.where(found, score.gather(1, index) / chosen_count.clamp(min=1), 0.0)
            frequency = torch.where(found, chosen_count / occurrences[:, None].clamp(min=1), 0.0)
            sae_index = torch.bucketize(index, torch.tensor(self.offsets[1:]), right=True)
            feature = index - torch.tensor(self.offsets)[sae_index]
            out[f"{side}_sae"] = torch.where(found, sae_index, -1).to(torch.int32)
            out[f"{side}_feature"] = torch.where(found, feature, -1).to(torch.int32)
            out[f"{side}_score"] = mean.float()
            out[f"{side}_frequency"] = frequency.float()
        return out


def corpus_edges(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompts: Sequence[str],
    *,
    progress: Progress | None = None,
) -> CorpusEdges:
    """The feature-to-feature edges of `saes` summed over `prompts` (see the module docstring), one whole-prompt
    adjacency per prompt; `progress(done, total)` is called after each."""
    validation.sae_set(model, saes)
    if not prompts:
        raise FeatureLensError("No prompts were given. Give at least one text to aggregate the edges over.")
    order = sorted(saes, key=lambda name: (hooks.order(hooks.site(saes[name]).read), name))
    edges = CorpusEdges.empty(saes, order)
    for done, prompt in enumerate(prompts, start=1):
        edges.add(adjacency(model, saes, prompt))
        if progress is not None:
            progress(done, len(prompts))
    return edges
