"""Every page on the built-in model through AppTest: renders, state in the URL, clicks move the target."""

from __future__ import annotations

import pytest

from feature_lens_app.examples import EXAMPLES
from feature_lens_app.state import KEYS

from .helpers import assert_healthy, charts, errors, open_expander, sidebar_values

pytestmark = [pytest.mark.app, pytest.mark.slow]


def test_landing_page_shows_the_worked_example(open_app) -> None:
    at = open_app(kind="feature")
    assert_healthy(at)
    assert not errors(at), errors(at)
    specs = charts(at)
    bars = {key: spec for key, spec in specs.items() if key.startswith("bars_")}
    assert {key.split("_")[1] for key in bars} == {"upstream", "downstream"}
    for spec in bars.values():
        assert spec["params"][0]["name"] == "pick"
        assert spec["encoding"]["color"]["scale"]["domainMid"] == 0
    assert any(key.startswith("strip_") for key in specs), "the token strip is missing"
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download JSON"]
    assert len(at.dataframe) == 1  # the features active at the target's token; the table is drawn once opened
    open_expander(at, "explore_table")
    table = at.dataframe[-1].value
    assert len(table) > 0 and {"direction", "label", "score", "activation"} <= set(table.columns)
    # The whole view is in the URL, so the address bar is a shareable link.
    assert set(KEYS) <= set(at.query_params)
    assert at.query_params["prompt"] == EXAMPLES[0].prompt


@pytest.mark.parametrize(
    ("page", "title"),
    [
        ("feature", f"Feature #{EXAMPLES[0].feature} of {EXAMPLES[0].sae}"),
        ("compare", "When can the cheap estimate be trusted?"),
        ("how_it_works", "How it works"),
        ("graph", "The circuit graph"),
        ("prompts", "Across many prompts"),
    ],
)
def test_every_page_renders(open_app, page: str, title: str) -> None:
    at = open_app(page)
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert at.title[0].value == title
    assert at.sidebar.text_area(key="prompt").value == EXAMPLES[0].prompt  # the shared sidebar is there


def test_compare_page_plots_both_estimates_and_their_agreement(open_app) -> None:
    at = open_app("compare", direction="upstream")
    assert_healthy(at)
    (scatter,) = charts(at).values()
    assert len(scatter["layer"]) == 2  # the points and the y = x diagonal
    agreement = at.dataframe[0].value
    assert set(agreement["method"]) == {"attribution", "direct", "integrated"}
    cost = at.dataframe[1].value
    assert len(cost) == 4 and (cost["seconds"] >= 0).all()


def test_feature_page_neighbour_click_moves_the_target(open_app) -> None:
    at = open_app("feature")
    assert_healthy(at)
    buttons = [b for b in at.button if b.key and b.key.startswith("nb_upstream_")]
    assert buttons, "no upstream neighbours to click"
    before = (at.session_state["sae"], at.session_state["feature"], at.session_state["pos"])
    buttons[0].click().run()
    after = (at.session_state["sae"], at.session_state["feature"], at.session_state["pos"])
    assert after != before
    assert at.query_params["feature"] == str(after[1]) and at.query_params["sae"] == after[0]
    assert at.title[0].value == f"Feature #{after[1]} of {after[0]}"
    assert_healthy(at)


def test_changing_method_keeps_other_inputs(open_app) -> None:
    at = open_app(kind="feature")
    before = sidebar_values(at)
    at.sidebar.radio(key="method").set_value("direct").run()
    assert_healthy(at)
    after = sidebar_values(at)
    assert after.pop("method") == "direct"
    before.pop("method")
    assert after == before
    assert at.query_params["method"] == "direct"


def test_a_copied_url_restores_the_view(open_app) -> None:
    first = open_app(direction="upstream", method="direct", feature=str(EXAMPLES[0].feature))
    link = {key: first.query_params[key] for key in KEYS}
    second = open_app(**link)
    assert sidebar_values(second) == sidebar_values(first)
    assert_healthy(second)


def test_example_picker_loads_prompt_and_target(open_app) -> None:
    at = open_app(prompt="Some other text")
    at.sidebar.selectbox(key="_example").set_value(EXAMPLES[-1].title).run()
    assert at.session_state["prompt"] == EXAMPLES[-1].prompt
    assert (at.session_state["sae"], at.session_state["feature"], at.session_state["pos"]) == (
        EXAMPLES[-1].sae,
        EXAMPLES[-1].feature,
        EXAMPLES[-1].position,
    )
    assert_healthy(at)


@pytest.mark.parametrize("page", ["feature", "compare", "how_it_works"])
def test_a_page_run_without_the_entrypoint_draws_the_frame_itself(open_page_alone, page: str) -> None:
    at = open_page_alone(page, method="direct")
    assert_healthy(at)
    assert at.sidebar.radio(key="method").value == "direct"  # state came from the URL
    assert at.sidebar.text_area(key="prompt").value == EXAMPLES[0].prompt
    assert at.query_params["method"] == "direct"


def test_a_new_prompt_moves_a_target_that_no_longer_fires(open_app) -> None:
    import feature_lens_core as flc

    prompt = "To be, or not to be, that is the question."
    at = open_app(kind="feature")
    at.sidebar.text_area(key="prompt").input(prompt).run()
    assert_healthy(at)
    assert not errors(at), errors(at)
    assert at.session_state["sae"] == EXAMPLES[0].sae  # same SAE, a feature that fires on the last token
    assert at.session_state["pos"] == len(flc.load_model("toy").to_str_tokens(prompt)) - 1
    assert any(key.startswith("bars_") for key in charts(at))


def test_a_charts_table_twin_is_drawn_only_while_open_and_lists_the_charts_bars(open_app) -> None:
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    from feature_lens_app.markup import plain

    at = open_app(kind="feature")
    assert [e.label for e in at.expander].count("Show as a table") == 2
    assert not at.table  # closed: nothing drawn, so a click redraws no table nobody looks at
    open_expander(at, "twin_upstream")
    assert_healthy(at)
    (twin,) = at.table
    (chart,) = [e for e in at.get("vega_lite_chart") if (e.key or "").startswith("bars_upstream")]
    bars = convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data)
    rows = twin.value
    assert rows["label"].tolist() == bars["label"].map(plain).tolist()  # escaped: a table cell renders markdown
    assert rows["score"].tolist() == [f"{score:+.4f}" for score in bars["score"]]
    # It stays open on the next view (another method here), so a keyboard user keeps their table, and after a
    # view that does not draw it (downstream only), which drops an undrawn widget's state.
    at.sidebar.radio(key="method").set_value("direct").run()
    assert len(at.table) == 1
    at.sidebar.radio(key="direction").set_value("downstream").run()
    assert not at.table
    at.sidebar.radio(key="direction").set_value("both").run()
    assert len(at.table) == 1 and not at.warning, [w.value for w in at.warning]
