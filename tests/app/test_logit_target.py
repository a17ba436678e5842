"""The Explore page explains the model's prediction: a logit (difference) target ranks exactly what the core ranks,
the model's top predictions are one click away, and a token that is not one token is said once, state kept."""

from __future__ import annotations

import functools

import pandas as pd
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_app.logit_target import PREDICTIONS
from feature_lens_core import catalog

from .helpers import assert_healthy, charts, errors, open_expander

pytestmark = [pytest.mark.app, pytest.mark.slow]
POSITION = 7  # ' art' in "wherefore art thou": the model predicts ' thou' at 91%


@functools.cache
def _model_and_saes() -> tuple:
    model = flc.load_model(catalog.BUILTIN_MODEL)
    return model, {name: flc.load_sae(catalog.BUILTIN_MODEL, name) for name in DEFAULT_SAES}


def _core_ranking(target: flc.Target, method: str) -> pd.DataFrame:
    model, saes = _model_and_saes()
    return flc.rank(model, saes, EXAMPLES[0].prompt, target, direction="upstream", method=method)  # type: ignore[arg-type]


def _page_table(at) -> pd.DataFrame:
    table = open_expander(at, "explore_table").dataframe[-1].value
    assert set(table["direction"]) == {"upstream"}  # nothing is downstream of a logit
    return table.reset_index(drop=True)


def _same_rows(page: pd.DataFrame, core: pd.DataFrame) -> None:
    core = core.head(len(page)).reset_index(drop=True)
    for column in ("sae", "kind", "feature", "position"):
        assert page[column].tolist() == core[column].tolist(), column
    assert page["score"].to_numpy() == pytest.approx(core["score"].to_numpy(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("method", ["attribution", "activation"])
def test_a_logit_target_ranks_what_the_core_ranks(open_app, method: str) -> None:
    at = open_app(kind="logit", token=" thou", pos=str(POSITION), method=method)
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert at.title[0].value == "Why the model predicts a token"
    bars = [key for key in charts(at) if key.startswith("bars_")]
    assert [key.split("_")[1] for key in bars] == ["upstream"]
    _same_rows(_page_table(at), _core_ranking(flc.LogitRef(" thou", POSITION), method))
    (twin,) = open_expander(at, "twin_upstream").table  # the chart's twin, for a keyboard or a screen reader
    scores = _page_table(at)["score"].head(len(twin.value))
    assert twin.value["score"].tolist() == [f"{score:+.4f}" for score in scores] and len(twin.value) == 12
    assert at.query_params["kind"] == "logit" and at.query_params["token"] == " thou"


def test_a_logit_difference_ranks_what_the_core_ranks(open_app) -> None:
    at = open_app(kind="diff", token=" thou", other=" I", pos=str(POSITION), method="direct")
    assert_healthy(at)
    assert not errors(at), errors(at)
    _same_rows(_page_table(at), _core_ranking(flc.LogitDiffRef(" thou", " I", POSITION), "direct"))


def test_switching_to_a_logit_offers_the_models_predictions(open_app) -> None:
    at = open_app(kind="feature", token="", pos=str(POSITION))  # the feature view, no token chosen yet
    at.radio(key="kind").set_value("logit").run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert at.session_state["token"] == " thou"  # the most probable next token is taken at once
    assert at.query_params["kind"] == "logit"
    choices = [b for b in at.button if b.key and b.key.startswith("predicted_token_")]
    assert len(choices) == PREDICTIONS
    assert choices[0].label.startswith("' thou' 9")  # token and probability
    choices[1].click().run()
    assert_healthy(at)
    picked = at.session_state["token"]
    assert picked != " thou" and at.query_params["token"] == picked
    _same_rows(_page_table(at), _core_ranking(flc.LogitRef(picked, POSITION), "attribution"))


@pytest.mark.parametrize(
    ("token", "pieces"),
    [("thou art", "'thou' + ' art'"), (" Romeo,", "' Romeo' + ','"), ("", "must be a non-empty string")],
)
def test_a_token_that_is_several_tokens_is_said_once_and_kept(open_app, token: str, pieces: str) -> None:
    at = open_app(kind="logit", token=" thou", pos=str(POSITION))
    at.text_input(key="_token_box").input(token).run()
    assert_healthy(at)
    (message,) = errors(at)
    assert pieces in message and (not token or "tokens for this model's tokenizer" in message)
    assert at.session_state["token"] == token and at.query_params["token"] == token  # kept, for the user to fix
    assert at.session_state["prompt"] == EXAMPLES[0].prompt


def test_a_new_line_token_is_shown_and_typed_as_a_mark(open_app) -> None:
    at = open_app(kind="logit", token="\n", pos="10")  # after '?' the model predicts a new line at 91%
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert at.text_input(key="_token_box").value == "⏎"
    at.text_input(key="_token_box").input("⏎").run()
    assert at.session_state["token"] == "\n" and not errors(at)
    _same_rows(_page_table(at), _core_ranking(flc.LogitRef("\n", 10), "attribution"))
