"""One feature's dashboard over a token corpus: activation histogram and density, top and quantile examples
with every token's activation, logit effects and their histogram, and the nearest features by decoder.

A corpus is cut into the windows the model reads (`consecutive_windows`: BOS, then `n_ctx - 1` tokens), and
an SAE is run over it once (`corpus_activations`): its non-zero activations are kept sparse, grouped by
feature, so every feature's dashboard after that is a lookup. Statistics count text positions only: never a
window's BOS, a document separator or the padding of the last window (`text_positions`, as the zoo's build).
An example's context is what the model read around the token: it never crosses its window's edge or a
document separator.

The built-in SAEs use the held-out plays the zoo ships (`held_out_corpus`), on which their shipped top
examples were found; any other SAE reads a text the user gives (`text_corpus`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from safetensors.torch import load_file
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from feature_lens_core import hooks
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.feature_data import feature_label, shipped_data
from feature_lens_core.logit_effects import decoder_in_residual, through_final_norm
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.feature_data import text_positions
from feature_lens_core.zoo.model import bos_id, consecutive_windows

Progress = Callable[[int, int], None]
# Elements of one batch's activations ([windows, n_ctx, d_sae]) at most: about 64 MB in float32.
BATCH_ELEMENTS = 1 << 24
FRAGMENT = "\ufffd"  # what a byte-level token that is part of a multi-byte character decodes to alone


@dataclass(frozen=True)
class Corpus:
    """Token windows as the model reads them, and which positions hold text.

    `windows[w, 0]` is BOS; `is_text` is False there, at special tokens (document separators) and at the
    padding that fills the last window. `held_out` says the windows are the zoo's held-out plays exactly, the
    text the built-in SAEs' shipped examples point into.
    """

    windows: Int[Tensor, "w n_ctx"]
    is_text: Bool[Tensor, "w n_ctx"]
    held_out: bool = False

    @property
    def n_text(self) -> int:
        return int(self.is_text.sum())


def _corpus(model: HookedTransformer, stream: Int[Tensor, " n"], *, held_out: bool) -> Corpus:
    """The stream cut into windows. The held-out plays drop the tail that fills no window, as the zoo's build
    did; any other text keeps it, in a last window filled with BOS, which counts as no text."""
    tokenizer = _tokenizer(model)
    bos, body = bos_id(model), model.cfg.n_ctx - 1
    if not held_out:
        stream = torch.cat([stream, torch.full((-len(stream) % body,), bos, dtype=stream.dtype)])
    windows = consecutive_windows(stream, model.cfg.n_ctx, bos)
    after_bos = text_positions(windows, _special(tokenizer))
    is_text = torch.cat([torch.zeros(len(windows), 1, dtype=torch.bool), after_bos], dim=1)
    return Corpus(windows=windows, is_text=is_text, held_out=held_out)


def _tokenizer(model: HookedTransformer) -> PreTrainedTokenizerBase:
    if model.tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so it cannot read a text. Load one with a tokenizer.")
    return model.tokenizer


def _special(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [int(i) for i in tokenizer.all_special_ids]


def held_out_corpus(model: HookedTransformer) -> Corpus:
    """The zoo's held-out plays (76,200 tokens), as the built-in model read them for the shipped data.

    For a model with the zoo's own tokenizer the shipped tokens are used as they are; any other model reads
    the same plays as text, tokenized by its own tokenizer.
    """
    tokens = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    tokenizer = _tokenizer(model)
    if tokenizer.name_or_path == str(paths.TOKENIZER_DIR):
        return _corpus(model, tokens, held_out=True)
    from feature_lens_core.zoo.tokenizer import load_tokenizer

    return text_corpus(model, str(load_tokenizer(paths.TOKENIZER_DIR).decode(tokens.tolist())))


def text_corpus(model: HookedTransformer, text: str) -> Corpus:
    """A text the user gives, tokenized by the model's tokenizer (special tokens in it separate documents)."""
    if not text.strip():
        raise FeatureLensError("The text to compute the dashboard from is empty. Paste or upload some text.")
    ids = _tokenizer(model)(text, add_special_tokens=False)["input_ids"]
    return _corpus(model, torch.tensor(ids, dtype=torch.long), held_out=False)


