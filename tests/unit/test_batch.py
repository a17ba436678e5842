"""batch.rank_many: its results are the per-prompt rankings added up, whichever executor runs the prompts."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from feature_lens_core.batch import (
    EDGE_COLUMNS,
    FeatureSpec,
    RayExecutor,
    held_out_prompts,
    rank_many,
    read_prompts,
)
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.ranking import FeatureRef, activations, rank
from tests.helpers import PROMPT, PROMPTS, TEXTS

pytestmark = pytest.mark.unit
KEY = ["sae", "kind", "feature"]
FEW = ("L0.resid_pre", "L0.attn_z", "L1.resid_pre", "L1.attn_z", "L2.resid_pre")


@pytest.fixture(scope="module")
def few(saes):
    """Five of the tiny SAEs, one or two per layer, to keep the many rankings quick."""
    return {name: saes[name] for name in FEW}


def by_hand(model, saes, spec: FeatureSpec, direction: str, method: str, top_k: int | None) -> pd.DataFrame:
    """Every occurrence ranked with `rank`, one row per (prompt, anchor feature, edge): summed score, and in
    how many occurrences one of the edge's nodes has a nonzero score within the top_k."""
    rows = []
    for index, prompt in enumerate(PROMPTS):
        acts = activations(model, saes[spec.sae], prompt)
        if spec.at == "last":
            acts = acts[acts.position == len(model.to_str_tokens(prompt)) - 1]
        if spec.feature is not None:
            acts = acts[acts.feature == spec.feature]
        acts = acts.sort_values("activation", ascending=False, kind="stable").head(spec.max_per_prompt or len(acts))
        for occurrence in acts.itertuples():
            ref = FeatureRef(spec.sae, int(occurrence.feature), int(occurrence.position))
            frame = rank(model, saes, prompt, ref, direction=direction, method=method)
            frame["present"] = frame.score.ne(0) & (frame.index < (top_k or len(frame)))
            for key, group in frame.groupby(KEY):
                rows.append((index, occurrence.feature, *key, group.score.sum(), group.present.any()))
    return pd.DataFrame(rows, columns=["prompt", "anchor_feature", *KEY, "score", "present"])


@pytest.mark.parametrize(
    ("spec", "direction", "method", "top_k"),
    [
        (FeatureSpec("L1.resid_pre", None, "last", max_per_prompt=3), "upstream", "attribution", 20),
        (FeatureSpec("L1.attn_z", None, "active", max_per_prompt=2), "downstream", "direct", None),
    ],
)
def test_batch_results_are_the_per_prompt_results_added_up(model, few, spec, direction, method, top_k):
    saes = few
    result = rank_many(model, saes, PROMPTS, spec, direction=direction, method=method, top_k=top_k)
    expected = by_hand(model, saes, spec, direction, method, top_k)
    summed = expected.groupby(["prompt", "anchor_feature", *KEY], as_index=False).agg(
        score=("score", "sum"), present=("present", "sum")
    )
    got = result.per_prompt.merge(summed, on=["prompt", "anchor_feature", *KEY], suffixes=("", "_hand"))
    assert len(got) == len(summed) == len(result.per_prompt)
    assert got.score.to_numpy() == pytest.approx(got.score_hand.to_numpy(), rel=1e-12, abs=1e-15)
    assert (got.present == got.present_hand).all()

    assert list(result.edges.columns) == EDGE_COLUMNS and result.n_prompts == len(PROMPTS)
    occurrences = result.occurrences.groupby("feature").size()
    prompts = result.occurrences.groupby("feature").prompt.nunique()
    for edge in result.edges.sample(40, random_state=0).itertuples():
        mine = expected[(expected.anchor_feature == edge.anchor_feature) & (expected.sae == edge.sae)]
        mine = mine[(mine.kind == edge.kind) & (mine.feature == edge.feature)]
        assert edge.mean_score == pytest.approx(mine.score.sum() / occurrences[edge.anchor_feature], rel=1e-12)
        assert edge.frequency == mine[mine.present].prompt.nunique() / prompts[edge.anchor_feature]
        assert edge.occurrences == mine.present.sum()


def test_one_feature_at_every_active_position(model, few):
    acts = activations(model, few["L1.resid_pre"], PROMPT)
    counts = acts.feature.value_counts()
    feature = int(counts[counts == 3].index[0])
    spec = FeatureSpec("L1.resid_pre", feature, "active")
    result = rank_many(model, few, [PROMPT, TEXTS[0]], spec, direction="upstream", method="attribution")
    assert set(result.occurrences.feature) == {feature}
    assert result.occurrences[result.occurrences.prompt == 0].position.tolist() == sorted(
        acts[acts.feature == feature].position
    )
    assert set(result.edges.anchor_feature) == {feature}


