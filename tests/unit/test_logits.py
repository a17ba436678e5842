"""Logit and logit-difference targets: every method on the model's next-token prediction, proven against
full forward passes (brute force), the exact linear case, and the messages for bad tokens."""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.options import METHODS
from feature_lens_core.ranking import COLUMNS, predictions, rank
from feature_lens_core.targets import LogitDiffRef, LogitRef, parse_target
from tests.helpers import PROMPT, brute_force_logit, cache_of, centred_logit, node_change, write_hook

pytestmark = pytest.mark.unit
RTOL = 1e-6  # the tiny model runs in float64


def _top_tokens(model, prompt: str, q: int, k: int = 2) -> list[int]:
    with torch.no_grad():
        return model(model.to_tokens(prompt))[0, q].topk(k).indices.tolist()


def _clean_logits(model):
    with torch.no_grad():
        return model(model.to_tokens(PROMPT))


def _assert_brute_force(model, saes, frame, q, token, other=None, limit=25):
    rows = frame.head(limit)
    expected = [
        brute_force_logit(model, PROMPT, saes[r.sae], r.position, r.feature, q, token, other) for r in rows.itertuples()
    ]
    scale = max(abs(e) for e in expected)
    torch.testing.assert_close(
        torch.tensor(rows.score.to_numpy()), torch.tensor(expected, dtype=torch.float64), rtol=RTOL, atol=RTOL * scale
    )


@pytest.mark.parametrize("sources", [["L0.attn_z", "L1.transcoder", "L2.resid_post"], ["L1.resid_pre", "L2.mlp_out"]])
def test_activation_patching_on_a_logit_equals_brute_force(model, saes, sources):
    q = len(model.to_str_tokens(PROMPT)) - 2
    token = _top_tokens(model, PROMPT, q)[0]
    frame = rank(
        model, {n: saes[n] for n in sources}, PROMPT, LogitRef(token, q), direction="upstream", method="activation"
    )
    assert list(frame.columns) == COLUMNS
    assert set(frame.sae) == set(sources)  # a logit reads after every SAE, the final residual one included
    _assert_brute_force(model, saes, frame, q, token)


def test_activation_patching_on_a_logit_difference_equals_brute_force(model, saes):
    q = 6
    token, other = _top_tokens(model, PROMPT, q)
    picked = {n: saes[n] for n in ["L0.transcoder", "L1.attn_z", "L2.resid_pre"]}
    frame = rank(model, picked, PROMPT, LogitDiffRef(token, other, q), direction="upstream", method="activation")
    _assert_brute_force(model, saes, frame, q, token, other)


def test_direct_on_the_final_residual_is_the_exact_linear_effect_with_ln_final_frozen(model, saes):
    """From the last residual SAE the only path to the logits is ln_final and the unembedding; with ln_final's
    scale held at its clean value it is linear, so the direct score is the exact effect of that frozen run."""
    q = 7
    token = _top_tokens(model, PROMPT, q)[0]
    name = f"L{model.cfg.n_layers - 1}.resid_post"
    frame = rank(model, {name: saes[name]}, PROMPT, LogitRef(token, q), direction="upstream", method="direct")
    cache = cache_of(model, PROMPT)
    clean_scale = cache["ln_final.hook_scale"]
    expected = []
    for row in frame.head(20).itertuples():
        change = node_change(saes[name], cache, row.position, row.feature)

        def add(act, hook, change=change, row=row):
            act = act.clone()
            act[:, row.position] += change
            return act

        with torch.no_grad():
            logits = model.run_with_hooks(
                model.to_tokens(PROMPT),
                fwd_hooks=[(write_hook(saes[name]), add), ("ln_final.hook_scale", lambda s, hook: clean_scale)],
            )
        expected.append(centred_logit(_clean_logits(model), q, token) - centred_logit(logits, q, token))
    torch.testing.assert_close(
        torch.tensor(frame.head(20).score.to_numpy()), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-9
    )


def test_attribution_on_a_logit_is_the_derivative(model, saes):
    """Attribution is -<delta, d logit / dx>: the limit of brute force with the node scaled towards its baseline."""
    q = 8
    token = _top_tokens(model, PROMPT, q)[0]
    picked = {n: saes[n] for n in ["L0.mlp_out", "L1.attn_z"]}
    frame = rank(model, picked, PROMPT, LogitRef(token, q), direction="upstream", method="attribution")
    cache = cache_of(model, PROMPT)
    eps = 1e-4
    for row in frame.head(6).itertuples():
        change = node_change(saes[row.sae], cache, row.position, row.feature)
        values = []
        for sign in (1, -1):

            def add(act, hook, change=change, row=row, sign=sign):
                act = act.clone()
                act[:, row.position] += sign * eps * change
                return act

            with torch.no_grad():
                logits = model.run_with_hooks(model.to_tokens(PROMPT), fwd_hooks=[(write_hook(saes[row.sae]), add)])
            values.append(centred_logit(logits, q, token))
        derivative = (values[0] - values[1]) / (2 * eps)
        assert row.score == pytest.approx(-derivative, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_ranks_a_logit_target_by_text_form(model, saes, method):
    q = 5
    token = model.to_str_tokens(model.to_tokens(PROMPT)[0, q + 1 : q + 2], prepend_bos=False)[0]
    target = parse_target(f"logit[{token!r}]@{q}")
    frame = rank(model, saes, PROMPT, target, direction="upstream", method=method)
    assert len(frame) > 0 and frame.score.abs().is_monotonic_decreasing
    assert frame.position.max() <= q


def test_bad_logit_targets_say_what_to_change(model, saes):
    with pytest.raises(FeatureLensError, match="tokens for this model's tokenizer"):
        rank(model, saes, PROMPT, LogitRef("To be, or not", 3), direction="upstream", method="direct")
    with pytest.raises(FeatureLensError, match="Token id 100000 is out of range: the vocabulary has tokens 0 to"):
        rank(model, saes, PROMPT, LogitRef(100000, 3), direction="upstream", method="direct")
    with pytest.raises(FeatureLensError, match="has nothing downstream"):
        rank(model, saes, PROMPT, LogitRef(5, 3), direction="downstream", method="direct")
    with pytest.raises(FeatureLensError, match="Position 99 is out of range"):
        rank(model, saes, PROMPT, LogitRef(5, 99), direction="upstream", method="direct")
    with pytest.raises(FeatureLensError, match="non-empty string or a token id"):
        rank(model, saes, PROMPT, LogitDiffRef(5, "", 3), direction="upstream", method="direct")


def test_text_forms_round_trip():
    for target in (LogitRef(" thee", 4), LogitRef(17, 0), LogitDiffRef(" a'b", "x", 9)):
        assert parse_target(str(target)) == target


def test_the_models_predictions_are_its_most_probable_next_tokens(model):
    q = 5
    found = predictions(model, PROMPT, q, count=4)
    probabilities = model(model.to_tokens(PROMPT))[0, q].softmax(-1)
    best = probabilities.topk(4)
    assert found.token_id.tolist() == best.indices.tolist()
    assert found.token.tolist() == [model.to_single_str_token(int(i)) for i in best.indices]
    assert found.probability.to_numpy() == pytest.approx(best.values.tolist(), rel=1e-6)
    with pytest.raises(FeatureLensError, match="Position 99 is out of range"):
        predictions(model, PROMPT, 99)
