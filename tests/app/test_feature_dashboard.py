"""The Feature page's dashboard on the built-in model through AppTest: histograms, shaded examples of every
quantile, logit tables without '\ufffd', decoder neighbours and search results as links carrying the view,
previous / next, the wider context, a pasted corpus and the feature on typed text."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from feature_lens_app.examples import EXAMPLES
from feature_lens_app.state import KEYS

from .helpers import assert_healthy, charts, errors

pytestmark = [pytest.mark.app, pytest.mark.slow]

SHADED = "rgba(255,127,14,"  # the shading of a token by its activation (token_panel.highlighted_tokens)
OUTLINE = "outline:2px solid"  # the example's own token


def _in_tabs(element) -> bool:
    """Whether an HTML element is one example of a tab (its flex row holds the shaded tokens)."""
    return OUTLINE in element.proto.body and "display:flex" in element.proto.body


def _histogram(at: AppTest, title: str) -> list[int]:
    """The counts of the histogram chart titled `title` (Streamlit sends its data beside the spec, as Arrow)."""
    for element in at.get("vega_lite_chart"):
        if json.loads(element.proto.spec).get("title") == title:
            return convert_arrow_bytes_to_pandas_df(element.proto.datasets[0].data.data)["count"].tolist()
    raise AssertionError(f"no chart titled {title!r}")


def _links(at: AppTest) -> list[tuple[str, dict[str, str]]]:
    """Every page link's label and query parameters."""
    out = []
    for element in at.get("page_link"):
        params = {k: v[-1] for k, v in parse_qs(element.proto.query_string, keep_blank_values=True).items()}
        out.append((element.proto.label, params))
    return out


def test_the_dashboard_draws_histograms_examples_and_links(open_app) -> None:
    at = open_app("feature")
    assert_healthy(at)
    assert not errors(at), errors(at)
    counts = _histogram(at, "Activations where it fires")
    density_help = next(m for m in at.metric if m.label == "Share of tokens it fires on").proto.help
    assert sum(counts) == int(density_help.split(" of ")[0].replace(",", ""))  # every active token is counted
    assert sum(_histogram(at, "Direct effect on every output token's logit")) == 4096  # the whole vocabulary
    # Top examples and five quantiles, each example shaded token by token with its own token outlined.
    tabs = [t.label for t in at.tabs]
    assert tabs[0] == "Top" and len([t for t in tabs if t.startswith("Q")]) == 5, tabs
    shown = [h.proto.body for h in at.get("html") if _in_tabs(h)]
    assert len(shown) == 10 + 5 * 5
    assert all(body.count(OUTLINE) == 1 and SHADED in body for body in shown)
    # No raw byte fragments in the logit tables.
    tables = [h.proto.body for h in at.get("html") if "<table" in h.proto.body]
    assert len(tables) == 2 and not any("\ufffd" in t for t in tables)
    # Nearest features are links to their pages that keep the rest of the view.
    links = [(label, params) for label, params in _links(at) if "cosine" in label]
    assert len(links) == 10
    for _, params in links:
        assert set(KEYS) <= set(params) and params["prompt"] == EXAMPLES[0].prompt
        assert (params["sae"], params["feature"]) != (EXAMPLES[0].sae, str(EXAMPLES[0].feature))


def test_the_wider_context_shows_more_of_each_window(open_app) -> None:
    at = open_app("feature")
    narrow = [h.proto.body for h in at.get("html") if _in_tabs(h)]
    at.toggle(key="_dash_wide").set_value(True).run()
    assert_healthy(at)
    wide = [h.proto.body for h in at.get("html") if _in_tabs(h)]
    assert len(wide) == len(narrow)
    assert sum(b.count("<span") for b in wide) > sum(b.count("<span") for b in narrow)


def test_previous_next_and_search_move_between_features(open_app) -> None:
    at = open_app("feature")
    feature = EXAMPLES[0].feature
    next(b for b in at.button if b.label == "Next").click().run()
    assert_healthy(at)
    assert at.session_state["feature"] == feature + 1 and at.query_params["feature"] == str(feature + 1)
    assert at.title[0].value == f"Feature #{feature + 1} of {EXAMPLES[0].sae}"
    next(b for b in at.button if b.label == "Previous").click().run()
    assert at.session_state["feature"] == feature
    at.text_input(key="_feature_search").input(" thee").run()
    assert_healthy(at)
    found = [(label, params) for label, params in _links(at) if label.startswith("#")]
    assert found and all("thee" in label for label, _ in found)
    assert all(params["sae"] == EXAMPLES[0].sae and params["prompt"] == EXAMPLES[0].prompt for _, params in found)


def test_a_pasted_text_and_typed_text(open_app) -> None:
    at = open_app("feature")
    at.radio(key="_dash_source").set_value("text").run()
    assert any("Paste a text" in i.value for i in at.info)
    text = "Is this a dagger which I see before me, the handle toward my hand?<|endoftext|>" * 6
    at.text_area[0].input(text)
    next(b for b in at.button if b.label == "Read this text").click().run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    read = next(m for m in at.metric if m.label == "Text tokens read").value
    assert 0 < int(read.replace(",", "")) < 200
    at.text_input(key="_dash_try").input("wherefore art thou").run()
    assert_healthy(at)
    assert any(m.value.startswith("Largest here") for m in at.caption)
    assert len(charts(at)) == 2  # both histograms, of the pasted text


def test_the_histogram_chart_is_valid_vega_lite() -> None:
    from feature_lens_app import charts as builders

    spec = builders.histogram_bars([0.0, 0.5, 1.0], [3, 0], title="t", value="activation").to_dict()  # validates
    assert spec["encoding"]["x"]["bin"] == "binned" and spec["encoding"]["x2"]["field"] == "end"


def test_the_causal_panels_list_the_shipped_edges_as_links(open_app) -> None:
    import feature_lens_core as flc
    from feature_lens_core.feature_data import causal_panel

    at = open_app("feature")
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert any(e.label.startswith("Why this label: ") for e in at.expander)
    titles = [m.value for m in at.markdown]
    assert "**Causes across the corpus**" in titles and "**Effects across the corpus**" in titles
    panel = causal_panel(flc.load_sae("toy", EXAMPLES[0].sae), EXAMPLES[0].feature)
    assert panel is not None and panel.upstream and panel.downstream
    links = [(label, params) for label, params in _links(at) if " · mean " in label]
    expected = [(e.sae, str(e.feature)) for e in (*panel.upstream, *panel.downstream)]
    assert [(params["sae"], params["feature"]) for _, params in links] == expected
    for (label, params), edge in zip(links, (*panel.upstream, *panel.downstream), strict=True):
        assert label.startswith(f"{edge.sae} #{edge.feature} ") and f"in {edge.frequency:.0%}" in label
        assert params["prompt"] == EXAMPLES[0].prompt and edge.sae in params["saes"].split(",")
