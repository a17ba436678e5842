"""The guided tour: its steps are the shipped views, what each step's words cite is what the ranking shows, and
"Next step" walks from the landing view through the worked examples to How it works, one history entry each."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from feature_lens_app import shipped, state, tour
from feature_lens_app.examples import EXAMPLES

from .helpers import assert_healthy

pytestmark = [pytest.mark.app, pytest.mark.slow]


def test_the_steps_are_shipped_views_landing_first() -> None:
    # Shipped, so that on a fresh server every step is drawn at once while the model loads.
    assert all(shipped.lookup(s.view) is not None for s in tour.steps())
    assert tour.steps()[0].view == state.DEFAULT and tour.step_of(state.DEFAULT) == 0
    assert tour.step_of(replace(state.DEFAULT, method="activation")) is None
    # A feature view reached from the logit view keeps its token, and is still that step.
    first = tour.steps()[1].view
    assert tour.step_of(replace(first, token=",")) == 1 and tour.step_of(replace(first, pos=7)) is None


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.title)
def test_each_feature_a_story_cites_leads_a_ranking_of_its_view(example) -> None:
    # The shipped rankings equal what the core computes now (tests/app/test_shipped.py), so this checks the words.
    (step,) = [s for s in tour.steps() if s.story == example.story]
    found = shipped.lookup(step.view)
    assert found is not None
    rankings = {direction: frame.to_dict("records") for direction, frame in found.rankings.items()}
    # Each "#N" with the layer the story gives it ("a layer-0 ' thou' feature (#834)").
    cited = {(f"L{layer}", int(n)) for layer, n in re.findall(r"layer-(\d)(?:(?!layer-)[^#])*#(\d+)", example.story)}
    leading = {(row["sae"][:2], int(row["feature"])) for rows in rankings.values() for row in rows[:3]}
    assert len(cited) == example.story.count("#") and cited <= leading, (cited, leading)
    # What drives it leads upstream ("led by", "driven by", "fed by").
    first_cited = min(cited, key=lambda c: example.story.index(f"#{c[1]}"))
    top_upstream = next(row for row in rankings["upstream"] if row["feature"] >= 0)
    assert (top_upstream["sae"][:2], int(top_upstream["feature"])) == first_cited


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_next_step_walks_the_tour_to_how_it_works(open_app) -> None:
    at = open_app()
    steps = tour.steps()
    for index, step in enumerate(steps):
        assert_healthy(at)
        assert f"**Guided tour, {index + 1} of {len(steps)}.** {step.story}" in _markdown(at)
        assert {k: at.query_params[k] for k in state.KEYS} == state.to_params(step.view)
        if index + 1 < len(steps):
            at.button(key="tour_next").click().run()
    assert not [b for b in at.button if b.key == "tour_next"]
    (onward,) = [link for link in at.get("page_link") if link.proto.label == "Next: how it works"]
    assert onward.proto.page.endswith("how_it_works")


def test_a_view_off_the_tour_shows_no_tour(open_app) -> None:
    at = open_app(method="activation")
    assert_healthy(at)
    assert "Guided tour" not in _markdown(at)
