"""The Circuit graph and Across prompts pages on the built-in model, through AppTest."""

from __future__ import annotations

import pytest

from feature_lens_app.examples import EXAMPLES

from .helpers import assert_healthy, charts, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]


def test_graph_page_opens_on_the_prediction_with_circuit_tracers_scores(open_app) -> None:
    at = open_app("graph")
    assert_healthy(at)
    assert not errors(at), errors(at)
    (key, spec) = next((k, s) for k, s in charts(at).items() if k.startswith("graph_"))
    assert any(p["name"] == "pick" for p in spec["params"])
    assert [m.label for m in at.metric] == ["Replacement score", "Completeness score", "Faithfulness"]
    assert all(0 <= float(m.value.rstrip("%")) <= 100 for m in at.metric)
    (said,) = [m.value for m in at.markdown if "The model's next token" in m.value]
    assert "'⏎' (p = 0.91)" in said and "\\n" not in said, said  # a new line shown as every token shows it
    tables = [frame.value for frame in at.dataframe]
    edges = next(t for t in tables if {"source", "target", "score", "hop"} <= set(t.columns))
    assert len(edges) > 0
    assert edges.target.str.startswith("logit[").any()  # edges end at the predicted tokens
    # Transcoders leave attention open: the edges into the prediction split by the head that carries them.
    heads = next(t for t in tables if "top heads" in t.columns)
    assert len(heads) > 0 and heads["top heads"].str.match(r"L\dH\d").any()
    # One head's attention score split into query and key features.
    sides = [t for t in tables if {"kind", "score"} <= set(t.columns)]
    assert len(sides) == 2 and all(len(side) > 0 for side in sides)
    at.number_input(key="qk_layer").set_value(0).run()
    assert_healthy(at)
    assert not errors(at), errors(at)


def test_with_attention_covered_only_edges_into_attention_features_run_through_heads(open_app) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_node_set").set_value("sidebar").run()  # attention and MLP output SAEs
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert [m.label for m in at.metric] == ["Replacement score", "Completeness score", "Faithfulness"]
    edges = next(frame.value for frame in at.dataframe if "top heads" in frame.value.columns)
    named = edges.loc[edges["top heads"].str.len() > 0]
    # Every attention layer has its SAE, so a path passes a head only where it enters an attention feature, and
    # that head is one of the feature's own layer.
    assert len(named) > 0 and named.target.str.contains(r"^L\d\.attn_z:").all()
    for heads, target in zip(named["top heads"], named.target, strict=True):
        assert all(head.startswith(f"L{target[1]}H") for head in heads.split(", ")), (target, heads)
    assert edges.loc[~edges.target.str.contains(".attn_z:", regex=False), "top heads"].eq("").all()


def test_graph_page_draws_a_target_features_graph_and_its_faithfulness(open_app) -> None:
    at = open_app("graph")
    at.segmented_control(key="graph_of").set_value("feature").run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    (key, spec) = next((k, s) for k, s in charts(at).items() if k.startswith("graph_"))
    assert any(p["name"] == "pick" for p in spec["params"])
    marks = {layer["mark"]["type"] for layer in spec["layer"]}
    assert {"rule", "point", "text"} <= marks
    assert [m.label for m in at.metric][:1] == ["Faithfulness"]
    edges = at.dataframe[0].value
    assert len(edges) > 0 and {"source", "target", "score", "hop"} <= set(edges.columns)
    assert (edges["target"].str.len() > 0).all()


def test_graph_page_keeps_working_after_bad_input(open_app) -> None:
    at = open_app("graph", feature="1023")  # almost surely silent at the example's position
    at.segmented_control(key="graph_of").set_value("feature").run()
    assert_healthy(at)
    assert any("not active" in e or "out of range" in e for e in errors(at)), errors(at)
    assert at.sidebar.text_area(key="prompt").value == EXAMPLES[0].prompt
    at.sidebar.number_input(key="feature").set_value(EXAMPLES[0].feature).run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert any(k.startswith("graph_") for k in charts(at))


def test_across_prompts_page_aggregates_the_target_over_held_out_text(open_app) -> None:
    at = open_app("prompts", direction="upstream")
    assert_healthy(at)
    assert not errors(at), errors(at)
    shown, edges = at.dataframe[0].value, at.dataframe[1].value
    assert len(shown) == 12 and len(edges) > 0  # the prompts, then the edges
    assert {"mean_score", "frequency", "prompts"} <= set(edges.columns) and "anchor_feature" not in edges
    assert (edges["frequency"].between(0, 100)).all() and edges["frequency"].max() > 1  # a percentage
    assert any(key.startswith("edges_upstream_") for key in charts(at))  # strength against how often it holds
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download JSON"]


def test_across_prompts_page_with_no_prompts_of_ones_own_says_so(open_app) -> None:
    at = open_app("prompts", direction="upstream")
    at.radio(key="batch_source").set_value("own").run()
    assert_healthy(at)
    assert any("one per line" in i.value for i in at.info)


def test_a_steering_vector_becomes_a_target_ranked_like_any_feature(open_app) -> None:
    at = open_app("directions")
    assert_healthy(at)
    at.button[0].click().run()  # the form's submit: the default love-vs-war prompts at layer 1
    assert_healthy(at)
    assert not errors(at), errors(at)
    name = at.session_state["sae"]
    assert name.startswith("direction:love-vs-war#") and at.session_state["feature"] == 0
    assert name in at.session_state["saes"]
    assert any(k.startswith("strip_") for k in charts(at))
    at.switch_page("pages/explore.py").run()
    assert_healthy(at)
    bars = [k for k in charts(at) if k.startswith("bars_")]
    assert bars or any("not active" in e for e in errors(at)), errors(at)


def test_a_direction_from_an_empty_prompt_set_is_refused_clearly(open_app) -> None:
    at = open_app("directions")
    at.text_area(key="direction_b").set_value("   ")  # a form: the value counts when it is submitted
    at.button[0].click().run()
    assert_healthy(at)
    assert any("at least one prompt" in e for e in errors(at)), errors(at)
