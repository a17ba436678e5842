"""The bad-input matrix of docs/reliability.md: every input at the three entry points (Python API, CLI, app).

Each `Case` is one row of the table. The API must raise `FeatureLensError` with the row's message; the CLI
exit with status 2 and that message on one stderr line, no traceback; the app show it once (`st.error`, or
`st.info` for a side with nothing to rank, or the link notice for a bad URL value), keep the user's inputs
as given and the sidebar working, and draw its charts again once the input is put right.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.ranking import COLUMNS
from tests.app.helpers import assert_healthy, charts, errors
from tests.checks import MARKUP

EX = EXAMPLES[0]
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BASE = {
    "model": "toy",
    "saes": DEFAULT_SAES,
    "prompt": EX.prompt,
    "sae": EX.sae,
    "feature": EX.feature,
    "pos": EX.position,
    "direction": "upstream",
    "method": "attribution",
    "baseline": "zero",
    "corrupt": "",
}


@dataclass(frozen=True)
class Fires:
    """A feature of `sae` resolved at run time: the strongest there (`active`) or the first silent one."""

    sae: str
    active: bool = True


@dataclass(frozen=True)
class Case:
    """One row of the matrix: the inputs that differ from BASE and what each entry point must say.

    Names in braces in `saes` are SAE folders from the `sae_folders` fixture. `cli` replaces options of
    the derived command line; `url` replaces the app's query parameters; `fix` holds the widget values
    that put the input right ("model": click the offered "Use the built-in model instead").
    """

    id: str
    change: dict = field(default_factory=dict)
    expect: str | None = None  # None: a valid result is expected
    cli: dict = field(default_factory=dict)
    expect_cli: str | None = None
    url: dict | None = None
    expect_app: str | None = None
    app: str = "error"  # error | info | link | ok
    fix: dict = field(default_factory=dict)


def with_sae(name: str) -> tuple[str, ...]:
    return (*DEFAULT_SAES, name)


CASES = [
    Case("empty-prompt", {"prompt": ""}, "The prompt is empty", fix={"prompt": EX.prompt}),
    Case("whitespace-prompt", {"prompt": " \n\t "}, "The prompt is empty", fix={"prompt": EX.prompt}),
    Case(
        "prompt-over-context",
        {"prompt": (EX.prompt + " ") * 20},
        "but this model reads at most 128 (BOS included). Shorten it.",
        fix={"prompt": EX.prompt},
    ),
    # Position 1 is the token "<", so the target's own token is markup too.
    Case("markup-and-control-characters", {"prompt": MARKUP, "pos": 1, "feature": Fires(EX.sae)}, app="ok"),
    Case(
        "feature-negative",
        {"feature": -1},
        "Feature -1 is out of range: SAE 'L1.mlp_out' has features 0 to 1023",
        url={"feature": "-1"},
        expect_app="feature='-1' is not a valid feature index",
        app="link",
    ),
    Case(
        "feature-past-d_sae",
        {"feature": 1024},
        "Feature 1024 is out of range: SAE 'L1.mlp_out' has features 0 to 1023",
        fix={"feature": EX.feature},
    ),
    Case(
        "position-past-prompt",
        {"pos": 500},
        "Position 500 is out of range: the prompt has 11 tokens (positions 0 to 10, 0 is BOS)",
        fix={"pos": EX.position},
    ),
    Case(
        "inactive-target",
        {"feature": Fires(EX.sae, active=False)},
        "is not active at position 8 (token ' thou'). Active there:",
        fix={"feature": EX.feature},
    ),
    Case(
        "nothing-upstream",
        {"sae": "L0.attn_z", "feature": Fires("L0.attn_z")},
        "Nothing to rank upstream of 'L0.attn_z'",
        app="info",
        fix={"direction": "downstream"},
    ),
    Case(
        "nothing-downstream",
        {"sae": "L2.mlp_out", "feature": Fires("L2.mlp_out"), "direction": "downstream"},
        "Nothing to rank downstream of 'L2.mlp_out'",
        app="info",
        fix={"direction": "upstream"},
    ),
    Case(
        "sae-d_in-mismatch",
        {"saes": with_sae("{narrow}")},
        "reads vectors of size 64, but the model's 'blocks.1.hook_mlp_out' has size 128",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "sae-of-another-model",
        {"saes": with_sae("gpt2-small-res-jb/blocks.0.hook_resid_pre")},
        "belongs to model 'gpt2-small', not 'toy'",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "corrupt-prompt-length",
        {"baseline": "corrupt", "corrupt": "Short."},
        "They must have the same token length",
        fix={"baseline": "zero"},
    ),
    Case("unknown-model", {"model": "gpt3-huge"}, "Unknown model 'gpt3-huge'", fix={"model": "toy"}),
    Case(
        "unknown-release",
        {"saes": with_sae("no-such-release/blocks.0.hook_resid_pre")},
        "Unknown SAE 'no-such-release/blocks.0.hook_resid_pre' for model 'toy'",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "unknown-sae-id",
        {"saes": with_sae("L7.resid_pre")},
        "Unknown SAE 'L7.resid_pre' for model 'toy'. Did you mean",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "nan-weights",
        {"saes": with_sae("{nan_encoder}")},
        "contains NaN or infinite values",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "inf-decoder",
        {"saes": with_sae("{inf_decoder}")},
        "The ranking contains NaN or infinite values",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "truncated-weights",
        {"saes": with_sae("{truncated}")},
        "sae_weights.safetensors could not be read",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "pickle-only-folder",
        {"saes": with_sae("{pickle_only}")},
        "never unpickles .pt files",
        fix={"saes": DEFAULT_SAES},
    ),
    Case(
        "malformed-feature",
        {"feature": "abc"},
        "Feature 'abc' is not a whole number",
        cli={"--feature": f"{EX.sae}:abc@{EX.position}"},
        expect_cli="expected NAME:FEATURE@POSITION",
        url={"feature": "abc", "pos": " 8x", "saes": ",,L1.mlp_out,,L0.mlp_out,", "direction": ""},
        expect_app="feature='abc' is not a valid feature index",
        app="link",
    ),
    Case(
        "unknown-method",
        {"method": "magic"},
        "Unknown method 'magic'",
        expect_cli="invalid choice: 'magic'",
        expect_app="method='magic' is unknown; use one of: activation, attribution, direct",
        app="link",
    ),
]
IDS = [case.id for case in CASES]


def _view(case: Case, sae_folders: dict[str, str]) -> dict:
    """The case's inputs, with SAE folder names and `Fires` features resolved."""
    view = {**BASE, **case.change}
    view["saes"] = tuple(name.format(**sae_folders) for name in view["saes"])
    if isinstance(view["feature"], Fires):
        fires, sae = view["feature"], flc.load_sae("toy", view["feature"].sae)
        acts = flc.activations(flc.load_model("toy"), sae, view["prompt"])
        here = acts[acts["position"] == view["pos"]]
        silent = sorted(set(range(sae.cfg.d_sae)) - set(here["feature"]))
        view["feature"] = int(here["feature"].iloc[0]) if fires.active else silent[0]
    return view


