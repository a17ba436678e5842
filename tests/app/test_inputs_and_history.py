"""The explorer as a person uses it, through AppTest: Back restores a view, the trail returns to a target,
and inputs that would fail are caught or completed with a message instead."""

from __future__ import annotations

import pytest

from feature_lens_app.examples import EXAMPLES
from feature_lens_app.state import KEYS

from .helpers import assert_healthy, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]


def _target(at) -> tuple[str, int, int]:
    return at.session_state["sae"], at.session_state["feature"], at.session_state["pos"]


def _walk_once(at) -> None:
    (button,) = [b for b in at.button if b.key == "nb_upstream_0"]
    button.click().run()
    assert_healthy(at)


def test_the_url_wins_when_it_changes_by_itself(open_app) -> None:
    """Back and Forward rerun with that history entry's query string: the view follows it, the URL is not
    overwritten by the session's newer view."""
    at = open_app("feature")
    first = {key: at.query_params[key] for key in KEYS}
    _walk_once(at)
    assert _target(at) != (first["sae"], int(first["feature"]), int(first["pos"]))
    for key, value in first.items():  # what the browser sends after Back
        at.query_params[key] = value
    at.run()
    assert_healthy(at)
    assert _target(at) == (first["sae"], int(first["feature"]), int(first["pos"]))
    assert at.query_params["feature"] == first["feature"]
    assert at.title[0].value == f"Feature #{first['feature']} of {first['sae']}"


def test_the_trail_returns_to_an_earlier_target(open_app) -> None:
    at = open_app("feature")
    start = _target(at)
    _walk_once(at)
    trail = [b for b in at.sidebar.button if b.key and b.key.startswith("trail_")]
    assert trail and trail[0].label.startswith(f"{start[0]} #{start[1]} @{start[2]}")
    trail[0].click().run()
    assert _target(at) == start
    assert_healthy(at)


def test_a_paste_over_the_limit_is_cut_with_a_message(open_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    at = open_app(kind="feature")
    at.sidebar.text_area(key="prompt").input("thou art " * 60).run()
    assert_healthy(at)
    assert len(at.session_state["prompt"]) == 300
    (notice,) = [w.value for w in at.warning]
    assert "540 characters" in notice and "first 300" in notice


def test_a_prompt_over_the_models_context_says_its_limit(open_app) -> None:
    at = open_app(kind="feature")
    at.sidebar.text_area(key="prompt").input("thou art " * 100).run()
    assert_healthy(at)
    (message,) = errors(at)
    assert "tokens long" in message and "at most 128" in message
    assert at.session_state["prompt"] == "thou art " * 100  # kept, for the user to shorten


def test_the_corrupt_baseline_proposes_a_corrupt_prompt(open_app) -> None:
    at = open_app(kind="feature")
    at.sidebar.radio(key="baseline").set_value("corrupt").run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    corrupt = at.session_state["corrupt"]
    assert corrupt and corrupt != EXAMPLES[0].prompt
    assert at.query_params["corrupt"] == corrupt


def test_numeric_inputs_are_bounded_by_the_sae_and_the_prompt(open_app) -> None:
    at = open_app(kind="feature")
    assert at.sidebar.number_input(key="feature").max == 1023
    assert at.sidebar.number_input(key="pos").max == 10  # 11 tokens, the start-of-text token included


def test_use_the_built_in_model_keeps_the_prompt(open_app) -> None:
    prompt = "To be, or not to be, that is the question."
    at = open_app(model="gpt2-small", prompt=prompt)
    (offer,) = [b for b in at.button if b.label == "Use the built-in model instead"]
    offer.click().run()
    assert at.session_state["model"] == "toy" and at.session_state["prompt"] == prompt
    assert_healthy(at)
    assert not errors(at), errors(at)


def test_each_error_is_said_once(open_app) -> None:
    at = open_app(feature="999999", kind="feature")
    assert_healthy(at)
    (message,) = errors(at)
    assert "999999" in message


def _target_keys(at) -> set[str]:
    """The keys of what shows the target: the token strip and the features active at its token."""
    drawn = {chart.key for chart in at.get("vega_lite_chart")} | {frame.key for frame in at.dataframe}
    return {key for key in drawn if key and key.startswith(("strip_", "active_"))}


def test_a_method_change_keeps_the_token_strip_and_a_new_target_resets_it(open_app) -> None:
    """The strip and the active features keep their keys (so the browser keeps them, and a clicked token stays)
    when only the method changes, and get new ones (a fresh selection) for a new target."""
    at = open_app(kind="feature")
    before = _target_keys(at)
    assert len(before) == 2
    at.sidebar.radio(key="method").set_value("direct").run()
    assert_healthy(at)
    assert at.session_state["method"] == "direct" and _target_keys(at) == before
    at.sidebar.number_input(key="feature").set_value(924).run()  # also active at the example's ' thou'
    assert not errors(at), errors(at)
    after = _target_keys(at)
    assert len(after) == 2 and not after & before
