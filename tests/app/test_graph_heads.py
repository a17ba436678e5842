"""The graph page's attention, opened up, on the built-in model through AppTest: every edge through attention
names its strongest heads (the core's head loadings of that edge), in the edge table and the edges' tooltips,
and picking an edge opens the QK split of its strongest head from the target's token to the source's."""

from __future__ import annotations

import re

import pytest

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from feature_lens_core.heads import head_loadings
from feature_lens_core.targets import parse_target

from .helpers import assert_healthy, charts, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]
TRANSCODERS = ("L0.transcoder", "L1.transcoder", "L2.transcoder")  # the graph page's default node set
HEAD = re.compile(r"L(\d+)H(\d+) ([+-][0-9.e+-]+)")


def test_edges_through_attention_name_their_heads_and_open_a_qk_split(open_app) -> None:
    at = open_app("graph")
    assert_healthy(at)
    assert not errors(at), errors(at)
    edges = next(frame.value for frame in at.dataframe if "top heads" in frame.value.columns)
    named = edges.loc[edges["top heads"].str.len() > 0]
    assert len(named) >= len(edges) // 3  # transcoders leave attention open: most edges run through a head
    assert edges.loc[edges.source.str.startswith("tokens@"), "top heads"].eq("").all()  # tokens are not split

    model = flc.load_model("toy")
    saes = {name: flc.load_sae("toy", name) for name in TRANSCODERS}
    for row in named.iloc[[0, len(named) // 2, -1]].to_dict("records"):
        sae, rest = row["source"].split(":")
        feature, position = rest.split("@")
        source = flc.FeatureRef(sae, -1 if feature == "error" else int(feature), int(position))
        split = head_loadings(model, saes, EXAMPLES[0].prompt, source, parse_target(row["target"]))
        shown = [(int(layer), int(head), float(score)) for layer, head, score in HEAD.findall(row["top heads"])]
        assert [(layer, head) for layer, head, _ in shown] == [(layer, head) for layer, head, _ in split.top(3)]
        for (_, _, got), (_, _, expected) in zip(shown, split.top(3), strict=True):
            assert got == pytest.approx(expected, rel=2e-3)  # the table rounds to 3 significant digits

    (_, spec) = next((k, s) for k, s in charts(at).items() if k.startswith("graph_"))
    rules = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert "top heads" in [tip["field"] for tip in rules["encoding"]["tooltip"]]

    picker = next(box for box in at.selectbox if box.label.startswith("Why did a head look there?"))
    keys = ("qk_layer", "qk_head", "qk_query", "qk_key")
    before = tuple(at.number_input(key=k).value for k in keys)  # the strongest edge's, until one is picked
    choices = {index: _head_and_positions(option) for index, option in enumerate(picker.options)}
    index, wanted = next((i, w) for i, w in choices.items() if w != before)  # a pick that must move the inputs
    picker.select_index(index).run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    source, target = picker.options[index].split("   (")[0].split(" → ")
    row = edges.loc[(edges.source == source) & (edges.target == target)].iloc[0]
    assert row["top heads"].startswith(f"L{wanted[0]}H{wanted[1]} ")
    assert tuple(at.number_input(key=k).value for k in keys) == wanted
    query_position, key_position = wanted[2], wanted[3]
    caption = next(c.value for c in at.caption if c.value.startswith("Head "))
    assert caption.startswith(f"Head {wanted[1]} of layer {wanted[0]}, from ")
    assert f"(position {query_position}) to " in caption and f"(position {key_position})" in caption
    sides = [frame.value for frame in at.dataframe if {"kind", "score"} <= set(frame.value.columns)]
    assert len(sides) == 2 and all(len(side) > 0 for side in sides)


def _head_and_positions(option: str) -> tuple[int, int, int, int]:
    """An edge picker's option, "SOURCE → TARGET   (L1H2 +0.1, ...)", as its top head's layer and head, the
    target's position (the query) and the source's (the key)."""
    source, target = option.split("   (")[0].split(" → ")
    top = HEAD.search(option)
    assert top is not None
    return int(top.group(1)), int(top.group(2)), parse_target(target).position, int(source.split("@")[1])