@dataclass(frozen=True)
class CorpusActivations:
    """An SAE's non-zero activations on a corpus, grouped by feature.

    Feature f's activations are `values[offsets[f] : offsets[f + 1]]`, at flat positions `where` (window
    `w`, position `p` is `w * n_ctx + p`), in increasing position order. Only text positions are kept.
    """

    corpus: Corpus
    offsets: Int[Tensor, " d_sae_plus_1"]
    where: Int[Tensor, " nnz"]
    values: Float[Tensor, " nnz"]

    @property
    def d_sae(self) -> int:
        return len(self.offsets) - 1

    def of_feature(self, feature: int) -> tuple[Int[Tensor, " n"], Float[Tensor, " n"]]:
        """Where `feature` is active (flat positions) and its activations there."""
        if not 0 <= feature < self.d_sae:
            raise FeatureLensError(f"Feature {feature} is out of range: this SAE has features 0 to {self.d_sae - 1}.")
        start, end = int(self.offsets[feature]), int(self.offsets[feature + 1])
        return self.where[start:end], self.values[start:end]

    def dense(self, feature: int) -> Float[Tensor, "w n_ctx"]:
        """`feature`'s activation at every position of the corpus (0 where it is silent or no text)."""
        where, values = self.of_feature(feature)
        out = torch.zeros(self.corpus.windows.numel(), dtype=values.dtype)
        out[where] = values
        return out.reshape(self.corpus.windows.shape)