def test_executors_and_progress(model, few):
    saes = few
    spec = FeatureSpec("L2.resid_pre", None, "last", max_per_prompt=2)
    calls = []
    serial = rank_many(
        model, saes, PROMPTS, spec, direction="upstream", method="direct", progress=lambda d, n: calls.append((d, n))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = rank_many(model, saes, PROMPTS, spec, direction="upstream", method="direct", executor=pool)
    pd.testing.assert_frame_equal(serial.edges, threaded.edges)
    pd.testing.assert_frame_equal(serial.per_prompt, threaded.per_prompt)


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_serial_results(model, few):
    """Ray workers are separate processes: the task (model and SAEs included) travels through Ray's object store."""
    saes = few
    ray = pytest.importorskip("ray")
    spec = FeatureSpec("L1.resid_pre", None, "last", max_per_prompt=2)
    serial = rank_many(model, saes, PROMPTS, spec, direction="upstream", method="attribution")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        distributed = rank_many(
            model, saes, PROMPTS, spec, direction="upstream", method="attribution", executor=RayExecutor()
        )
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(serial.edges, distributed.edges)
    pd.testing.assert_frame_equal(serial.per_prompt, distributed.per_prompt)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"baseline": "corrupt"}, "cannot be used across prompts"),
        ({"direction": "sideways"}, "Unknown direction"),
        ({"method": "magic"}, "Unknown method"),
        ({"spec": FeatureSpec("L1.resid_pre", None, "first")}, "Unknown position rule"),
        ({"spec": FeatureSpec("L9.resid_pre")}, "not among the SAEs"),
        ({"spec": FeatureSpec("L1.resid_pre", 48)}, "features 0 to 47"),
        ({"prompts": []}, "at least one prompt"),
        ({"prompts": [PROMPT, "to be " * 40]}, "prompt 2 is 83 tokens long"),
        ({"top_k": 0}, "top_k must be"),
    ],
)
def test_bad_batch_arguments_are_refused(model, saes, arguments, message):
    args = {"prompts": PROMPTS, "spec": FeatureSpec("L1.resid_pre"), "direction": "upstream", "method": "direct"}
    args |= arguments
    with pytest.raises(FeatureLensError, match=message):
        rank_many(model, saes, args.pop("prompts"), args.pop("spec"), **args)


def test_prompt_sources(tmp_path):
    prompts = held_out_prompts(5, length=16)
    assert len(prompts) == 5 and all(p.strip() for p in prompts) and len(set(prompts)) == 5
    (tmp_path / "p.txt").write_text("To be\n\n  or not to be  \n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.txt") == ["To be", "or not to be"]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    for path, message in ((tmp_path / "blank.txt", "no prompts"), (tmp_path / "none.txt", "does not exist")):
        with pytest.raises(FeatureLensError, match=message):
            read_prompts(path)
    with pytest.raises(FeatureLensError, match="fewer"):
        held_out_prompts(10_000, length=100)


def test_cli_batch_writes_the_edges_as_parquet(tiny_cli, model, saes, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS), encoding="utf-8")
    out, per_prompt = tmp_path / "edges.parquet", tmp_path / "per_prompt.parquet"
    argv = ["batch", "--model", "tiny", "--prompts", str(tmp_path / "prompts.txt"), "--feature", "L1.resid_pre"]
    argv += ["--saes", "L0.attn_z,L0.resid_pre", "--direction", "upstream", "--method", "attribution"]
    argv += ["--max-per-prompt", "2", "--out", str(out), "--per-prompt", str(per_prompt), "--format", "json"]
    assert tiny_cli(argv) == 0
    written = pd.read_parquet(out)
    picked = {n: saes[n] for n in ("L0.attn_z", "L0.resid_pre", "L1.resid_pre")}
    expected = rank_many(
        model, picked, PROMPTS, FeatureSpec("L1.resid_pre", None, "last", 2), direction="upstream", method="attribution"
    )
    pd.testing.assert_frame_equal(written, expected.edges, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(per_prompt), expected.per_prompt, check_dtype=False)
    assert written.attrs["method"] == "attribution" and written.attrs["prompt_count"] == 3
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 20 and "wrote" in captured.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "/no/such/folder/e.parquet"], "folder '/no/such/folder' does not exist"),
        (["--out", "e.parquet", "--baseline", "corrupt"], "invalid choice: 'corrupt'"),
        (["--out", "e.parquet", "--ray-address", "auto"], "needs --executor ray"),
        (["--out", "e.parquet", "--prompts", "missing.txt"], "not allowed with argument --held-out"),
    ],
)
def test_cli_batch_bad_input_is_one_line(tiny_cli, capsys, extra, message):
    argv = ["batch", "--model", "tiny", "--held-out", "2", "--feature", "L1.resid_pre:3", "--saes", "L0.attn_z"]
    argv += ["--direction", "upstream", "--method", "direct", *extra]
    assert tiny_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_graph_json(tiny_cli, model, saes, capsys):
    acts = activations(model, saes["L2.resid_pre"], PROMPT)
    feature = int(acts[acts.position == 9].iloc[0].feature)
    argv = ["graph", "--model", "tiny", "--prompt", PROMPT, "--feature", f"L2.resid_pre:{feature}@9"]
    argv += ["--saes", "L0.attn_z,L1.attn_z,L1.transcoder", "--node-budget", "6", "--format", "json"]
    assert tiny_cli(argv) == 0
    graph = json.loads(capsys.readouterr().out)
    assert graph["target"] == f"L2.resid_pre:{feature}@9" and 2 <= len(graph["nodes"]) <= 7
    assert set(graph["faithfulness"]) == {"full", "empty", "kept", "score"}
    assert tiny_cli([*argv[:-1], "csv"]) == 2
