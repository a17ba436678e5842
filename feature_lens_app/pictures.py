"""Pictures of the worked examples' ranking charts, as chromium drew them, shown in the chart's place until the
live chart is drawn.

On a first visit, Streamlit's chart library (about 150 files) arrives two to three seconds after the rest of the
page (benchmarks/RESULTS.md), and a new browser tab parses it again. A markdown image is drawn with the page's
first message, so the picture is there at once; a style rule hides it as soon as the live chart has drawn its
marks, in the same place, and from then on the chart answers clicks as usual.

A picture is named by a digest of the chart it shows (`digest`: its Vega-Lite spec, numbers to three significant
digits), so it is shown only in the place of that very chart: a change to the data, the labels or the chart's
code makes a new digest, and the picture no longer matches anything until `python -m scripts.draw_pictures`
retakes it (tests/app/test_pictures.py fails meanwhile).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).with_name("pictures")
KEY_PREFIX = "pictured"  # container keys `pictured_<chart key>_<digest>`: the style rule and the picture taker use it
SIGNIFICANT = 3  # digits of every number in the digest: a bar 0.1% longer looks the same
# Hide the picture once the live chart in the same container has drawn (Vega's `marks` element), hide Streamlit's
# loading placeholder under the picture meanwhile, and hide this style's own element.
STYLE = f"""<style>
[class*="st-key-{KEY_PREFIX}_"]:has([data-testid="stVegaLiteChart"] .marks) > :first-child,
[class*="st-key-{KEY_PREFIX}_"] [data-testid="stSkeleton"],
[class*="st-key-{KEY_PREFIX}_"] > :has(style) {{ display: none; }}
</style>"""
ALT = "The chart, as a picture until the interactive chart has loaded"


def _rounded(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, float):
        if isinstance(value, dict):
            return {k: _rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [_rounded(v) for v in value]
        return value
    return float(f"{value:.{SIGNIFICANT}g}")


def digest(spec: dict[str, Any]) -> str:
    """A short digest of what a Vega-Lite `spec` draws: its JSON, every number to `SIGNIFICANT` digits.

    >>> digest({"datasets": {"data-1f8e": [{"score": 0.123456}]}, "data": {"name": "data-1f8e"}}) == digest(
    ...     {"datasets": {"data-36df": [{"score": 0.123401}]}, "data": {"name": "data-36df"}}
    ... )
    True
    >>> digest({"datasets": {"d": [{"score": 0.1234}]}}) == digest({"datasets": {"d": [{"score": 0.1244}]}})
    False
    """
    text = json.dumps(_rounded(spec), sort_keys=True, separators=(",", ":"))
    # Altair names each dataset by a hash of its exact numbers: name them by their order instead.
    for index, name in enumerate(spec.get("datasets", {})):
        text = text.replace(json.dumps(name), f'"dataset-{index}"')
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def container_key(chart_key: str, spec_digest: str) -> str:
    """The key of the container that holds the chart keyed `chart_key`, whose spec has this digest, and its
    picture; the digest comes last, for the picture taker (`digest_of`)."""
    return f"{KEY_PREFIX}_{chart_key}_{spec_digest}"


def digest_of(container_class: str) -> str | None:
    """The digest in a picture container's CSS classes (Streamlit adds `st-key-<key>`), else None.

    >>> digest_of("stVerticalBlock st-key-pictured_bars_upstream_ab12_0123456789abcdef st-emotion-cache-1")
    '0123456789abcdef'
    """
    for name in container_class.split():
        if name.startswith(f"st-key-{KEY_PREFIX}_"):
            return name.rsplit("_", 1)[1]
    return None


def path(spec_digest: str) -> Path:
    """Where the picture of the chart with this digest is kept."""
    return FOLDER / f"{spec_digest}.png"


@functools.cache
def markdown(spec_digest: str) -> str | None:
    """The picture of the chart with this digest as a markdown image (a data URL), or None when there is none."""
    found = path(spec_digest)
    if not found.is_file():
        return None
    data = base64.b64encode(found.read_bytes()).decode("ascii")
    return f"![{ALT}](data:image/png;base64,{data})"
