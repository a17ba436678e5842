"""Inputs beyond the documented matrix (docs/reliability.md, "Beyond the matrix"): each a FeatureLensError
at the API, exit 2 with one line at the CLI; outputs written whole or not at all, and a batch that is
interrupted keeps its finished prompts and resumes from them."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import batch, feature_data
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.files import write_atomically

pytestmark = pytest.mark.integration
EX = EXAMPLES[0]
TARGET = flc.FeatureRef(EX.sae, EX.feature, EX.position)
SPEC = flc.FeatureSpec(EX.sae)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy():
    model = flc.load_model("toy")
    return model, {n: flc.load_sae("toy", n) for n in ("L0.resid_pre", "L0.attn_z", EX.sae)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "To be \ud800 or not"}, "lone surrogate"),
        ({"prompt": 42}, "must be text"),
        ({"saes": {"L0.resid_pre": None}}, "is a NoneType, not an SAE"),
        ({"saes": {"L0.resid_pre": "L0.resid_pre"}}, "is a str, not an SAE"),
        ({"target": flc.FeatureRef(EX.sae, "924", EX.position)}, "is not a whole number"),  # type: ignore[arg-type]
        ({"target": flc.FeatureRef(EX.sae, 1.5, EX.position)}, "is not a whole number"),  # type: ignore[arg-type]
        ({"target": "L0.attn_z:3@2"}, "must be a FeatureRef"),
    ],
)
def test_api_inputs_beyond_the_matrix(toy, change, message):
    model, saes = toy
    args = {"saes": saes, "prompt": EX.prompt, "target": TARGET} | change
    with pytest.raises(FeatureLensError, match=message):
        flc.rank(model, args["saes"], args["prompt"], args["target"], direction="upstream", method="direct")


def bad(value: object) -> Any:
    """`value`, typed so that a test can pass what the API's annotations forbid."""
    return value


MORE_API_CASES = {
    "feature_card of feature 1.5": (
        lambda m, s: feature_data.feature_card(m, s[EX.sae], bad(1.5)),
        "Feature 1.5 is not a whole number",
    ),
    "feature_card of feature '3'": (
        lambda m, s: feature_data.feature_card(m, s[EX.sae], bad("3")),
        "Feature '3' is not a whole number",
    ),
    "feature_card with k 0": (lambda m, s: feature_data.feature_card(m, s[EX.sae], 3, k=0), "k must be a whole"),
    "feature_card with k past the vocabulary": (
        lambda m, s: feature_data.feature_card(m, s[EX.sae], 3, k=10**6),
        "k must be at most the vocabulary size, 4096",
    ),
    "feature_card of None": (lambda m, s: feature_data.feature_card(m, bad(None), 3), "is a NoneType, not an SAE"),
    "feature_label past d_sae": (
        lambda m, s: feature_data.feature_label(s[EX.sae], 5000),
        "Feature 5000 is out of range: this SAE has features 0 to 1023",
    ),
    "activations of a string": (lambda m, s: flc.activations(m, bad("L0.attn_z"), EX.prompt), "is a str, not an SAE"),
    "rank with no model": (
        lambda m, s: flc.rank(bad(None), s, EX.prompt, TARGET, direction="upstream", method="direct"),
        "The model must be a HookedTransformer",
    ),
    "logit token with a lone surrogate": (
        lambda m, s: flc.rank(m, s, EX.prompt, flc.LogitRef("\ud800", 8), direction="upstream", method="direct"),
        "logit's token contains a lone surrogate",
    ),
    "feature of 5000 digits": (
        lambda m, s: flc.parse_target(f"{EX.sae}:{'9' * 5000}@8"),
        "Expected a feature as SAE:FEATURE@POSITION",
    ),
    "rank_many spec that is a string": (
        lambda m, s: flc.rank_many(m, s, [EX.prompt], bad(EX.sae), direction="upstream", method="direct"),
        "Say where to rank with FeatureSpec",
    ),
    "rank_many min_score that is text": (
        lambda m, s: flc.rank_many(m, s, [EX.prompt], SPEC, direction="upstream", method="direct", min_score=bad("x")),
        "min_score must be a number of at least 0 (got 'x')",
    ),
    "rank_many with saes None": (
        lambda m, s: flc.rank_many(m, bad(None), [EX.prompt], SPEC, direction="upstream", method="direct"),
        "No SAEs were given",
    ),
    "direction of strings": (
        lambda m, s: flc.direction_sae(m, "blocks.0.hook_resid_pre", bad(["a"] * 128)),
        "must be an array of real numbers, not of <U1 values",
    ),
    "direction of objects": (
        lambda m, s: flc.direction_sae(m, "blocks.0.hook_resid_pre", np.array([None] * 128)),
        "not of object values",
    ),
    "SAE name of 300 characters": (lambda m, s: flc.load_sae("toy", "a" * 300), "Unknown SAE 'aaaa"),
    "SAE path of 300 characters": (lambda m, s: flc.load_sae("toy", "./" + "a" * 300), "does not exist"),
    "direction path of 300 characters": (lambda m, s: flc.load_direction("a" * 300 + ".npy"), "(File name too long)"),
    "SAE name that is a number": (lambda m, s: flc.load_sae("toy", bad(5)), "SAE name must be a non-empty string"),
    "model name that is a number": (lambda m, s: flc.load_model(bad(5)), "model name must be a non-empty string"),
}


