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
the aggregate, then each SAE's top `K` per feature. The sums are dense [g, g] matrices (16 bytes per pair of
features), so a set is limited to `MAX_BYTES` of them (`cost` says how much a set needs before it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks, validation
from feature_lens_core.attribution_graph import AttributionGraph, adjacency
from feature_lens_core.errors import FeatureLensError

Progress = Callable[[int, int], None]
CHUNK = 2048  # rows (or columns) of a prompt's adjacency aggregated at once: bounds the memory to ~100 MB
K = 8  # causes and effects kept per feature
BYTES_PER_PAIR = 16  # score (float64) and the two counts (int32) of one pair of features
MAX_BYTES = 2 * 2**30  # the sums of a set of 11,585 features: beyond, pick fewer or smaller SAEs


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
        if BYTES_PER_PAIR * g * g > MAX_BYTES:
            raise FeatureLensError(
                f"The SAE set ({', '.join(order)}) has {g:,} features: summing its edges needs "
                f"{BYTES_PER_PAIR * g * g / 2**30:.1f} GB (at most {MAX_BYTES / 2**30:.0f} GB). "
                "Pick fewer or smaller SAEs."
            )
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
    progress: Progress | None = None,
) -> CausalPanels:
    """Every feature's top-k causes and effects over `prompts` on the SAE set `saes` (`corpus_edges`, then
    `CorpusEdges.top` for each SAE); `progress(done, total)` is called after each prompt."""
    validation.count(k, "k")
    edges = corpus_edges(model, saes, prompts, progress=progress)
    top = {name: {key: value.contiguous() for key, value in edges.top(name, k=k).items()} for name in edges.saes}
    return CausalPanels(edges.saes, edges.n_prompts, edges.n_positions, top)


def cost(saes: Mapping[str, SAE]) -> int:
    """Bytes the sums of the SAE set take (`BYTES_PER_PAIR` per pair of its features)."""
    g = sum(int(sae.cfg.d_sae) for sae in saes.values())
    return BYTES_PER_PAIR * g * g


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
