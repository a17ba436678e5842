"""Take the pictures of the worked examples' ranking charts (`feature_lens_app.pictures`): `python -m
scripts.draw_pictures` (about a minute; needs Debian's chromium).

For each shipped view (`feature_lens_app.shipped.views`) it starts a fresh `streamlit run` (the tests' server),
opens the view in chromium at 1440x900 while the page still draws the shipped results, and saves each ranking
chart's drawing, at twice the screen's resolution so that it stays sharp on a high-density display, under its
container's digest. Pictures no chart has any more are removed. Each file is written whole, then renamed.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' server is imported from the checkout

from feature_lens_app import pictures, shipped, state  # noqa: E402
from feature_lens_core.files import write_atomically  # noqa: E402
from tests.browser.helpers import WAIT_MS  # noqa: E402
from tests.streamlit_server import CHROMIUM, CHROMIUM_ARGS, need_browser, streamlit_server  # noqa: E402

CHARTS = f"[class*='st-key-{pictures.KEY_PREFIX}_']"


def _small(png: bytes) -> bytes:
    """The screenshot in 256 colours: a third of the size, and the page's first message carries it."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True
    )
    return out.getvalue()


def take(view: state.ViewState, expected: int) -> dict[str, bytes]:
    """The `expected` ranking charts of `view` as a fresh server first draws them (from the shipped results),
    by digest."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=2).new_page()
        with streamlit_server() as server:
            page.goto(f"{server.url}/?{urlencode(state.to_params(view))}")
            drawn = f"{CHARTS} [data-testid='stVegaLiteChart'] path[aria-roledescription='bar']"
            page.wait_for_function(
                "([drawn, expected]) => new Set([...document.querySelectorAll(drawn)].map("
                "e => e.closest('[data-testid=\"stVegaLiteChart\"]'))).size === expected",
                arg=[drawn, expected],
                timeout=WAIT_MS,
            )
            page.wait_for_timeout(500)  # Vega's last layout pass
            if "Precomputed" not in page.inner_text("body"):
                raise SystemExit("the model loaded before the charts were drawn: run again on a quieter machine")
            taken = {}
            for box in page.locator(CHARTS).all():
                found = pictures.digest_of(box.get_attribute("class") or "")
                assert found is not None, "a picture container without a digest"
                taken[found] = _small(box.get_by_test_id("stVegaLiteChart").locator("svg.marks").screenshot())
        browser.close()
    return taken


def main() -> None:
    need_browser()
    pictures.FOLDER.mkdir(exist_ok=True)
    kept: set[str] = set()
    for view in shipped.views():
        found = shipped.lookup(view)
        assert found is not None, "a shipped view is missing: run `python -m feature_lens_app.shipped` first"
        for name, data in take(view, expected=len(found.rankings)).items():
            write_atomically(pictures.path(name), lambda temporary, data=data: temporary.write_bytes(data))
            kept.add(name)
            print(f"{pictures.path(name).relative_to(ROOT)}: {len(data) / 1024:.0f} KiB")
    for old in pictures.FOLDER.glob("*.png"):
        if old.stem not in kept:
            old.unlink()


if __name__ == "__main__":
    main()