@pytest.mark.parametrize("case", list(MORE_API_CASES))
def test_more_api_inputs_are_refused_clearly(toy, case):
    call, message = MORE_API_CASES[case]
    with pytest.raises(FeatureLensError, match=re.escape(message)):
        call(*toy)


def test_rank_many_reads_a_generator_once(toy):
    model, saes = toy
    prompts = flc.held_out_prompts(2, 16)
    spec = flc.FeatureSpec("L0.attn_z", None, "last")
    listed = flc.rank_many(model, saes, prompts, spec, direction="downstream", method="direct")
    generated = flc.rank_many(model, saes, (p for p in prompts), spec, direction="downstream", method="direct")
    pd.testing.assert_frame_equal(listed.edges, generated.edges)
    wrong = flc.FeatureSpec("L0.attn_z", bad("924"))
    with pytest.raises(FeatureLensError, match="Feature '924' is not a whole number"):
        flc.rank_many(model, saes, prompts, wrong, direction="upstream", method="direct")


def test_cli_refuses_a_lone_surrogate_in_one_line(run_cli):
    code, out, err = run_cli(
        "rank", "--model", "toy", "--prompt", "To be \udcff", "--feature", "L0.attn_z:3@1", "--saes", "L0.resid_pre",
        "--direction", "upstream", "--method", "direct",
    )  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1 and "lone surrogate" in err


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path):
    target = tmp_path / "edges.parquet"
    target.write_bytes(b"the previous, valid file")

    def fill_the_disk(path: Path) -> None:
        path.write_bytes(b"\0" * 65536)  # part of a new file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fill_the_disk)
    assert target.read_bytes() == b"the previous, valid file"
    assert [p.name for p in tmp_path.iterdir()] == ["edges.parquet"]  # no partial file left behind


