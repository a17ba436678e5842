"""The Altair builders: what the specs encode (order, colours, selection params) and the pure helpers."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_lens_app.widgets import highlighted_tokens
from feature_lens_core import agreement, charts

pytestmark = pytest.mark.app


@pytest.fixture
def ranking() -> pd.DataFrame:
    rows = [
        ("L1.attn_z", "blocks.1.attn.hook_z", 1, "feature", 12, 3, " the", 1.5, 0.9),
        ("L0.mlp_out", "blocks.0.hook_mlp_out", 0, "error", -1, 2, "\n", 0.7, -0.6),
        ("L0.mlp_out", "blocks.0.hook_mlp_out", 0, "feature", 40, 3, " the", 2.0, -0.2),
        ("L0.mlp_out", "blocks.0.hook_mlp_out", 0, "feature", 40, 1, " the", 2.0, 0.1),
    ]
    columns = ["sae", "hook", "layer", "kind", "feature", "position", "token", "activation", "score"]
    return pd.DataFrame(rows, columns=columns)


def test_labels_are_unique_and_readable(ranking: pd.DataFrame) -> None:
    labelled = charts.add_labels(ranking, lambda sae, f: "thou / thee" if f == 12 else "")
    assert labelled["label"].is_unique
    assert labelled["label"][0] == "L1.attn_z #12 thou / thee · ' the' @3"
    assert labelled["label"][1] == "L0.mlp_out · error · '⏎' @2"


def test_ranked_bars_keep_order_centre_colours_and_name_the_click(ranking: pd.DataFrame) -> None:
    spec = charts.ranked_bars(charts.add_labels(ranking), "Upstream").to_dict()
    encoding = spec["encoding"]
    assert encoding["y"]["sort"] is None  # the core's order, not Vega's
    scale = encoding["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["scheme"] == charts.DIVERGING_SCHEME
    assert scale["domain"] == [-0.9, 0.9]  # symmetric, so zero sits in the middle
    assert "kind === 'error'" in encoding["color"]["condition"]["test"]
    assert encoding["strokeDash"]["condition"][0]["value"] == [4, 2]
    (param,) = spec["params"]
    assert param["name"] == charts.PICK
    assert param["select"]["fields"] == ["sae", "feature", "position", "kind"]
    tooltips = {t["field"] for t in encoding["tooltip"]}
    assert {"activation", "score", "sae", "layer", "kind"} <= tooltips


def test_token_strip_outlines_target_and_selects_positions() -> None:
    df = pd.DataFrame({"position": [0, 1, 2], "token": ["<bos>", " a", " a"], "activation": [0.0, 2.0, 1.0]})
    chart = charts.token_strip(df, target_position=1)
    spec = chart.to_dict()
    assert spec["params"][0]["name"] == charts.TOKEN and spec["params"][0]["select"]["fields"] == ["position"]
    assert list(chart.data["tick"]) == ["0 '<bos>'", "1 ' a'", "2 ' a'"]  # repeated tokens stay apart
    assert list(chart.data["is_target"]) == [False, True, False]


def test_scatter_and_agreement(ranking: pd.DataFrame) -> None:
    exact = charts.add_labels(ranking)
    same = ranking.copy()
    reversed_ = ranking.assign(score=-ranking["score"])
    pairs = agreement.paired_scores(exact, {"attribution": same, "direct": reversed_})
    assert set(pairs["method"]) == {"attribution", "direct"} and len(pairs) == 8
    table = agreement.agreement(pairs, k=2).set_index("method")
    assert table.loc["attribution", "spearman"] == pytest.approx(1.0)
    assert table.loc["direct", "spearman"] == pytest.approx(-1.0)
    assert table.loc["attribution", "top_k_overlap"] == 1.0
    spec = charts.method_scatter(pairs).to_dict()
    assert len(spec["layer"]) == 2


def test_paired_scores_leave_out_nodes_one_method_lacks(ranking: pd.DataFrame) -> None:
    pairs = agreement.paired_scores(ranking.head(2), {"attribution": ranking})
    assert len(pairs) == 2


def test_selected_rows_reads_streamlit_state() -> None:
    state = {"selection": {"pick": [{"sae": "L0.mlp_out", "feature": 40, "position": 3, "kind": "feature"}]}}
    assert charts.selected_rows(state, "pick")[0]["feature"] == 40
    assert charts.selected_rows(None, "pick") == []
    assert charts.selected_rows({"selection": {}}, "pick") == []


def test_highlighting_escapes_everything() -> None:
    tokens = ["<script>alert(1)</script>", ' " onmouseover="x', "&amp;", "\x07", "\n"]
    out = highlighted_tokens(tokens, [1.0, 0.5, 0.0, 0.0, 2.0], target=1)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert 'onmouseover="x' not in out and "&quot; onmouseover=&quot;x" in out
    assert "&amp;amp;" in out
    assert "\x07" not in out and "\\u0007" in out
    assert "⏎" in out
    assert out.count("outline:2px") == 1
