"""Bad input through a real browser and `streamlit run`: a mangled shared link, and a prompt full of markup.

AppTest (tests/integration/test_matrix.py) sees the HTML and markdown the app sends; these check what
chromium makes of them.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

import feature_lens_core as flc
from feature_lens_app.examples import EXAMPLES
from tests.browser import helpers
from tests.checks import MARKUP

pytestmark = [pytest.mark.browser, pytest.mark.slow]
EX = EXAMPLES[0]


@pytest.fixture
def page(browser):
    """A new session whose JavaScript dialogs (an injected `alert`) are recorded in `page.dialogs`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def _open(page, url: str) -> None:
    page.goto(url)
    helpers.wait_idle(page)
    helpers.bars(page, 1).first.wait_for(timeout=helpers.WAIT_MS)  # the rankings are drawn
    helpers.wait_idle(page)
    assert page.get_by_test_id("stException").count() == 0


def test_a_mangled_link_keeps_what_it_can(page, server: str) -> None:
    # Broken percent escapes, empty and nameless parameters, a repeated key (the last one counts), a number
    # written as a float and an unknown method.
    query = f"feature=%ZZ&pos=&&=x&method=magic&feature=1e9&{urlencode({'prompt': EX.prompt, 'kind': 'feature'})}"
    _open(page, f"{server}/?{query}")
    errors = page.get_by_test_id("stAlertContentError").all_inner_texts()
    assert len(errors) == 1 and "Parts of this link could not be used" in errors[0], errors
    assert "feature='1e9'" in errors[0] and "pos=''" in errors[0] and "method='magic'" in errors[0]
    assert helpers.params(page)["prompt"] == EX.prompt  # kept, and the URL now holds the view shown
    assert helpers.params(page)["method"] == "attribution"


def test_markup_in_the_prompt_is_shown_as_text(page, server: str) -> None:
    acts = flc.activations(flc.load_model("toy"), flc.load_sae("toy", EX.sae), MARKUP)
    feature = int(acts[acts["position"] == 1]["feature"].iloc[0])  # position 1 is the token "<"
    _open(
        page,
        f"{server}/?{urlencode({'prompt': MARKUP, 'sae': EX.sae, 'feature': feature, 'pos': 1, 'kind': 'feature'})}",
    )
    main = page.get_by_test_id("stMain")
    assert not page.dialogs
    assert main.locator("script, img, b, a[href^='javascript']").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    target = main.locator("p", has_text="Target:").first.inner_text()
    assert "at '<' (position 1)" in target, target
    assert "\\u001b" in main.inner_text()  # the escape character is shown, not obeyed
