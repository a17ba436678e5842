"""Feature dashboards on the built-in model and its SAEs: histograms, density, quantile examples, contexts,
logit effects with byte fragments, decoder neighbours; checked against direct computations and the shipped data."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

import feature_lens_core as flc
from feature_lens_core import dashboard
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.feature_data import shipped_data
from feature_lens_core.logit_effects import decoder_in_residual
from feature_lens_core.zoo.feature_data import feature_activations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "L1.attn_z"


@pytest.fixture(scope="module")
def held_out(toy_model: HookedTransformer) -> dashboard.Corpus:
    return dashboard.held_out_corpus(toy_model)


@pytest.fixture(scope="module")
def acts(toy_model: HookedTransformer, toy_saes: dict[str, SAE], held_out) -> dashboard.CorpusActivations:
    return dashboard.corpus_activations(toy_model, toy_saes[NAME], held_out)


@pytest.fixture(scope="module")
def busy(acts) -> int:
    """A feature that fires often: every quantile has many members."""
    return int((acts.offsets[1:] - acts.offsets[:-1]).argmax())


def _bare(sae: SAE) -> SAE:
    """The same SAE without its folder: no shipped data, as any SAE loaded from elsewhere."""
    hook = sae.cfg.metadata.hook_name
    bare = type(sae)(sae.cfg.__class__.from_dict({**sae.cfg.to_dict(), "metadata": {"hook_name": hook}}))
    bare.load_state_dict(sae.state_dict())
    return bare


def test_sparse_activations_equal_a_dense_pass(toy_model, toy_saes, held_out, acts) -> None:
    """Every non-zero text activation is kept, at the right place: the zoo build's own pass, masked, agrees."""
    windows = held_out.windows[:24]
    direct = feature_activations(toy_model, toy_saes[NAME], windows) * held_out.is_text[:24, :, None]
    for feature in (0, 5, 100, 777):
        torch.testing.assert_close(acts.dense(feature)[:24], direct[..., feature], rtol=1e-4, atol=1e-5)


def test_histogram_counts_every_active_token_and_density_is_its_share(toy_model, toy_saes, held_out, acts) -> None:
    sae = toy_saes[NAME]
    shipped = shipped_data(sae)
    assert shipped is not None
    for feature in (0, 17, 512):
        board = dashboard.feature_dashboard(toy_model, sae, acts, feature, name=NAME)
        dense = acts.dense(feature)
        n_active = int((dense > 0).sum())
        assert board.n_active == n_active and sum(board.activations.counts) == n_active
        assert board.n_text == int(held_out.is_text.sum()) == 76_199  # 600 windows of 127, less one separator
        assert board.density == pytest.approx(n_active / board.n_text)
        # The shipped density was measured on the build machine: a token whose pre-activation sits within float
        # error of the threshold can fall on the other side on another CPU (one token of feature 0 does).
        assert board.density == pytest.approx(float(shipped["density"][feature]), abs=1.5 / board.n_text)
        assert board.mean_activation == pytest.approx(float(shipped["mean_activation"][feature]), rel=1e-4)
        edges = board.activations.edges
        assert edges[0] == 0.0 and edges[-1] == pytest.approx(float(dense.max()))
        assert sum(board.logits.counts) == toy_model.cfg.d_vocab


def test_top_examples_are_the_shipped_ones_and_the_largest(toy_model, toy_saes, acts, busy) -> None:
    sae = toy_saes[NAME]
    board = dashboard.feature_dashboard(toy_model, sae, acts, busy, name=NAME)
    top = board.groups[0]
    assert top.title == "Top" and len(top.examples) == 10
    shipped = shipped_data(sae)
    assert shipped is not None
    expected = shipped["top_activation"][busy].tolist()
    assert [e.activation for e in top.examples] == pytest.approx(expected, rel=1e-5)
    assert [e.activation for e in top.examples] == pytest.approx(acts.of_feature(busy)[1].topk(10).values.tolist())
    # The same SAE without its shipped data finds the same examples itself.
    bare = dashboard.feature_dashboard(toy_model, _bare(sae), acts, busy, name=NAME)
    assert [(e.window, e.position) for e in bare.groups[0].examples] == [(e.window, e.position) for e in top.examples]