@torch.no_grad()
def corpus_activations(
    model: HookedTransformer,
    sae: SAE,
    corpus: Corpus,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> CorpusActivations:
    """Run `sae` over every window of `corpus` and keep its non-zero activations at text positions.

    Each batch runs the model only up to the SAE's block, on the model's device; the result is on the CPU, in
    float32 (a dashboard shows 3 decimals).
    `batch_size` windows at a time (by default as many as keep a batch's activations under
    `BATCH_ELEMENTS`); `progress(done, total)` is called after each batch.
    """
    site = hooks.check_fits(model, "sae", sae)
    n_windows, n_ctx = corpus.windows.shape
    batch = batch_size or max(1, BATCH_ELEMENTS // (n_ctx * sae.cfg.d_sae))
    device = model.cfg.device
    where, features, values = [], [], []
    for start in range(0, n_windows, batch):
        windows = corpus.windows[start : start + batch]
        with exclusive():
            _, cache = model.run_with_cache(windows.to(device), names_filter=[site.read], stop_at_layer=site.layer + 1)
            acts = hooks.encode(sae, cache[site.read]).float()
        acts = acts * corpus.is_text[start : start + batch, :, None].to(acts.device)
        w, p, f = acts.nonzero(as_tuple=True)
        where.append(((w + start) * n_ctx + p).int().cpu())
        features.append(f.cpu())
        values.append(acts[w, p, f].cpu())
        if progress is not None:
            progress(min(start + batch, n_windows), n_windows)
    flat, feature, value = torch.cat(where), torch.cat(features), torch.cat(values)
    order = torch.argsort(feature * corpus.windows.numel() + flat.long())
    counts = torch.bincount(feature, minlength=sae.cfg.d_sae)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return CorpusActivations(corpus=corpus, offsets=offsets, where=flat[order], values=value[order])


@dataclass(frozen=True)
class Histogram:
    """Counts in equal-width bins: bin i spans `edges[i]` to `edges[i + 1]` (the last bin includes its right edge)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


def histogram(values: Float[Tensor, " n"], *, bins: int, low: float | None = None) -> Histogram:
    """`values` in `bins` equal-width bins from `low` (default: their minimum) to their maximum."""
    array = values.double().cpu().numpy()
    if len(array) == 0:
        return Histogram(edges=(), counts=())
    start = float(array.min()) if low is None else low
    counts, edges = np.histogram(array, bins=bins, range=(start, max(float(array.max()), start + 1e-12)))
    return Histogram(edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts))


@dataclass(frozen=True)
class Context:
    """One example: the tokens the model read around it and the feature's activation at each.

    Tokens that are bytes of one character are merged (the activation shown is their largest). `peak` is the
    index in `tokens` of the example's token; `position` is its position in window `window`, and
    `offsets[i]` the window position of the first token of `tokens[i]`. The context never reaches before
    the window's first text position or across a document separator; `cut` says whether text the window
    holds was left out before and after it (`narrowed`).
    """

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    peak: int
    window: int
    position: int
    offsets: tuple[int, ...]
    cut: tuple[bool, bool] = (False, False)

    @property
    def activation(self) -> float:
        return self.activations[self.peak]

    @property
    def only_bos_before(self) -> bool:
        """Whether the model read nothing but BOS before the example's token (it opens its window)."""
        return self.position == 1

    def narrowed(self, *, before: int, after: int) -> Context:
        """The same example with at most `before` tokens before its token and `after` after it."""
        first = max(0, self.peak - before)
        last = min(len(self.tokens), self.peak + after + 1)
        return replace(
            self,
            tokens=self.tokens[first:last],
            activations=self.activations[first:last],
            peak=self.peak - first,
            offsets=self.offsets[first:last],
            cut=(self.cut[0] or first > 0, self.cut[1] or last < len(self.tokens)),
        )


@dataclass(frozen=True)
class ExampleGroup:
    """Examples whose activation lies between `low` and `high`; `share`: the fraction of all active tokens there."""

    title: str
    low: float
    high: float
    share: float
    examples: tuple[Context, ...]


@dataclass(frozen=True)
class TokenEffect:
    """One output token and the feature's direct effect on its logit; `fragment`: a byte of a character,
    shown as its bytes (`\\xe2\\x80`) rather than as the '\ufffd' it decodes to."""

    token: str
    value: float
    fragment: bool


@dataclass(frozen=True)
class Neighbour:
    """A feature whose decoder direction is close to this one's: the cosine of the two decoder rows."""

    sae: str
    feature: int
    label: str
    cosine: float


@dataclass(frozen=True)
class LabelPart:
    """One token a feature fires on: its share of the feature's total activation on the corpus, the token most
    often read just before it there (None: only BOS, the token opens its window) and that token's share of it."""

    token: str
    share: float
    before: str | None
    before_share: float


@dataclass(frozen=True)
class LabelEvidence:
    """A label read off the corpus (`text`) and what supports it: the tokens carrying most of the activation, and
    the output token the feature promotes when it stands out (`promotes`, its logit effect `LABEL_LOGIT_Z` standard
    deviations or more above the mean over the vocabulary; None otherwise or when no logit effects were given)."""

    text: str
    parts: tuple[LabelPart, ...]
    n_active: int
    promotes: TokenEffect | None = None


@dataclass(frozen=True)
class FeatureDashboard:
    """Everything the Feature page shows about one feature on one corpus.

    `density` is the fraction of the corpus's `n_text` text tokens where the feature fires (`n_active` of
    them); `activations` is the histogram of those `n_active` activations; `groups` holds the top examples
    first, then one group per activation quantile; `logits` is the histogram of the feature's direct
    effect on every token of the vocabulary.
    """

    feature: int
    label: str
    n_text: int
    n_active: int
    density: float
    mean_activation: float
    max_activation: float
    activations: Histogram
    groups: tuple[ExampleGroup, ...]
    promoted: tuple[TokenEffect, ...]
    suppressed: tuple[TokenEffect, ...]
    logits: Histogram
    neighbours: tuple[Neighbour, ...]
    evidence: LabelEvidence | None = None


def token_bytes(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    """A token that decodes to '\ufffd' on its own, named by its bytes as Python escapes them (`\\xe2\\x80`, the
    whole characters in it as they are), or by its raw piece when the tokenizer is not byte-level (`<0xE2>`)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # slow to import: only when needed

    piece = str(tokenizer.convert_ids_to_tokens(token_id))
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    if piece and all(char in byte_of for char in piece):
        # surrogateescape keeps each byte of a cut character as U+DC80..U+DCFF, so it can be named exactly.
        text = bytes(byte_of[char] for char in piece).decode("utf-8", errors="surrogateescape")
        return re.sub("[\udc80-\udcff]", lambda cut: f"\\x{ord(cut[0]) - 0xDC00:02x}", text)
    return piece


def merged_tokens(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
    """Token ids as text pieces, runs of byte tokens that make up one character merged into one piece.

    Returns (text, indices into `ids`) per piece. A byte token left alone (its character is cut by the
    context's edge) is named by its bytes (`token_bytes`), never shown as '\ufffd'.
    """
    pieces: list[tuple[str, list[int]]] = []
    i = 0
    while i < len(ids):
        text = str(tokenizer.decode([ids[i]]))
        end = i + 1
        if FRAGMENT in text:
            # A UTF-8 character has at most 4 bytes, so the run that completes it is at most 4 tokens long.
            for j in range(i + 2, min(i + 4, len(ids)) + 1):
                joined = str(tokenizer.decode(list(ids[i:j])))
                if FRAGMENT not in joined:
                    text, end = joined, j
                    break
            else:
                text = token_bytes(tokenizer, int(ids[i]))
        pieces.append((text, list(range(i, end))))
        i = end
    return pieces


def _context(tokenizer: PreTrainedTokenizerBase, corpus: Corpus, dense: Float[Tensor, "w n_ctx"], flat: int) -> Context:
    """The example at flat position `flat`: its window's text around it, up to the separators on either side."""
    n_ctx = corpus.windows.shape[1]
    window, position = divmod(flat, n_ctx)
    text = corpus.is_text[window].tolist()
    start = position
    while start > 1 and text[start - 1]:
        start -= 1
    end = position + 1
    while end < n_ctx and text[end]:
        end += 1
    ids = corpus.windows[window, start:end].tolist()
    acts = dense[window, start:end].tolist()
    pieces = merged_tokens(tokenizer, ids)
    peak = next(k for k, (_, members) in enumerate(pieces) if position - start in members)
    return Context(
        tokens=tuple(t for t, _ in pieces),
        activations=tuple(max(acts[m] for m in members) for _, members in pieces),
        peak=peak,
        window=window,
        position=position,
        offsets=tuple(start + members[0] for _, members in pieces),
    )


LABEL_TOKENS = 3  # tokens a label names at most
LABEL_MIN_SHARE = 0.05  # of the feature's total activation, for a token to be named once others are
LABEL_COVERED = 0.5  # of it, carried by the tokens named so far: below it a diffuse feature names LABEL_TOKENS tokens
LABEL_CONTEXT_SHARE = 0.3  # of a token's activation, for the token before it to be named ("after ...")
# Standard deviations above the vocabulary's mean logit effect for the top promoted token to join the label. Most
# features' top effects are a few similar tokens 3 to 5 deviations out (noise a label would only lengthen); about
# 1 feature in 20 of the built-in SAEs promotes one token this clearly.
LABEL_LOGIT_Z = 6.0


def label_evidence(
    tokenizer: PreTrainedTokenizerBase,
    acts: CorpusActivations,
    feature: int,
    *,
    logits: Float[Tensor, " d_vocab"] | None = None,
) -> LabelEvidence:
    """The tokens that carry most of `feature`'s activation on the corpus, each with its usual preceding token, and
    a label naming them: `' thou' after ' art' (12%) · ' me' (8%)`. Shares are of the summed activation, so a
    token the feature fires on strongly counts more than one it barely touches. A token under `LABEL_MIN_SHARE` is
    named only while those before it carry under `LABEL_COVERED` together: a feature spread over many tokens is
    named by its top `LABEL_TOKENS`, not by one token with a few percent. Given the feature's direct effect
    on every logit (`feature_logits`), a promoted token that stands out ends the label: `... → ','`.

    The zoo build writes the built-in SAEs' shipped labels with this function over the held-out plays
    (`feature_lens_core.zoo.labels`), so on those plays a dashboard's evidence and the shipped label agree."""
    where, values = acts.of_feature(feature)
    if not len(values):
        return LabelEvidence("never fires on this text", (), 0)
    flat = acts.corpus.windows.flatten()
    ids, before = flat[where.long()], flat[where.long() - 1]
    opens = (where % acts.corpus.windows.shape[1]) == 1  # the model read only BOS before it
    total = float(values.sum())
    mass = torch.zeros(int(flat.max()) + 1, dtype=torch.float64).index_add_(0, ids, values.double())
    parts = []
    for token_id in mass.argsort(descending=True)[:LABEL_TOKENS].tolist():
        share = float(mass[token_id]) / total
        if share < LABEL_MIN_SHARE and parts and sum(p.share for p in parts) >= LABEL_COVERED:
            break
        here = ids == token_id
        previous = torch.where(opens[here], -1, before[here])
        weight = torch.zeros(len(mass) + 1, dtype=torch.float64).index_add_(0, previous + 1, values[here].double())
        best = int(weight.argmax())
        parts.append(
            LabelPart(
                token=merged_tokens(tokenizer, [token_id])[0][0],
                share=share,
                before=None if best == 0 else merged_tokens(tokenizer, [best - 1])[0][0],
                before_share=float(weight[best]) / float(mass[token_id]),
            )
        )

    def named(part: LabelPart) -> str:
        token = repr(part.token.replace("\n", "⏎"))
        if part.before_share < LABEL_CONTEXT_SHARE:
            return f"{token} ({part.share:.0%})"
        after = "BOS" if part.before is None else repr(part.before.replace("\n", "⏎"))
        return f"{token} after {after} ({part.share:.0%})"

    promotes = None if logits is None else _standing_out(tokenizer, logits)
    text = " · ".join(named(p) for p in parts)
    if promotes is not None:
        shown = promotes.token.replace("\n", "⏎")
        text += f" → {shown!r}"
    return LabelEvidence(text, tuple(parts), len(values), promotes)


def _standing_out(tokenizer: PreTrainedTokenizerBase, logits: Float[Tensor, " d_vocab"]) -> TokenEffect | None:
    """The top promoted token if its effect is `LABEL_LOGIT_Z` deviations above the mean and it reads as text (not
    a byte fragment, not only spaces)."""
    values = logits.double()
    top = int(values.argmax())
    if float((values[top] - values.mean()) / values.std()) < LABEL_LOGIT_Z:
        return None
    effect = _effects(tokenizer, torch.tensor([top]), logits[top : top + 1])[0]
    return None if effect.fragment or not effect.token.strip(" ") else effect


def _top_flat(sae: SAE, corpus: Corpus, where: Tensor, values: Tensor, feature: int, k: int) -> list[int]:
    """The flat positions of the top-`k` activations: the shipped ones for a built-in SAE on the held-out
    plays (`top_index` points into the held-out stream), else the largest `k` here."""
    data = shipped_data(sae) if corpus.held_out else None
    if data is not None:
        n_ctx = corpus.windows.shape[1]
        stream = [i for i in data["top_index"][feature].tolist() if i >= 0][:k]
        return [(i // (n_ctx - 1)) * n_ctx + i % (n_ctx - 1) + 1 for i in stream]
    top = values.topk(min(k, len(values)))
    return where[top.indices].tolist()


def _groups(
    tokenizer: PreTrainedTokenizerBase,
    acts: CorpusActivations,
    top: list[int],
    where: Tensor,
    values: Tensor,
    dense: Tensor,
    *,
    quantiles: int,
    per_group: int,
    seed: int,
) -> tuple[ExampleGroup, ...]:
    """The top examples, then `per_group` examples drawn at random from each of `quantiles` quantile ranges."""
    corpus = acts.corpus
    n = len(values)
    if n == 0:
        return ()
    top_values = dense.flatten()[top]
    groups = [
        ExampleGroup(
            title="Top",
            low=float(top_values.min()),
            high=float(top_values.max()),
            share=len(top) / n,
            examples=tuple(_context(tokenizer, corpus, dense, i) for i in top),
        )
    ]
    edges = torch.quantile(values.double(), torch.linspace(0, 1, quantiles + 1, dtype=torch.double)).tolist()
    generator = torch.Generator().manual_seed(seed)
    for q in range(quantiles):
        low, high = edges[q], edges[q + 1]
        inside = (values >= low) & ((values <= high) if q == quantiles - 1 else (values < high))
        members = inside.nonzero().flatten()
        if len(members) == 0:
            continue
        chosen = members[torch.randperm(len(members), generator=generator)[:per_group]]
        chosen = chosen[values[chosen].argsort(descending=True)]
        groups.append(
            ExampleGroup(
                title=f"Q{q + 1}: {low:.2f}–{high:.2f}",
                low=low,
                high=high,
                share=len(members) / n,
                examples=tuple(_context(tokenizer, corpus, dense, int(where[i])) for i in chosen),
            )
        )
    return tuple(groups)


@torch.no_grad()
def feature_logits(model: HookedTransformer, sae: SAE, feature: int) -> Float[Tensor, " d_vocab"]:
    """The feature's direct effect on every output logit: its decoder row through the final norm and `W_U`
    (as `logit_effects` computes it for every feature)."""
    direction = decoder_in_residual(model, sae)[feature : feature + 1]
    return (through_final_norm(model, direction.to(model.W_U.dtype)) @ model.W_U.detach())[0].float().cpu()


def _effects(tokenizer: PreTrainedTokenizerBase, ids: Tensor, values: Tensor) -> tuple[TokenEffect, ...]:
    out = []
    for token_id, value in zip(ids.tolist(), values.tolist(), strict=True):
        text = str(tokenizer.decode([token_id]))
        fragment = FRAGMENT in text
        out.append(
            TokenEffect(token=token_bytes(tokenizer, token_id) if fragment else text, value=value, fragment=fragment)
        )
    return tuple(out)


@torch.no_grad()
def nearest_features(
    sae: SAE, feature: int, others: Mapping[str, SAE], *, name: str, k: int = 10
) -> tuple[Neighbour, ...]:
    """The `k` features whose decoder rows have the largest cosine with `feature`'s, in `sae` (named `name`,
    itself left out) and in every SAE of `others` that writes to the same hook (others are skipped)."""
    write = hooks.site(sae).write
    row = sae.W_dec.detach()[feature].float().cpu()
    found: list[Neighbour] = []
    for other_name, other in {name: sae, **others}.items():
        if hooks.site(other).write != write or other.W_dec.shape[1] != row.shape[0]:
            continue
        cosine = F.cosine_similarity(other.W_dec.detach().float().cpu(), row[None], dim=-1)
        if other_name == name:
            cosine[feature] = -torch.inf
        best = cosine.topk(min(k, len(cosine)))
        found += [
            Neighbour(other_name, f, feature_label(other, f), c)
            for f, c in zip(best.indices.tolist(), best.values.tolist(), strict=True)
            if c > -torch.inf
        ]
    return tuple(sorted(found, key=lambda n: -n.cosine)[:k])


def feature_dashboard(
    model: HookedTransformer,
    sae: SAE,
    acts: CorpusActivations,
    feature: int,
    *,
    name: str,
    others: Mapping[str, SAE] | None = None,
    bins: int = 40,
    top: int = 10,
    quantiles: int = 5,
    per_group: int = 5,
    tokens: int = 10,
    neighbours: int = 10,
    seed: int = 0,
) -> FeatureDashboard:
    """The dashboard of `feature` of `sae` (named `name`) from its activations on a corpus (`corpus_activations`).

    `bins` histogram bins (activations from 0, logit effects over the whole vocabulary); `top` top examples,
    then `per_group` examples from each of `quantiles` quantiles of the non-zero activations (drawn with
    `seed`); `tokens` promoted and suppressed tokens; `neighbours` nearest features by decoder cosine in
    `sae` and `others` (SAEs writing elsewhere are skipped).
    """
    tokenizer = _tokenizer(model)
    where, values = acts.of_feature(feature)
    dense = acts.dense(feature)
    n_text = acts.corpus.n_text
    logits = feature_logits(model, sae, feature)
    up, down = logits.topk(tokens), (-logits).topk(tokens)
    return FeatureDashboard(
        feature=feature,
        label=feature_label(sae, feature),
        n_text=n_text,
        n_active=len(values),
        density=len(values) / n_text if n_text else 0.0,
        mean_activation=float(values.sum()) / n_text if n_text else 0.0,
        max_activation=float(values.max()) if len(values) else 0.0,
        activations=histogram(values, bins=bins, low=0.0),
        groups=_groups(
            tokenizer,
            acts,
            _top_flat(sae, acts.corpus, where, values, feature, top),
            where,
            values,
            dense,
            quantiles=quantiles,
            per_group=per_group,
            seed=seed,
        ),
        promoted=_effects(tokenizer, up.indices, up.values),
        suppressed=_effects(tokenizer, down.indices, -down.values),
        logits=histogram(logits, bins=bins),
        neighbours=nearest_features(sae, feature, others or {}, name=name, k=neighbours),
        evidence=label_evidence(tokenizer, acts, feature, logits=logits),
    )


def search_features(labels: Sequence[str], query: str, *, limit: int = 20) -> list[int]:
    """Features whose label contains `query` (case-insensitive; `#12` or `12` finds feature 12), best first:
    exact label, then label starting with it, then containing it."""
    wanted = query.strip().lower()
    if not wanted:
        return []
    number = wanted.removeprefix("#")
    exact = [int(number)] if number.isdigit() and int(number) < len(labels) else []
    scored = []
    for f, label in enumerate(labels):
        text = label.lower()
        if wanted in text:
            scored.append((0 if text == wanted else 1 if text.startswith(wanted) else 2, f))
    return list(dict.fromkeys([*exact, *(f for _, f in sorted(scored))]))[:limit]
