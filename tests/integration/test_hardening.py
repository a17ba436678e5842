"""Inputs beyond the documented matrix (docs/reliability.md, "Beyond the matrix"): each a FeatureLensError
at the API, exit 2 with one line at the CLI; and outputs written whole or not at all."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.files import write_atomically

pytestmark = pytest.mark.integration
EX = EXAMPLES[0]
TARGET = flc.FeatureRef(EX.sae, EX.feature, EX.position)


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


def test_rank_many_reads_a_generator_once(toy):
    model, saes = toy
    prompts = flc.held_out_prompts(2, 16)
    spec = flc.FeatureSpec("L0.attn_z", None, "last")
    listed = flc.rank_many(model, saes, prompts, spec, direction="downstream", method="direct")
    generated = flc.rank_many(model, saes, (p for p in prompts), spec, direction="downstream", method="direct")
    pd.testing.assert_frame_equal(listed.edges, generated.edges)
    bad = flc.FeatureSpec("L0.attn_z", "924")  # type: ignore[arg-type]
    with pytest.raises(FeatureLensError, match="Feature '924' is not a whole number"):
        flc.rank_many(model, saes, prompts, bad, direction="upstream", method="direct")


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


def test_cli_batch_on_a_full_disk_keeps_the_previous_output(run_cli, tmp_path: Path, monkeypatch):
    out = tmp_path / "edges.parquet"
    pd.DataFrame({"kept": [1, 2, 3]}).to_parquet(out)

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    code, _, err = run_cli(
        "batch", "--model", "toy", "--held-out", "2", "--length", "12", "--feature", "L0.attn_z", "--saes",
        "L0.resid_pre", "--direction", "upstream", "--method", "direct", "--out", str(out), "--format", "json",
    )  # fmt: skip
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert pd.read_parquet(out)["kept"].tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edges.parquet"]