def test_quantile_examples_lie_in_their_quantile(toy_model, toy_saes, acts, busy) -> None:
    board = dashboard.feature_dashboard(toy_model, toy_saes[NAME], acts, busy, name=NAME, quantiles=5, per_group=6)
    values = acts.of_feature(busy)[1]
    quantiles = board.groups[1:]
    assert len(quantiles) == 5
    assert sum(g.share for g in quantiles) == pytest.approx(1.0, abs=1e-3)
    edges = torch.quantile(values.double(), torch.linspace(0, 1, 6, dtype=torch.double)).tolist()
    for q, group in enumerate(quantiles):
        assert (group.low, group.high) == pytest.approx((edges[q], edges[q + 1]))
        assert len(group.examples) == 6
        for example in group.examples:
            assert group.low <= example.activation <= group.high
            assert example.activation == pytest.approx(float(acts.dense(busy)[example.window, example.position]))
    # Drawn with the seed: the same seed draws the same examples, another seed others.
    again = dashboard.feature_dashboard(toy_model, toy_saes[NAME], acts, busy, name=NAME, quantiles=5, per_group=6)
    assert again.groups == board.groups
    other = dashboard.feature_dashboard(toy_model, toy_saes[NAME], acts, busy, name=NAME, per_group=6, seed=1)
    assert other.groups[1:] != board.groups[1:]


def _assert_context_is_what_the_model_read(model: HookedTransformer, corpus: dashboard.Corpus, example) -> None:
    """A full context is the run of text positions of its window around its token: no BOS, no separator, no
    other window; its pieces are the tokens there in order and reach the run's ends."""
    assert model.tokenizer is not None
    offsets = list(example.offsets)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    n_ctx = corpus.windows.shape[1]
    text = corpus.is_text[example.window].tolist()
    first, end = offsets[0], example.position + 1
    while end < n_ctx and text[end]:
        end += 1
    assert first >= 1 and all(text[first:end]) and (first == 1 or not text[first - 1])
    assert offsets[example.peak] <= example.position
    assert example.peak == len(offsets) - 1 or example.position < offsets[example.peak + 1]
    joined = "".join(example.tokens)
    if "\\x" not in joined:  # a byte fragment cut at the edge is named, not decoded
        assert joined == model.tokenizer.decode(corpus.windows[example.window, first:end].tolist())


def test_contexts_never_cross_a_window_or_a_separator(toy_model, toy_saes, held_out, acts, busy) -> None:
    board = dashboard.feature_dashboard(toy_model, toy_saes[NAME], acts, busy, name=NAME)
    for group in board.groups:
        for example in group.examples:
            _assert_context_is_what_the_model_read(toy_model, held_out, example)
    # Documents joined by the separator: no context holds text of two documents.
    first, second = "Macbeth shall never vanquish'd be", "If music be the food of love, play on"
    text = "<|endoftext|>".join([f"{first}. " * 3, f"{second}. " * 3] * 4)
    corpus = dashboard.text_corpus(toy_model, text)
    on_text = dashboard.corpus_activations(toy_model, toy_saes[NAME], corpus)
    feature = int((on_text.offsets[1:] - on_text.offsets[:-1]).argmax())
    board = dashboard.feature_dashboard(toy_model, toy_saes[NAME], on_text, feature, name=NAME, per_group=10)
    shown = [e for g in board.groups for e in g.examples]
    assert shown
    for example in shown:
        _assert_context_is_what_the_model_read(toy_model, corpus, example)
        joined = "".join(example.tokens)
        assert not (first in joined and second in joined) and "<|endoftext|>" not in joined
    narrow = shown[0].narrowed(before=3, after=2)
    assert narrow.tokens[narrow.peak] == shown[0].tokens[shown[0].peak] and len(narrow.tokens) <= 6
    assert narrow.activation == shown[0].activation
    full = shown[0]
    assert full.cut == (False, False)
    assert narrow.cut == (narrow.offsets[0] > full.offsets[0], narrow.offsets[-1] < full.offsets[-1])