# What the red-team run saw end in "internal error ... a bug in feature-lens" (exit 1): folders from the
# `sae_folders` fixture (in braces), a name the filesystem cannot hold, and a logit token that is not Unicode.
CLI_CASES = {
    "hook_name an int": ("{hook_int}", "hook_name must be a hook name"),
    "cfg.json nested 50000 deep": ("{cfg_deep}", "cfg.json is nested 50000 levels deep"),
    "an integer of 5000 digits": ("{cfg_long_int}", "an integer of 5000 digits"),
    "TopK k past d_sae": ("{topk_k_over_d_sae}", "is 5000; it must be a whole number from 1 to d_sae (1024)"),
    "labels.json too short": ("{labels_short}", "labels.json must be a list of 1024 strings"),
    "feature data without a key": ("{data_missing_key}", "'mean_activation' must be floating-point"),
    "SAE name of 300 characters": ("a" * 300, "Unknown SAE 'aaaa"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_what_was_an_internal_error_in_one_line(run_cli, sae_folders, case):
    name, message = CLI_CASES[case]
    name = sae_folders[name.strip("{}")] if name.startswith("{") else name
    code, out, err = run_cli(
        "rank", "--model", "toy", "--prompt", EX.prompt, "--feature", f"{EX.sae}:{EX.feature}@{EX.position}",
        f"--saes=L0.resid_pre,{name}", "--direction", "upstream", "--method", "direct",
    )  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_cli_refuses_a_logit_token_that_is_not_unicode(run_cli):
    code, _, err = run_cli(
        "rank", "--model", "toy", "--prompt", EX.prompt, "--logit", "\udcff", "--position", "8", "--saes",
        "L0.resid_pre", "--direction", "upstream", "--method", "direct",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "logit's token contains a lone surrogate" in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BATCH = [
    "batch", "--model", "toy", "--feature", "L0.attn_z", "--saes", "L0.resid_pre", "--direction", "upstream",
    "--method", "direct", "--format", "json",
]  # fmt: skip


def test_cli_batch_on_ray_without_a_cluster_says_so_in_one_line(run_cli, tmp_path: Path):
    """Nothing listens at the address: refused before ray.init, which would retry and log for a minute."""
    start = time.perf_counter()
    address = f"127.0.0.1:{_free_port()}"
    code, out, err = run_cli(
        *BATCH, "--held-out", "2", "--length", "12", "--out", str(tmp_path / "e.parquet"), "--executor", "ray",
        "--ray-address", address,
    )  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"No Ray cluster answers at '{address}'" in err and "ray start --head" in err
    assert time.perf_counter() - start < 10 and not list(tmp_path.iterdir())


def test_cli_batch_refuses_an_output_that_is_a_folder_before_running(run_cli, tmp_path: Path):
    start = time.perf_counter()
    code, _, err = run_cli(*BATCH, "--held-out", "2", "--length", "12", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "it is a folder" in err and time.perf_counter() - start < 10


def test_cli_batch_on_a_full_disk_keeps_the_previous_output_and_the_finished_prompts(
    run_cli, tmp_path: Path, monkeypatch
):
    out = tmp_path / "edges.parquet"
    pd.DataFrame({"kept": [1, 2, 3]}).to_parquet(out)
    args = [*BATCH, "--held-out", "2", "--length", "12", "--out", str(out)]
    parquet = pd.DataFrame.to_parquet

    def full(self, path, **kwargs):
        if Path(path).parent != tmp_path:  # the finished prompts' files still fit
            return parquet(self, path, **kwargs)
        Path(path).write_bytes(b"PAR1" + b"\0" * 1000)  # part of the new file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    code, _, err = run_cli(*args)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert pd.read_parquet(out)["kept"].tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edges.parquet", "edges.parquet.parts"]
    code, _, err = run_cli(*args)  # without --resume, the kept prompts are not silently dropped
    assert code == 2 and "--resume" in err and err.count("\n") == 1
    code, _, err = run_cli(*args, "--resume")  # space freed: both prompts come from the kept files
    assert code == 0 and "from 2 prompts, 2 of them resumed" in err, err
    assert "anchor_feature" in pd.read_parquet(out).columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edges.parquet"]  # the kept prompts are cleared


def _start_batch(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "feature_lens_core", *INTERRUPTED, "--out", str(out), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_parts(process: subprocess.Popen, parts: Path, count: int) -> None:
    deadline = time.monotonic() + 240
    while batch.finished_count(parts) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.02)


N_PROMPTS = 8
INTERRUPTED = [
    "batch", "--model", "toy", "--held-out", str(N_PROMPTS), "--length", "16", "--feature", "L1.mlp_out", "--at",
    "active", "--max-per-prompt", "2", "--saes", "L0.resid_pre,L0.mlp_out", "--direction", "upstream", "--method",
    "attribution", "--format", "json",
]  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_batch_keeps_its_finished_prompts_and_resumes_without_rerunning_them(toy, tmp_path: Path):
    """A real `python -m feature_lens_core batch`, killed (SIGKILL) after 3 prompts, then interrupted (SIGINT) on
    resuming, then resumed to the end: the result equals an uninterrupted run, and no kept prompt is run again."""
    out, parts = tmp_path / "edges.parquet", tmp_path / "edges.parquet.parts"
    first = _start_batch(out)
    _wait_for_parts(first, parts, 3)
    first.kill()
    first.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert not out.exists() and len(kept) >= 6

    second = _start_batch(out, "--resume")
    _wait_for_parts(second, parts, len(kept) // 2 + 1)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=120)
    done = batch.finished_count(parts)
    assert second.returncode == 130 and err.strip().splitlines()[-1].startswith(f"interrupted: {done} of 8 prompts")
    assert "--resume" in err and "Traceback" not in err
    assert {name: (parts / name).stat().st_mtime_ns for name in kept} == kept  # kept files were not rewritten

    third = _start_batch(out, "--resume")
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert f"from {N_PROMPTS} prompts, {done} of them resumed" in err and not parts.exists()
    model, _ = toy
    saes = {name: flc.load_sae("toy", name) for name in ("L0.resid_pre", "L0.mlp_out", "L1.mlp_out")}
    alone = flc.rank_many(
        model, saes, flc.held_out_prompts(N_PROMPTS, 16), flc.FeatureSpec("L1.mlp_out", None, "active", 2),
        direction="upstream", method="attribution",
    )  # fmt: skip
    resumed = pd.read_parquet(out)
    assert len(resumed) == len(alone.edges) > 0
    pd.testing.assert_frame_equal(resumed, alone.edges, check_dtype=False, atol=1e-6)


@pytest.mark.unit
def test_every_test_the_reliability_page_cites_exists() -> None:
    """docs/reliability.md names the test behind each claim (`file.py::test`, or `::test` for the file named
    last); a renamed or removed test must not leave a claim without one."""
    tests = {path.name: path.read_text() for path in ROOT.joinpath("tests").rglob("test_*.py")}
    cited, missing, file = 0, [], None
    for match in re.finditer(r"(test_\w+\.py)?::(test_\w+)", ROOT.joinpath("docs", "reliability.md").read_text()):
        file = match.group(1) or file
        cited += 1
        if file not in tests or not re.search(rf"def {match.group(2)}\(", tests[file]):
            missing.append(f"{file}::{match.group(2)}")
    assert cited > 50 and not missing, missing
