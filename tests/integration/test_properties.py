"""A property of `rank` on the built-in model, over random prompts, targets, positions, methods and directions:
either a valid ranking or a `FeatureLensError` with a message, and never a hook left on the shared model."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import feature_lens_core as flc
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.options import DIRECTIONS, METHODS
from feature_lens_core.ranking import COLUMNS
from tests.checks import assert_no_hooks

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAMES = flc.list_saes("toy")
D_SAE = 1024
CANDIDATES = 8  # activation patching upstream patches this many nodes, so each example stays well under a second

# Each prompt is written in one alphabet: plain ASCII (which the byte-level tokenizer packs densely, so long
# prompts fit the context), printable text of every script, or any character but a lone surrogate (emoji,
# combining marks, control and format characters).
ALPHABETS = {
    "ascii": st.characters(min_codepoint=32, max_codepoint=126),
    "printable": st.characters(categories=["L", "M", "N", "P", "S", "Zs"]),
    "any": st.characters(exclude_categories=["Cs"]),
}


def _check(frame, model, prompt: str, target: flc.FeatureRef, direction: str) -> None:
    assert list(frame.columns) == COLUMNS
    scores = frame["score"].to_numpy()
    assert np.isfinite(scores).all() and np.isfinite(frame["activation"].to_numpy()).all()
    assert (np.diff(np.abs(scores)) <= 0).all(), "sorted by |score|, largest first"
    assert set(frame["kind"]) <= {"feature", "error"}
    assert ((frame["kind"] == "error") == (frame["feature"] == -1)).all()
    tokens = model.to_str_tokens(prompt)
    assert list(frame["token"]) == [tokens[p] for p in frame["position"]]
    on_side = frame["position"] <= target.position if direction == "upstream" else frame["position"] >= target.position
    assert on_side.all()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rank_gives_a_valid_ranking_or_a_clear_error(data: st.DataObject) -> None:
    model = flc.load_model("toy")
    # The length is drawn first so that it spreads over 1 to 200 (left to itself, hypothesis favours short text);
    # half the time it is at most 40, which fits the model's 128 tokens in any alphabet more often than not.
    size = data.draw(st.integers(1, 200) | st.integers(1, 40), label="prompt length")
    alphabet = ALPHABETS[data.draw(st.sampled_from(sorted(ALPHABETS)), label="alphabet")]
    prompt = data.draw(st.text(alphabet, min_size=size, max_size=size), label="prompt")
    name = data.draw(st.sampled_from(NAMES), label="target SAE")
    others = data.draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True), label="other SAEs")
    saes = {n: flc.load_sae("toy", n) for n in dict.fromkeys([*others, name])}
    try:
        fired = flc.activations(model, saes[name], prompt)
    except FeatureLensError:
        fired = None
    # Two times in three, a feature that fires (when one does); otherwise any index and position, valid or not.
    if fired is not None and len(fired) and data.draw(st.integers(0, 2), label="how the target is picked"):
        row = fired.iloc[data.draw(st.integers(0, len(fired) - 1), label="row")]
        target = flc.FeatureRef(name, int(row["feature"]), int(row["position"]))
    else:
        n_tokens = len(model.to_str_tokens(prompt)) if fired is not None else 130
        feature = data.draw(st.integers(-2, D_SAE + 2), label="feature")
        target = flc.FeatureRef(name, feature, data.draw(st.integers(-2, n_tokens + 2), label="position"))
    direction = data.draw(st.sampled_from(DIRECTIONS), label="direction")
    method = data.draw(st.sampled_from(sorted(METHODS)), label="method")
    candidates = CANDIDATES if method == "activation" else None
    try:
        frame = flc.rank(model, saes, prompt, target, direction=direction, method=method, candidates=candidates)
    except FeatureLensError as exc:
        assert str(exc).strip()
        # Tallied by --hypothesis-show-statistics: which refusals the examples met.
        event("refused: " + re.sub(r"'[^']*'|-?\d+", "…", str(exc))[:40])
    else:
        _check(frame, model, prompt, target, direction)
        event("ranked")
    assert_no_hooks(model)
