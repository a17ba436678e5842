"""The guided tour: its steps are the shipped views, what each step's words cite is what the ranking shows, and
"Next step" walks from the landing view through the worked examples to How it works, one history entry each."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from feature_lens_app import shipped, state, tour
from feature_lens_app.examples import EXAMPLES

from .helpers import assert_healthy

pytestmark = [pytest.mark.app, pytest.mark.slow]


def test_the_steps_are_the_shipped_views_landing_first() -> None:
    # Shipped, so that on a fresh server every step is drawn at once while the model loads.
    assert [s.view for s in tour.steps()] == shipped.views()
    assert tour.steps()[0].view == state.DEFAULT and tour.step_of(state.DEFAULT) == 0
    assert tour.step_of(replace(state.DEFAULT, method="activation")) is None


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.title)
def test_each_feature_a_story_cites_leads_a_ranking_of_its_view(example) -> None:
    # The shipped rankings equal what the core computes now (tests/app/test_shipped.py), so this checks the words.
    (step,) = [s for s in tour.steps() if s.story == example.story]
    entries = {json.dumps(e["view"], sort_keys=True): e for e in json.loads(shipped.RESULTS.read_text())}
    rankings = entries[json.dumps(state.to_params(step.view), sort_keys=True)]["rankings"]
    cited = [int(n) for n in re.findall(r"#(\d+)", example.story)]
    leading = {int(row["feature"]) for rows in rankings.values() for row in rows[:3]}
    assert cited and set(cited) <= leading, (cited, leading)


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
