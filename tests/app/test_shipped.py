"""The shipped worked-example results are what the core computes now, view by view (they cannot go stale)."""

from __future__ import annotations

import json

import pytest

from feature_lens_app import shipped

pytestmark = [pytest.mark.app, pytest.mark.slow]


def _close(stored, live) -> None:
    """Equal structures, floats to float32's precision (1e-5 relative, 1e-5 absolute for scores that nearly cancel,
    against largest scores of about 1): the scores are float32 sums whose order, and so their last bits, depend on
    the number of threads."""
    if isinstance(stored, float) or isinstance(live, float):
        assert stored == pytest.approx(live, rel=1e-5, abs=1e-5)
    elif isinstance(stored, dict):
        assert stored.keys() == live.keys()
        for key in stored:
            _close(stored[key], live[key])
    elif isinstance(stored, list):
        assert len(stored) == len(live)
        for a, b in zip(stored, live, strict=True):
            _close(a, b)
    else:
        assert stored == live


@pytest.mark.parametrize("view", shipped.views(), ids=lambda v: f"{v.kind}-{v.sae}-{v.feature}-{v.pos}")
def test_shipped_results_equal_the_core_now(view) -> None:
    entries = {json.dumps(e["view"], sort_keys=True): e for e in json.loads(shipped.RESULTS.read_text())}
    stored = entries.get(json.dumps(shipped.state.to_params(view), sort_keys=True))
    assert stored is not None, "a shipped view is missing: run `python -m feature_lens_app.shipped`"
    _close(stored, json.loads(json.dumps(shipped.compute(view))))


def test_the_landing_view_is_shipped_and_read_without_the_heavy_libraries() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from feature_lens_app import shipped, state; found = shipped.lookup(state.DEFAULT); "
        "print(found is not None and len(found.rankings['upstream']) > 0, "
        "sorted({'torch', 'transformer_lens', 'sae_lens'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"
