"""No network: hub models and SAEs fail within seconds, name what could not be fetched and offer the built-in model.

The hub is made unreachable for real, not by replacing the loaders: either feature-lens is told it is
offline (FEATURE_LENS_OFFLINE=1, with HF_HUB_OFFLINE unset), or every socket off loopback is refused, or
the hub's host is an address that never answers, so the connection check has to time out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from huggingface_hub.utils import are_progress_bars_disabled

from feature_lens_app import loading as app_loading
from feature_lens_core import load_model, load_sae, loading
from feature_lens_core.errors import FeatureLensError
from tests.app.helpers import assert_healthy, charts, errors

HUB_MODEL = "gpt2-small"
HUB_SAE = "gpt2-small-res-jb/blocks.8.hook_resid_pre"
FAST_S = 5.0  # "within a few seconds": the connection check's 3 s timeout, plus slack for 2 shared cores
OFFER = "Use the built-in model instead: model 'toy'"


@pytest.fixture(params=["hub_down", "sockets_blocked"])
def unreachable(request: pytest.FixtureRequest) -> str:
    """The hub unreachable in each of the two ways."""
    request.getfixturevalue(request.param)
    return request.param


@pytest.mark.integration
def test_api_names_what_could_not_be_fetched(unreachable: str) -> None:
    for load, what in (
        (lambda: load_model(HUB_MODEL), f"model '{HUB_MODEL}'"),
        (lambda: load_sae(HUB_MODEL, HUB_SAE), f"SAE '{HUB_SAE}'"),
    ):
        start = time.perf_counter()
        with pytest.raises(FeatureLensError) as raised:
            load()
        assert time.perf_counter() - start < FAST_S
        assert f"Could not fetch {what} from the Hugging Face hub" in str(raised.value)
        assert OFFER in str(raised.value)


@pytest.mark.integration
def test_a_hub_that_never_answers_costs_one_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """An address that drops packets (TEST-NET-1, reserved for documentation) makes the check wait out its
    timeout; then the hub counts as down for a while, so the next name fails at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FEATURE_LENS_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "HUB_HOST", "192.0.2.1")
    monkeypatch.setattr(loading, "_hub_down_until", 0.0)
    start = time.perf_counter()
    with pytest.raises(FeatureLensError, match=f"Could not fetch model '{HUB_MODEL}'"):
        load_model(HUB_MODEL)
    assert time.perf_counter() - start < loading.HUB_TIMEOUT_S + 2
    start = time.perf_counter()
    with pytest.raises(FeatureLensError, match=f"Could not fetch SAE '{HUB_SAE}'"):
        load_sae(HUB_MODEL, HUB_SAE)
    assert time.perf_counter() - start < 0.5


@pytest.mark.integration
def test_cli_in_process_fails_in_one_line(unreachable: str, run_cli) -> None:
    for argv, what in (
        (["activations", f"--model={HUB_MODEL}", f"--sae={HUB_SAE}", "--prompt=Hello"], f"model '{HUB_MODEL}'"),
        (["saes", f"--model={HUB_MODEL}"], "SAE 'gpt2-small-"),  # listing needs each SAE's config
    ):
        start = time.perf_counter()
        status, out, err = run_cli(*argv)
        assert time.perf_counter() - start < FAST_S
        assert status == 2 and out == "" and err.count("\n") == 1
        assert f"error: Could not fetch {what}" in err and OFFER in err


@pytest.mark.integration
@pytest.mark.slow
def test_cli_subprocess_offline_fails_in_one_line() -> None:
    """`python -m feature_lens_core` as a user runs it, told it is offline: status 2, one line, no traceback."""
    env = {**os.environ, "FEATURE_LENS_OFFLINE": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    argv = ["rank", f"--model={HUB_MODEL}", "--prompt=Hello", f"--feature={HUB_SAE}:0@1", f"--saes={HUB_SAE}"]
    argv += ["--direction=upstream", "--method=attribution"]
    done = subprocess.run(
        [sys.executable, "-m", "feature_lens_core", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"Could not fetch model '{HUB_MODEL}'" in done.stderr and OFFER in done.stderr


@pytest.mark.app
@pytest.mark.slow
def test_app_choosing_a_hub_model_fails_fast_and_offers_the_built_in_one(unreachable: str, open_app) -> None:
    at = open_app()
    prompt = at.session_state["prompt"]
    if unreachable == "hub_down":
        # Told it is offline, the picker offers only the hub models the local cache holds (none here); a shared
        # link can still name one.
        assert HUB_MODEL not in at.sidebar.selectbox(key="model").options
        start = time.perf_counter()
        at = open_app(model=HUB_MODEL, prompt=prompt)
    else:
        start = time.perf_counter()
        at.sidebar.selectbox(key="model").set_value(HUB_MODEL).run()
    assert time.perf_counter() - start < 30  # a page run on 2 shared cores, with the network check inside
    assert_healthy(at)
    (message,) = errors(at)
    assert f"model '{HUB_MODEL}'" in message and "built-in model" in message
    assert at.session_state["model"] == HUB_MODEL and at.session_state["prompt"] == prompt
    next(b for b in at.button if b.label == "Use the built-in model instead").click().run()
    assert_healthy(at)
    assert not errors(at) and at.session_state["model"] == "toy"
    assert any(key.startswith("bars_") for key in charts(at))


@pytest.mark.unit
def test_downloads_say_what_they_fetch() -> None:
    """Progress while online: the app's spinner names the hub model or SAE it is downloading (with elapsed time);
    Hugging Face's byte-level progress bars are left on for the CLI's stderr and the server's log."""
    assert app_loading.loading_text("toy") == "Loading the built-in model…"
    hub_text = app_loading.loading_text(HUB_MODEL)
    assert f"model {HUB_MODEL}" in hub_text and "downloads" in hub_text
    assert HUB_SAE in app_loading.loading_text(HUB_MODEL, HUB_SAE)
    assert not are_progress_bars_disabled()
