"""Hosted mode (FEATURE_LENS_HOSTED=1): prompt length, SAE count, activation-patching work and cache sizes are
capped, and a request over a cap is told so in plain words. Prompt and local-path caps on the URL are tested in
tests/app/test_bad_input.py::test_hosted_mode_caps_requests and tests/app/test_state.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feature_lens_app import hosting, resources, state
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import catalog
from feature_lens_core.errors import FeatureLensError
from tests.app.helpers import assert_healthy, errors

EX = EXAMPLES[0]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch) -> hosting.Limits:
    monkeypatch.setenv("FEATURE_LENS_HOSTED", "1")
    return hosting.HOSTED


def _cache_caps() -> dict[str, dict[str, dict]]:
    """Every cached function of the app, locally and hosted, read in a fresh interpreter: the caps are fixed
    when the module loads, so it is loaded, then reloaded with FEATURE_LENS_HOSTED=1."""
    script = textwrap.dedent(
        """
        import importlib, inspect, json, os
        from streamlit.runtime.caching.cache_utils import CachedFunc
        import feature_lens_app.resources as r

        def caps():
            return {
                name: {"max_entries": f._info.max_entries, "args": len(inspect.signature(f.__wrapped__).parameters)}
                for name, f in vars(r).items() if isinstance(f, CachedFunc)
            }

        local = caps()
        os.environ["FEATURE_LENS_HOSTED"] = "1"
        importlib.reload(r)
        print(json.dumps({"local": local, "hosted": caps()}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "FEATURE_LENS_HOSTED"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.integration
@pytest.mark.slow
def test_every_cache_is_bounded_and_hosted_ones_are_smaller() -> None:
    found = _cache_caps()
    local, hosted_caps = found["local"], found["hosted"]
    assert set(local) == set(hosted_caps) and len(local) >= 10
    for name, cap in hosted_caps.items():
        # A function without arguments has one entry at most; every other one is capped.
        assert cap["args"] == 0 or cap["max_entries"] is not None, name
        assert cap["max_entries"] is None or cap["max_entries"] <= hosting.HOSTED.cache_entries, name
    assert hosted_caps["_sae"]["max_entries"] == hosting.HOSTED.sae_entries < local["_sae"]["max_entries"]
    assert hosted_caps["ranking"]["max_entries"] == hosting.HOSTED.cache_entries < local["ranking"]["max_entries"]
    assert hosted_caps["_model"]["max_entries"] == 2


@pytest.mark.app
@pytest.mark.slow
def test_too_many_saes_are_cut_with_a_notice(hosted: hosting.Limits, open_app) -> None:
    eight = [name for name in catalog.builtin_sae_names() if name != EX.sae][:7] + [EX.sae]
    at = open_app(saes=",".join(eight), sae=EX.sae)
    assert_healthy(at)
    (notice,) = [m for m in errors(at) if m.startswith("Parts of this link")]
    assert f"{len(eight)} SAEs were asked for; this hosted app ranks at most {hosted.max_saes} at once" in notice
    assert len(at.session_state["saes"]) == hosted.max_saes and EX.sae in at.session_state["saes"]
    assert at.sidebar.multiselect(key="saes").proto.max_selections == hosted.max_saes


@pytest.mark.app
@pytest.mark.slow
def test_activation_patching_is_capped_and_says_so(hosted: hosting.Limits, open_app) -> None:
    at = open_app(method="activation", direction="upstream")
    assert_healthy(at)
    assert not errors(at), errors(at)
    notes = [c.value for c in at.caption if "Activation patching was run on the" in c.value]
    assert len(notes) == 1 and f"on the {hosted.candidates} of " in notes[0]
    assert any(
        f"Hosted mode: prompts up to {hosted.max_prompt_chars} characters" in c.value for c in at.sidebar.caption
    )


@pytest.mark.integration
def test_the_loaders_enforce_the_caps_whatever_the_session_holds(hosted: hosting.Limits) -> None:
    """A model outside the hosted list is refused where every load passes, not only when read from the URL."""
    with pytest.raises(FeatureLensError, match="not available on this hosted app"):
        resources.model("gpt2-xl")
    with pytest.raises(FeatureLensError, match="no local folders"):
        resources.sae("toy", "./feature_lens_core/zoo/toy/saes/L0.mlp_out")


@pytest.mark.unit
def test_no_background_work_in_hosted_mode(hosted: hosting.Limits, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetcher ranks other methods ahead of time locally; hosted, CPU is shared, so it stays idle."""
    submitted = []
    monkeypatch.setattr(resources._prefetcher, "submit", submitted.append)
    resources.prefetch_other_methods(state.DEFAULT)
    assert not submitted