def test_a_text_corpus_pads_its_last_window_and_reports_progress(toy_model, toy_saes) -> None:
    calls: list[tuple[int, int]] = []
    text = "To be, or not to be: that is the question. " * 20
    corpus = dashboard.text_corpus(toy_model, text)
    sae = toy_saes["L0.resid_pre"]
    acts = dashboard.corpus_activations(toy_model, sae, corpus, batch_size=1, progress=lambda *c: calls.append(c))
    assert calls == [(i + 1, len(corpus.windows)) for i in range(len(corpus.windows))]
    n_tokens = len(toy_model.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[misc]
    assert corpus.n_text == n_tokens and len(corpus.windows) == -(-n_tokens // (toy_model.cfg.n_ctx - 1))
    assert acts.where.numel() == acts.values.numel() and bool((acts.values > 0).all())
    with pytest.raises(FeatureLensError, match="empty"):
        dashboard.text_corpus(toy_model, "  ")
    with pytest.raises(FeatureLensError, match="out of range"):
        acts.of_feature(toy_saes["L0.resid_pre"].cfg.d_sae)


def test_nearest_features_are_the_largest_decoder_cosines(toy_saes) -> None:
    sae, feature = toy_saes["L1.mlp_out"], 42
    others = {name: s for name, s in toy_saes.items() if name != "L1.mlp_out"}
    found = dashboard.nearest_features(sae, feature, others, name="L1.mlp_out", k=12)
    assert all(n.cosine < 1 - 1e-6 for n in found) and ("L1.mlp_out", feature) not in {
        (n.sae, n.feature) for n in found
    }
    # Only SAEs writing to the same hook: the layer-1 MLP transcoder writes blocks.1.hook_mlp_out too.
    assert {n.sae for n in found} <= {"L1.mlp_out", "L1.transcoder"}
    rows = {name: toy_saes[name].W_dec.detach() for name in ("L1.mlp_out", "L1.transcoder")}
    row = rows["L1.mlp_out"][feature]
    direct = []
    for name, w_dec in rows.items():
        cosine = (w_dec @ row) / (w_dec.norm(dim=-1) * row.norm())
        direct += [(float(c), name, f) for f, c in enumerate(cosine.tolist()) if (name, f) != ("L1.mlp_out", feature)]
    expected = sorted(direct, reverse=True)[:12]
    assert [(n.sae, n.feature) for n in found] == [(name, f) for _, name, f in expected]
    assert [n.cosine for n in found] == pytest.approx([c for c, _, _ in expected], abs=1e-5)


def test_byte_fragments_are_merged_in_contexts_and_named_in_logit_tables(toy_model, toy_saes) -> None:
    tokenizer = toy_model.tokenizer
    assert tokenizer is not None
    ids = tokenizer("’tis “so”", add_special_tokens=False)["input_ids"]
    pieces = dashboard.merged_tokens(tokenizer, ids)
    assert [text for text, _ in pieces] == ["’", "tis", " ", "“", "so", "”"]
    assert [i for _, members in pieces for i in members] == list(range(len(ids)))
    cut = dashboard.merged_tokens(tokenizer, ids[1:])  # the curly quote's first byte is cut off
    assert [text for text, _ in cut][:2] == ["\\x80", "\\x99"]

    # A feature whose shipped suppressed tokens hold '\ufffd' fragments: the dashboard names their bytes.
    def fragments(sae: SAE) -> list[int]:
        shipped = shipped_data(sae)
        assert shipped is not None
        suppressed = shipped["suppressed"].tolist()
        return [f for f, ids in enumerate(suppressed) if sum("\ufffd" in tokenizer.decode([i]) for i in ids) >= 3]

    name = next((n for n, sae in toy_saes.items() if fragments(sae)), None)
    assert name is not None, "no feature with byte fragments among its suppressed tokens"
    sae, feature = toy_saes[name], fragments(toy_saes[name])[0]
    shipped = shipped_data(sae)
    assert shipped is not None
    corpus = dashboard.text_corpus(toy_model, "Fair is foul, and foul is fair.")
    board = dashboard.feature_dashboard(
        toy_model, sae, dashboard.corpus_activations(toy_model, sae, corpus), feature, name=name, tokens=8
    )
    assert [int(i) for i in shipped["suppressed"][feature]] == [
        int(i) for i in (-dashboard.feature_logits(toy_model, sae, feature)).topk(8).indices
    ]
    effects = [*board.promoted, *board.suppressed]
    assert not any("\ufffd" in e.token for e in effects)
    named = [e for e in board.suppressed if e.fragment]
    assert len(named) >= 3 and all(re.fullmatch(r"(\\x[0-9a-f]{2})+", e.token) for e in named)
    assert [e.value for e in board.suppressed] == pytest.approx(shipped["suppressed_value"][feature].tolist(), rel=1e-4)


def test_feature_logits_are_the_decoder_through_the_unembedding(toy_model, toy_saes) -> None:
    sae = toy_saes["L2.attn_z"]
    direction = decoder_in_residual(toy_model, sae)[9]
    with torch.no_grad():
        expected = (direction - direction.mean()) @ torch.diag(toy_model.ln_final.w) @ toy_model.W_U
    torch.testing.assert_close(dashboard.feature_logits(toy_model, sae, 9), expected, rtol=1e-4, atol=1e-5)


def test_search_by_label_or_number() -> None:
    labels = ['" thou"', '" thou" after ","', '"art"', '" thee" → " lord"']
    assert dashboard.search_features(labels, '" thou"') == [0, 1]
    assert dashboard.search_features(labels, "LORD") == [3]
    assert dashboard.search_features(labels, "#2") == [2]
    assert dashboard.search_features(labels, "  ") == []


def test_the_held_out_corpus_of_another_tokenizer_reads_the_same_plays(toy_model) -> None:
    """A model with its own tokenizer reads the plays as text (here: the toy tokenizer under another name)."""
    other = copy.copy(toy_model)
    other.tokenizer = copy.copy(toy_model.tokenizer)
    other.tokenizer.name_or_path = "somewhere-else"  # type: ignore[union-attr]
    corpus = dashboard.held_out_corpus(other)
    assert not corpus.held_out and corpus.n_text > 70_000


def test_a_float64_load_gives_the_same_dashboard(toy_model, toy_saes) -> None:
    """The model and SAE on an explicit device and dtype (float64 on the CPU) give the default load's figures."""
    model = flc.load_model("toy", device="cpu", dtype="float64")
    sae = flc.load_sae("toy", "L0.mlp_out", device="cpu", dtype="float64")
    corpus = dashboard.text_corpus(model, "So foul and fair a day I have not seen. " * 30)
    ours = dashboard.feature_dashboard(
        model, sae, dashboard.corpus_activations(model, sae, corpus), 7, name="L0.mlp_out"
    )
    default = dashboard.feature_dashboard(
        toy_model,
        toy_saes["L0.mlp_out"],
        dashboard.corpus_activations(toy_model, toy_saes["L0.mlp_out"], corpus),
        7,
        name="L0.mlp_out",
    )
    assert ours.n_active == default.n_active and ours.density == default.density
    assert ours.max_activation == pytest.approx(default.max_activation, rel=1e-5)
    assert [e.token for e in ours.promoted] == [e.token for e in default.promoted]
    assert [n.feature for n in ours.neighbours] == [n.feature for n in default.neighbours]