def _unescaped(markdown: str) -> str:
    """What a user reads: the app escapes markdown punctuation in messages with backslashes."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _check_tokens(frame, prompt: str) -> None:
    tokens = flc.load_model("toy").to_str_tokens(prompt)
    assert list(frame["token"]) == [tokens[p] for p in frame["position"]]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_api(case: Case, sae_folders: dict[str, str]) -> None:
    view = _view(case, sae_folders)

    def run():
        model = flc.load_model(view["model"])
        saes = {name: flc.load_sae(view["model"], name) for name in dict.fromkeys([*view["saes"], view["sae"]])}
        target = flc.FeatureRef(view["sae"], view["feature"], view["pos"])
        corrupt = view["corrupt"] or None
        return flc.rank(
            model,
            saes,
            view["prompt"],
            target,
            direction=view["direction"],
            method=view["method"],
            baseline=view["baseline"],
            corrupt_prompt=corrupt,
        )

    if case.expect is None:
        frame = run()
        assert list(frame.columns) == COLUMNS and len(frame) > 0
        _check_tokens(frame, view["prompt"])
        return
    with pytest.raises(FeatureLensError) as raised:
        run()
    assert case.expect in str(raised.value)


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli(case: Case, sae_folders: dict[str, str], run_cli) -> None:
    view = _view(case, sae_folders)
    options = {
        "--model": view["model"],
        "--prompt": view["prompt"],
        "--feature": f"{view['sae']}:{view['feature']}@{view['pos']}",
        "--saes": ",".join(view["saes"]),
        "--direction": view["direction"],
        "--method": view["method"],
        "--baseline": view["baseline"],
        "--format": "json",
        **({"--corrupt-prompt": view["corrupt"]} if view["corrupt"] else {}),
        **case.cli,
    }
    # `--option=value`, so that a value starting with '-' is not read as an option.
    status, out, err = run_cli("rank", *(f"{option}={value}" for option, value in options.items()))
    if case.expect is None:
        assert status == 0, err
        frame = pd.DataFrame(json.loads(out))
        assert list(frame.columns) == COLUMNS and len(frame) > 0
        _check_tokens(frame, view["prompt"])
        return
    assert status == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert (case.expect_cli or case.expect) in err


def _params(case: Case, view: dict) -> dict[str, str]:
    """The case's link: its target is a feature (the landing view explains a logit instead)."""
    if case.url is not None:
        return {"kind": "feature", "prompt": view["prompt"], **case.url}
    params = {key: str(value) for key, value in view.items()}
    params["saes"] = ",".join(view["saes"])
    return {"kind": "feature", **params}


