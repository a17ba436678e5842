"""Query params <-> view state: round trips, malformed links, hosted caps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from feature_lens_app import direction_links, hosting
from feature_lens_app.examples import EXAMPLES
from feature_lens_app.state import DEFAULT, ViewState, explored, parse, to_params
from feature_lens_core import FeatureRef, LogitDiffRef, LogitRef, catalog

pytestmark = pytest.mark.app


def test_no_params_is_the_worked_example() -> None:
    view = parse({}, hosting.LOCAL)
    assert view == DEFAULT
    assert (view.prompt, view.sae, view.feature, view.pos) == (
        EXAMPLES[0].prompt,
        EXAMPLES[0].sae,
        EXAMPLES[0].feature,
        EXAMPLES[0].position,
    )
    assert view.sae in view.saes
    assert not view.problems


def test_hosted_first_visit_is_the_worked_example_too() -> None:
    view = parse({}, hosting.HOSTED)
    assert view == DEFAULT and not view.problems


def test_round_trip_keeps_every_field() -> None:
    view = ViewState(
        model="toy",
        saes=("L0.mlp_out", "L1.attn_z"),
        prompt="a, b & c? <x> é 🙂",
        sae="L1.attn_z",
        feature=7,
        pos=3,
        method="activation",
        baseline="corrupt",
        direction="downstream",
        corrupt="a, b & d? <y> é 🙂",
        recipes=direction_links.encode([direction_links.Recipe("direction:d#00ff00ff", "blocks.1.hook_resid_pre")]),
    )
    assert parse(to_params(view), hosting.LOCAL) == view


def test_malformed_values_fall_back_and_keep_the_rest() -> None:
    view = parse(
        {"feature": "abc", "pos": "-2", "method": "magic", "prompt": "Hello there", "direction": "Upstream"},
        hosting.LOCAL,
    )
    assert view.prompt == "Hello there"
    assert view.direction == "upstream"  # case-insensitive, still valid
    assert (view.feature, view.pos, view.method) == (DEFAULT.feature, DEFAULT.pos, DEFAULT.method)
    assert len(view.problems) == 3
    text = " ".join(view.problems)
    assert "feature='abc'" in text and "pos='-2'" in text and "method='magic'" in text
    assert "activation, attribution, direct" in text


def test_repeated_and_list_values_take_the_last() -> None:
    view = parse({"feature": ["3", "9"], "saes": ["L0.mlp_out,L1.mlp_out", "L2.attn_z"]}, hosting.LOCAL)
    assert view.feature == 9
    assert view.saes[:3] == ("L0.mlp_out", "L1.mlp_out", "L2.attn_z")


def test_target_sae_always_takes_part() -> None:
    view = parse({"saes": "L0.mlp_out", "sae": "L2.resid_post"}, hosting.LOCAL)
    assert view.saes == ("L0.mlp_out", "L2.resid_post")


def test_other_model_gets_its_own_defaults() -> None:
    view = parse({"model": "gpt2-small"}, hosting.LOCAL, list_saes=lambda _: ["rel-res/a", "rel-res/b", "rel-res/c"])
    assert view.model == "gpt2-small"
    assert view.saes == ("rel-res/a", "rel-res/b")
    assert (view.sae, view.feature, view.pos) == ("rel-res/b", 0, 0)


def test_hosted_caps_prompt_saes_paths_and_models() -> None:
    limits = hosting.HOSTED
    many = ",".join(sorted(catalog.hub_saes())[:9])  # known names, so only the count is over a cap
    view = parse(
        {"prompt": "x" * 1000, "saes": many + ",/etc,../secrets", "sae": "./here", "model": "gemma-2-9b"}, limits
    )
    assert len(view.prompt) == limits.max_prompt_chars
    assert len(view.saes) <= limits.max_saes
    assert not any(s.startswith(("/", ".")) for s in (*view.saes, view.sae))
    assert view.model == DEFAULT.model
    text = " ".join(view.problems)
    assert "cut to the first 300" in text and "no local folders" in text and "at most 6" in text
    assert "not available on this hosted app" in text


def test_local_mode_keeps_local_folders() -> None:
    view = parse({"saes": "/data/my_sae", "sae": "/data/my_sae"}, hosting.LOCAL)
    assert view.saes == ("/data/my_sae",) and view.sae == "/data/my_sae"
    assert not view.problems


def test_hosted_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    assert hosting.limits() is hosting.HOSTED
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "0")
    assert hosting.limits() is hosting.LOCAL


def test_every_choice_of_the_core_has_words_in_the_sidebar() -> None:
    import feature_lens_core as flc
    from feature_lens_app import state

    assert tuple(state.METHODS) == flc.METHODS
    assert tuple(state.BASELINES) == flc.BASELINES
    assert set(state.DIRECTIONS) == set(flc.GRAPH_DIRECTIONS)


def test_a_logit_target_round_trips_with_its_tokens_spaces_kept() -> None:
    view = replace(DEFAULT, kind="diff", token=" thou", other="\n", pos=7)
    assert parse(to_params(view), hosting.LOCAL) == view
    assert explored(view) == LogitDiffRef(" thou", "\n", 7)
    assert explored(replace(view, kind="logit")) == LogitRef(" thou", 7)
    assert explored(DEFAULT) == LogitRef(DEFAULT.token, DEFAULT.pos)  # the landing view: the top next token
    assert explored(replace(DEFAULT, kind="feature")) == FeatureRef(DEFAULT.sae, DEFAULT.feature, DEFAULT.pos)


def test_an_unknown_target_kind_falls_back_to_the_landing_kind() -> None:
    view = parse({"kind": "neuron", "token": " thou"}, hosting.LOCAL)
    assert view.kind == DEFAULT.kind == "logit" and view.token == " thou"
    (problem,) = view.problems
    assert "kind='neuron'" in problem and "feature, logit, diff" in problem
