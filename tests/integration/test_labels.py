"""Labels read off a corpus: the tokens carrying a feature's activation and their usual context, with evidence;
the shipped labels are the same reading of the held-out plays."""

from __future__ import annotations

import pytest
import torch

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import dashboard
from feature_lens_core.feature_data import feature_label, feature_labels


@pytest.fixture(scope="module")
def model():
    return flc.load_model("toy")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.title)
def test_a_worked_examples_target_is_labelled_by_what_it_fires_on_there(model, example) -> None:
    sae = flc.load_sae("toy", example.sae)
    acts = dashboard.corpus_activations(model, sae, dashboard.text_corpus(model, example.prompt))
    evidence = dashboard.label_evidence(model.tokenizer, acts, example.feature)
    tokens = model.to_str_tokens(example.prompt)
    named = [part.token for part in evidence.parts]
    assert tokens[example.position] in named, (evidence.text, tokens[example.position])
    assert repr(tokens[example.position]) in evidence.text
    if example.title == "Wherefore art thou Romeo?":  # the pattern issue readers expect: ' thou' after ' art'
        assert evidence.text.startswith("' thou' after ' art'")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.title)
def test_a_worked_examples_shipped_label_names_the_token_it_fires_on_there(model, example) -> None:
    # The label the app shows is the shipped one, read off the held-out plays, not the example's prompt: the
    # examples are chosen so that it too starts with the token the target fires on in the example.
    tokens = model.to_str_tokens(example.prompt)
    label = feature_label(flc.load_sae("toy", example.sae), example.feature)
    assert label.startswith(repr(tokens[example.position])), (label, tokens[example.position])


def test_the_evidence_shares_are_a_recount_of_the_activations(model) -> None:
    sae = flc.load_sae("toy", "L1.mlp_out")
    acts = dashboard.corpus_activations(model, sae, dashboard.held_out_corpus(model))
    flat = acts.corpus.windows.flatten()
    for feature in (924, 78, 0, 3):
        evidence = dashboard.label_evidence(model.tokenizer, acts, feature)
        where, values = acts.of_feature(feature)
        assert evidence.n_active == len(values) and 1 <= len(evidence.parts) <= dashboard.LABEL_TOKENS
        shares = [p.share for p in evidence.parts]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
        top = evidence.parts[0]
        ids = flat[where.long()]
        token_id = int(torch.tensor([float(values[ids == i].sum()) for i in range(model.cfg.d_vocab)]).argmax())
        assert model.tokenizer.decode([token_id]) == top.token
        assert top.share == pytest.approx(float(values[ids == token_id].sum() / values.sum()), rel=1e-6)
        if top.before_share >= dashboard.LABEL_CONTEXT_SHARE:
            assert f"{top.token!r} after" in evidence.text


@pytest.fixture(scope="module")
def held_out(model):
    return dashboard.held_out_corpus(model)


@pytest.mark.parametrize("name", sorted({e.sae for e in EXAMPLES}))
def test_the_shipped_labels_are_the_evidence_on_the_held_out_plays(model, held_out, name) -> None:
    # The zoo's `labels` stage and the dashboard read labels with one function: a built-in SAE's dashboard on the
    # held-out plays shows its shipped label as its evidence, worked examples' targets included.
    sae = flc.load_sae("toy", name)
    acts = dashboard.corpus_activations(model, sae, held_out)
    targets = [e.feature for e in EXAMPLES if e.sae == name]
    for feature in [*targets, 0, 1, 517, 1023]:
        logits = dashboard.feature_logits(model, sae, feature)
        evidence = dashboard.label_evidence(model.tokenizer, acts, feature, logits=logits)
        assert feature_label(sae, feature) == evidence.text
        for part in evidence.parts:  # each named token with its context, where the evidence has one
            assert repr(part.token.replace("\n", "⏎")) in evidence.text
            if part.before_share >= dashboard.LABEL_CONTEXT_SHARE:
                after = "BOS" if part.before is None else repr(part.before.replace("\n", "⏎"))
                assert f"after {after}" in evidence.text


def test_a_label_ends_with_a_promoted_token_only_where_it_stands_out(model, held_out) -> None:
    sae = flc.load_sae("toy", "L2.resid_post")
    labels = feature_labels(sae)
    logits = torch.stack([dashboard.feature_logits(model, sae, f) for f in range(sae.cfg.d_sae)]).double()
    z = ((logits.max(1).values - logits.mean(1)) / logits.std(1)).tolist()
    with_arrow = [f for f, label in enumerate(labels) if " → " in label]
    assert with_arrow and all(z[f] >= dashboard.LABEL_LOGIT_Z for f in with_arrow)
    for f in with_arrow:
        top = int(logits[f].argmax())
        shown = model.tokenizer.decode([top]).replace("\n", "⏎")
        assert labels[f].endswith(f" → {shown!r}")


def test_a_diffuse_feature_is_named_by_several_tokens(model, held_out) -> None:
    sae = flc.load_sae("toy", "L1.mlp_out")
    acts = dashboard.corpus_activations(model, sae, held_out)
    evidence = dashboard.label_evidence(model.tokenizer, acts, 924)  # spread over pronouns and verbs
    assert evidence.parts[0].share < dashboard.LABEL_COVERED
    assert len(evidence.parts) == dashboard.LABEL_TOKENS
