"""Bad input in the app: one clear `st.error`, the rest of the page still works, the user's inputs stay."""

from __future__ import annotations

import time

import pytest

from feature_lens_app.examples import EXAMPLES

from .helpers import assert_healthy, charts, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]


def _html(at) -> str:
    return "".join(element.proto.body for element in at.get("html"))


@pytest.mark.parametrize("prompt", ["", "   \n "])
def test_empty_prompt(open_app, prompt: str) -> None:
    at = open_app(prompt=prompt)
    assert_healthy(at)
    (message,) = errors(at)  # one message, not one per chart
    assert "prompt is empty" in message
    assert at.session_state["prompt"] == prompt  # not silently replaced
    # Still usable: typing a prompt brings the charts back.
    at.sidebar.text_area(key="prompt").input(EXAMPLES[0].prompt).run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert any(key.startswith("bars_") for key in charts(at))


def test_out_of_range_feature(open_app) -> None:
    # The Feature box stops at the SAE's last feature; a link can still ask for more.
    at = open_app(feature="999999", kind="feature")
    assert_healthy(at)
    (message,) = errors(at)
    assert "999999" in message and "out of range" in message and "0 to 1023" in message
    assert at.session_state["feature"] == 999_999  # kept as asked, for the user to see and fix
    assert at.sidebar.number_input(key="feature").max == 999_999  # the box still draws it
    assert at.session_state["prompt"] == EXAMPLES[0].prompt  # nothing else moved
    at.sidebar.number_input(key="feature").set_value(EXAMPLES[0].feature).run()
    assert not errors(at), errors(at)
    assert at.sidebar.number_input(key="feature").max == 1023


def test_position_past_the_prompt(open_app) -> None:
    at = open_app(pos="500")
    assert_healthy(at)
    (message,) = errors(at)
    assert "Position 500 is out of range" in message
    assert at.sidebar.text_area(key="prompt").value == EXAMPLES[0].prompt


def test_sae_that_does_not_fit_the_model(open_app) -> None:
    wrong = "gpt2-small-res-jb/blocks.0.hook_resid_pre"
    at = open_app(saes=f"{wrong},{EXAMPLES[0].sae}", sae=EXAMPLES[0].sae, kind="feature")
    assert_healthy(at)
    (message,) = errors(at)
    assert "belongs to model 'gpt2-small'" in message
    assert wrong in at.session_state["saes"]  # kept, visible, for the user to remove
    assert any(key.startswith("strip_") for key in charts(at)), "the token panel should still work"


def test_malformed_query_params_keep_the_valid_ones(open_app) -> None:
    at = open_app(feature="abc", method="magic", pos="-1", prompt="Romeo, Romeo, wherefore art thou Romeo?")
    assert_healthy(at)
    (link_error,) = [m for m in errors(at) if m.startswith("Parts of this link")]
    assert "feature='abc'" in link_error and "method='magic'" in link_error and "pos='-1'" in link_error
    assert at.session_state["prompt"] == "Romeo, Romeo, wherefore art thou Romeo?"
    assert at.session_state["method"] == "attribution"
    assert at.query_params["feature"] == str(EXAMPLES[0].feature)  # the URL now holds what is shown


def test_markup_in_the_prompt_is_shown_as_text(open_app) -> None:
    prompt = "<script>alert('x')</script> <img src=x onerror=alert(1)> & \x07 **bold** $x$"
    at = open_app(prompt=prompt)
    assert_healthy(at)
    body = _html(at)
    assert "<script" not in body and "<img" not in body
    assert "&lt;script&gt;" in body or "&lt;" in body


def test_corrupt_prompt_of_another_length(open_app) -> None:
    at = open_app(baseline="corrupt", corrupt="Short.")
    assert_healthy(at)
    (message,) = errors(at)
    assert "same token length" in message
    assert at.sidebar.text_input(key="corrupt").value == "Short."


def test_hub_model_offline_fails_fast_and_offers_the_built_in_model(open_app) -> None:
    start = time.perf_counter()
    at = open_app(model="gpt2-small")
    assert time.perf_counter() - start < 60
    assert_healthy(at)
    (message,) = errors(at)
    assert "gpt2-small" in message and "built-in" in message
    assert at.session_state["model"] == "gpt2-small"
    (offer,) = [b for b in at.button if b.label == "Use the built-in model instead"]
    offer.click().run()
    assert at.session_state["model"] == "toy"
    assert_healthy(at)
    assert not errors(at), errors(at)


def test_hosted_mode_caps_requests(open_app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    at = open_app(prompt="x " * 400, saes=f"/etc,{EXAMPLES[0].sae}")
    assert_healthy(at)
    (link_error,) = [m for m in errors(at) if m.startswith("Parts of this link")]
    assert "no local folders" in link_error and "cut to the first 300" in link_error
    assert "/etc" not in at.session_state["saes"]
    assert len(at.session_state["prompt"]) == 300


def _active(sae: str, position: int, inactive: bool = False) -> int:
    """A feature of the built-in `sae` that is (or is not) active at `position` of the first example."""
    import feature_lens_core as flc

    acts = flc.activations(flc.load_model("toy"), flc.load_sae("toy", sae), EXAMPLES[0].prompt)
    here = set(acts[acts["position"] == position]["feature"])
    return next(f for f in range(1024) if (f not in here) == inactive)


def test_target_not_active_names_features_that_are(open_app) -> None:
    feature = _active(EXAMPLES[0].sae, EXAMPLES[0].position, inactive=True)
    at = open_app(feature=str(feature), kind="feature")
    assert_healthy(at)
    (message,) = errors(at)
    assert "not active" in message and "Active there" in message
    # The features that are active at that token are listed, to pick a new target from.
    assert len(at.dataframe[0].value) > 0


def test_nothing_upstream_of_the_first_layer_is_information_not_an_error(open_app) -> None:
    feature = _active("L0.attn_z", EXAMPLES[0].position)
    at = open_app(sae="L0.attn_z", feature=str(feature), kind="feature")
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert any("Nothing to rank upstream" in i.value for i in at.info)
    assert any(key.startswith("bars_downstream") for key in charts(at))
