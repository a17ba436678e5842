"""Labels read off a corpus: the tokens carrying a feature's activation and their usual context, with evidence."""

from __future__ import annotations

import pytest
import torch

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import dashboard


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
