"""The Altair builders: what the specs encode (order, colours, selection params) and the pure helpers."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_lens_app import charts
from feature_lens_app.token_panel import highlighted_tokens
from feature_lens_core import agreement

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
    assert spec["autosize"]["type"] == "fit-x"  # the bars keep their height; only the width fits the page


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


def test_graph_layout_gives_each_used_position_a_column_as_wide_as_its_most_crowded_row() -> None:
    nodes = pd.DataFrame(
        {
            "id": ["A:1@5", "B:2@5", "B:3@5", "B:error@2", "C:4@9"],
            "sae": ["A", "B", "B", "B", "C"],
            "kind": ["feature", "feature", "feature", "error", "feature"],
            "feature": [1, 2, 3, -1, 4],
            "position": [5, 5, 5, 2, 9],
            "token": [" a", " a", " a", " b", " c"],
            "activation": [1.0, 2.0, 0.5, 0.3, 1.2],
            "label": ["", "", "", "", ""],
            "side": ["target", "upstream", "upstream", "upstream", "downstream"],
            "hop": [0, 1, 1, 1, 1],
        }
    )
    placed, centres = charts.graph_layout(nodes, ["B", "A", "C"])
    assert list(placed["y"]) == [1, 0, 0, 0, 2]
    # Columns in position order: 2 (width 1), 5 (width 2: two B nodes), 9 (width 1).
    assert centres == {0.5: 2, 2.0: 5, 3.5: 9}
    assert list(placed["x"]) == [1.5, 1.5, 2.5, 0.5, 3.5]
    edges = pd.DataFrame({"source": ["B:2@5", "B:error@2"], "target": ["A:1@5", "A:1@5"], "score": [0.8, -0.3]})
    spec = charts.graph_chart(nodes, edges, ["B", "A", "C"], [f"t{i}" for i in range(10)]).to_dict()
    pick = next(p for p in spec["params"] if p["name"] == charts.PICK)
    assert pick["select"]["fields"] == ["sae", "feature", "position", "kind"]
    rules = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert {"x2", "y2", "strokeWidth", "color"} <= set(rules["encoding"])
    # Captions of neighbouring columns sit on opposite sides of their nodes, so that they do not run together.
    texts = [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]
    assert sorted(layer["mark"]["dy"] for layer in texts) == [-14, 17]
    rows = spec["datasets"][texts[0]["data"]["name"]]
    assert {row["x"]: row["below"] for row in rows} == {0.5: False, 1.5: True, 2.5: False, 3.5: True}


def test_cluster_map_selects_features() -> None:
    frame = pd.DataFrame(
        {
            "sae": ["A", "A"],
            "feature": [3, 7],
            "label": ["x", "y"],
            "cluster": [0, 1],
            "x": [0.1, -0.2],
            "y": [0.0, 1.0],
        }
    ).assign(occurrences=[4, 5])
    spec = charts.cluster_map(frame).to_dict()
    assert spec["params"][0]["name"] == charts.PICK and spec["params"][0]["select"]["fields"] == ["sae", "feature"]
    assert spec["encoding"]["color"]["field"] == "cluster"
    # Told apart by shape too (colours merge under deuteranopia), each cluster its own shape.
    assert spec["encoding"]["shape"]["field"] == "cluster"
    shapes = spec["encoding"]["shape"]["scale"]["range"]
    assert len(set(shapes)) == len(shapes) == 2


def test_edge_frequency_plots_strength_against_how_often_it_holds() -> None:
    frame = pd.DataFrame(
        {
            "sae": ["A", "A", "B"],
            "feature": [3, 7, -1],
            "kind": ["feature", "feature", "error"],
            "label": ["A #3", "A #7", "B error"],
            "mean_score": [0.4, -0.1, 0.2],
            "frequency": [0.75, 0.25, 1.0],
            "prompts": [3, 1, 4],
            "occurrences": [6, 2, 8],
        }
    )
    spec = charts.edge_frequency(frame).to_dict()
    assert spec["encoding"]["x"]["field"] == "percent" and spec["encoding"]["y"]["field"] == "mean_score"
    (values,) = spec["datasets"].values()
    assert [row["percent"] for row in values] == [75.0, 25.0, 100.0]  # a percentage, not 0.75
    assert spec["params"][0]["name"] == charts.PICK
    assert spec["encoding"]["color"]["scale"]["domainMid"] == 0