def _repair(at, fix: dict) -> None:
    """Put the input right through the sidebar, as a user would."""
    for key, value in fix.items():
        if key == "model":
            next(b for b in at.button if b.label == "Use the built-in model instead").click()
        elif key == "prompt":
            at.sidebar.text_area(key="prompt").input(value)
        elif key == "saes":
            at.sidebar.multiselect(key="saes").set_value(list(value))
        elif key in ("feature", "pos"):
            at.sidebar.number_input(key=key).set_value(value)
        else:
            at.sidebar.radio(key=key).set_value(value)
    at.run()


def _has_rankings(at) -> bool:
    return any(key.startswith("bars_") for key in charts(at))


@pytest.mark.app
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app(case: Case, sae_folders: dict[str, str], open_app) -> None:
    view = _view(case, sae_folders)
    at = open_app(**_params(case, view))
    assert_healthy(at)
    shown = [_unescaped(m) for m in errors(at)]
    if case.app == "error":
        assert len(shown) == 1 and case.expect in shown[0], shown
    elif case.app == "info":
        assert not shown and any(case.expect in _unescaped(i.value) for i in at.info), [i.value for i in at.info]
    elif case.app == "link":
        assert len(shown) == 1 and shown[0].startswith("Parts of this link"), shown
        assert (case.expect_app or case.expect) in shown[0]
        assert _has_rankings(at), "defaults stand in for the bad values, so the page works"
    else:
        assert not shown and _has_rankings(at)
        _check_escaped(at)
    # The user's inputs are kept as given (a bad URL value is replaced by its default, the rest kept).
    kept = {"prompt": view["prompt"]} if case.app == "link" else {k: view[k] for k in {*case.change, "prompt"}}
    for key, value in kept.items():
        given = at.session_state[key]
        assert (tuple(given) if key == "saes" else given) == value, key
    assert at.sidebar.text_area(key="prompt").value == view["prompt"]
    if case.fix:
        _repair(at, case.fix)
        assert_healthy(at)
        assert not errors(at), errors(at)
        assert _has_rankings(at)


def _check_escaped(at) -> None:
    """The prompt's text is shown as text: escaped in HTML, and no markdown punctuation of it left active."""
    html = "".join(element.proto.body for element in at.get("html"))
    # Byte-level tokens split "<script>" into "<", "s", "cri", "pt", ">": each must arrive escaped.
    assert "<script" not in html and "<b>" not in html and html.count("&lt;") >= 4
    assert "\\u0007" in html and "\\u001b" in html  # control characters made visible, not obeyed
    for element in at.markdown:
        assert not re.search(r"(?<!\\)[<$\[]", element.value), element.value


@pytest.mark.integration
def test_cli_table_writes_control_characters_as_escapes(run_cli) -> None:
    status, out, _ = run_cli("activations", "--model=toy", f"--sae={EX.sae}", f"--prompt={MARKUP}", "--format=table")
    assert status == 0
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out and "<" in out


def test_every_case_is_a_row_of_the_documented_matrix() -> None:
    table = DOC.read_text()
    missing = [case.id for case in CASES if f"`{case.id}`" not in table]
    assert not missing, f"docs/reliability.md lacks rows for {missing}"
