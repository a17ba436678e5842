"""The DFA heatmap: a valid Vega-Lite spec, tokens in prompt order (repeats kept apart), heads as rows, colours
centred at zero."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_lens_app import charts

pytestmark = pytest.mark.app


def test_dfa_heatmap_keeps_token_order_and_centres_colours() -> None:
    terms = pd.DataFrame(
        {
            "position": [0, 0, 1, 1, 2, 2],
            "token": ["<bos>", "<bos>", " a", " a", " a", " a"],
            "head": [0, 1, 0, 1, 0, 1],
            "score": [0.1, -0.4, 0.0, 0.2, 0.3, -0.1],
        }
    )
    chart = charts.dfa_heatmap(terms, "L2.attn_z #3")
    spec = chart.to_dict(validate=True)
    encoding = spec["encoding"]
    assert encoding["x"]["sort"] is None and encoding["y"]["field"] == "head"
    assert encoding["color"]["scale"]["domain"] == [-0.4, 0.4] and encoding["color"]["scale"]["domainMid"] == 0
    assert list(dict.fromkeys(chart.data["tick"])) == ["0 '<bos>'", "1 ' a'", "2 ' a'"]
    assert spec["height"] == 52


def test_explore_shows_the_dfa_heatmap_for_an_attention_target(open_app) -> None:
    """An attention SAE target gets the heatmap section; its data are the core's DFA terms."""
    prompt = "To be, or not to be, that is the question"
    at = open_app(prompt=prompt, sae="L2.attn_z", feature="184", pos="10", method="direct", kind="feature")
    assert not at.exception and not at.error
    assert "Which heads and tokens feed it" in [s.value for s in at.subheader]
    assert any("direct feature attribution" in c.value for c in at.caption)
