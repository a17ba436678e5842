"""The command line: its three commands, its formats, and one stderr line with status 2 for bad input.

The unit tests run `cli.main` in-process on the tiny model (the loaders are replaced); the integration
tests run `python -m feature_lens_core` as a subprocess on the built-in model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from feature_lens_core.ranking import COLUMNS, activations
from tests.helpers import PROMPT


def target(model, saes, name="L2.resid_pre", position=9, prompt=PROMPT):
    """A NAME:FEATURE@POSITION argument naming the strongest feature there."""
    acts = activations(model, saes[name], prompt)
    return f"{name}:{int(acts[acts.position == position].iloc[0].feature)}@{position}"


@pytest.mark.unit
def test_saes_lists_every_sae(tiny_cli, capsys):
    assert tiny_cli(["saes", "--model", "tiny", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:2] == ["L0.resid_pre", "L0.attn_z"]
    transcoder = next(r for r in rows if r["name"] == "L1.transcoder")
    assert transcoder == {
        "name": "L1.transcoder",
        "hook": "blocks.1.ln2.hook_normalized",
        "hook_out": "blocks.1.hook_mlp_out",
        "layer": 1,
        "kind": "transcoder",
        "d_sae": 48,
    }


@pytest.mark.unit
def test_activations_with_top_k(tiny_cli, capsys):
    args = ["activations", "--model", "tiny", "--sae", "L1.attn_z", "--prompt", PROMPT, "--top-k", "2"]
    assert tiny_cli([*args, "--format", "json"]) == 0
    rows = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert list(rows.columns) == ["position", "token", "feature", "activation"]
    assert rows.groupby("position").size().max() == 2


@pytest.mark.unit
@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_rank_in_each_format(tiny_cli, capsys, model, saes, fmt):
    args = ["rank", "--model", "tiny", "--prompt", PROMPT, "--feature", target(model, saes)]
    args += [
        "--saes",
        "L1.attn_z,L1.mlp_out",
        "--direction",
        "upstream",
        "--method",
        "direct",
        "--top-k",
        "5",
    ]
    assert tiny_cli([*args, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        rows = json.loads(out)
        assert len(rows) == 5 and list(rows[0]) == COLUMNS
    elif fmt == "csv":
        assert out.splitlines()[0] == ",".join(COLUMNS) and len(out.splitlines()) == 6
    else:
        assert out.split()[: len(COLUMNS)] == COLUMNS


@pytest.mark.unit
def test_rank_with_candidates_notes_it_on_stderr(tiny_cli, capsys, model, saes):
    args = [
        "rank",
        "--model",
        "tiny",
        "--prompt",
        PROMPT,
        "--feature",
        target(model, saes),
        "--saes",
        "L1.attn_z",
    ]
    args += ["--direction", "upstream", "--method", "activation", "--candidates", "3", "--format", "json"]
    assert tiny_cli(args) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 3
    assert captured.err.startswith("note: Activation patching was run on the 3 of")


BAD = [
    (["rank", "--model", "nope"], "required"),
    (["saes", "--model", "nope"], "No SAEs are known for model 'nope'"),
    (["activations", "--model", "nope", "--sae", "L0.attn_z", "--prompt", "hi"], "Unknown model 'nope'"),
    (["activations", "--model", "tiny", "--sae", "L9.zzz", "--prompt", "hi"], "Unknown SAE 'L9.zzz'"),
    (["activations", "--model", "tiny", "--sae", "L0.attn_z", "--prompt", "  "], "empty"),
    (["activations", "--model", "tiny", "--sae", "L0.attn_z", "--prompt", "x" * 200], "at most 40"),
    (
        ["activations", "--model", "tiny", "--sae", "L0.attn_z", "--prompt", "hi", "--top-k", "0"],
        "at least 1",
    ),
    (["frobnicate"], "invalid choice"),
]
RANK = ["rank", "--model", "tiny", "--prompt", PROMPT, "--saes", "L1.attn_z"]
BAD_RANK = [
    (
        ["--feature", "L2.resid_pre:5", "--direction", "upstream", "--method", "direct"],
        "NAME:FEATURE@POSITION",
    ),
    (["--feature", "L2.resid_pre:4800@3", "--direction", "upstream", "--method", "direct"], "out of range"),
    (["--feature", "L2.resid_pre:0@300", "--direction", "upstream", "--method", "direct"], "Position 300"),
    (["--feature", "L2.resid_pre:0@3", "--direction", "up", "--method", "direct"], "invalid choice: 'up'"),
    (["--feature", "L2.resid_pre:0@3", "--direction", "upstream", "--method", "magic"], "invalid choice"),
    (["--feature", "L0.resid_pre:0@3", "--direction", "upstream", "--method", "direct"], "Nothing to rank"),
    (
        [
            "--feature",
            "L2.resid_pre:0@3",
            "--direction",
            "upstream",
            "--method",
            "direct",
            "--baseline",
            "corrupt",
        ],
        "needs a corrupt prompt",
    ),
    (
        [
            "--feature",
            "L2.resid_pre:0@3",
            "--direction",
            "upstream",
            "--method",
            "direct",
            "--baseline",
            "corrupt",
        ]
        + ["--corrupt-prompt", "short"],
        "same token length",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("args", "message"), BAD + [(RANK + extra, message) for extra, message in BAD_RANK])
def test_bad_input_is_one_line_and_status_2(tiny_cli, capsys, args, message):
    assert tiny_cli(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert message in captured.err


@pytest.mark.unit
def test_an_inactive_target_is_bad_input(tiny_cli, capsys, model, saes):
    acts = activations(model, saes["L2.resid_pre"], PROMPT)
    silent = min(set(range(48)) - set(acts[acts.position == 4].feature))
    assert (
        tiny_cli([*RANK, "--feature", f"L2.resid_pre:{silent}@4", "--direction", "upstream", "--method", "direct"]) == 2
    )
    assert "not active at position 4" in capsys.readouterr().err


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "feature_lens_core", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_the_module_runs_on_the_built_in_model(toy_model, toy_saes):
    saes = run_cli("saes", "--model", "toy", "--format", "json")
    assert saes.returncode == 0, saes.stderr
    assert len(json.loads(saes.stdout)) == len(toy_saes)
    prompt = "To be, or not to be, that is the question"
    feature = target(toy_model, toy_saes, "L2.resid_pre", 5, prompt)
    ranked = run_cli(
        "rank", "--model", "toy", "--prompt", prompt, "--feature", feature, "--saes", "L1.mlp_out,L1.attn_z",
        "--direction", "upstream", "--method", "attribution", "--top-k", "3", "--format", "json",
    )  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr
    assert len(json.loads(ranked.stdout)) == 3
    bad = run_cli("rank", "--model", "toy", "--prompt", prompt, "--feature", "L2.resid_pre:99999@5", "--saes",
                  "L1.mlp_out", "--direction", "upstream", "--method", "direct")  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "out of range" in bad.stderr and "Traceback" not in bad.stderr
