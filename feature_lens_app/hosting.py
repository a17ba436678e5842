"""Hosted mode (`FEATURE_LENS_HOSTED=1`): limits that keep a public, shared server alive.

On Streamlit Community Cloud one process with about 2.7 GB of memory serves every visitor,
so a single request must not be able to exhaust it: prompts, SAE counts and the exact
(activation-patching) work per request are capped, caches are kept small, and nobody may
read files from the server's disk through a "local SAE folder".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from feature_lens_core import catalog
from feature_lens_core.errors import FeatureLensError


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. `None` means unlimited."""

    hosted: bool
    max_prompt_chars: int | None
    max_saes: int | None
    # Activation patching ablates each candidate node in turn; in hosted mode it only patches
    # the top `candidates` nodes pre-selected by the cheap attribution estimate.
    candidates: int | None
    allow_local_paths: bool
    # Hub models a request may load; `None` allows all. Hosted: only models that fit in ~2.7 GB with SAEs.
    hub_models: tuple[str, ...] | None
    cache_entries: int  # per cached result function (rankings, activations, tokens, dashboards)
    # SAEs kept loaded: a hub SAE can take hundreds of MB (one of gpt2-small-res-jb's is about 150 MB).
    sae_entries: int
    max_batch_prompts: int  # prompts in one "across prompts" run: each is a full ranking
    graph_jobs: int  # target graphs queued or being built server-wide (one per visitor; see work_queue)


LOCAL = Limits(
    hosted=False,
    max_prompt_chars=2000,
    max_saes=None,
    candidates=None,
    allow_local_paths=True,
    hub_models=None,
    cache_entries=256,
    sae_entries=24,
    max_batch_prompts=64,
    graph_jobs=8,
)
HOSTED = Limits(
    hosted=True,
    max_prompt_chars=300,
    max_saes=6,
    candidates=32,
    allow_local_paths=False,
    hub_models=("gpt2-small", "pythia-70m-deduped"),
    cache_entries=64,
    sae_entries=8,
    max_batch_prompts=12,
    graph_jobs=3,
)
NO_LOCAL = "this hosted app only loads built-in SAEs and SAEs from SAE-Lens's directory (no local folders)"


def is_hosted() -> bool:
    """Whether the env var `FEATURE_LENS_HOSTED` turns hosted mode on (`1`, `true`, `yes`)."""
    return os.environ.get("FEATURE_LENS_HOSTED", "").strip().lower() in {"1", "true", "yes", "on"}


def limits() -> Limits:
    """The limits in force for this process (read each call so tests can flip the env var)."""
    return HOSTED if is_hosted() else LOCAL


def ray_address() -> str | None:
    """The Ray cluster the app's long corpus runs go to (env var `FEATURE_LENS_RAY_ADDRESS`: `auto`, `local`,
    `HOST:PORT` or `ray://HOST:PORT`), or None to run them in this process."""
    return os.environ.get("FEATURE_LENS_RAY_ADDRESS", "").strip() or None


GRAPH_ABANDON_S = 30.0


def graph_abandon_s() -> float:
    """Seconds a graph build is kept while no visitor's page asks about it (env var
    `FEATURE_LENS_GRAPH_ABANDON_S`, default 30): past that, its visitor has closed the tab or left, and the
    build is cancelled. A waiting page asks four times a second, but a rerun on a loaded server can take
    seconds, so a value under 1 would cancel builds their visitor is still waiting for and is refused."""
    text = os.environ.get("FEATURE_LENS_GRAPH_ABANDON_S", "").strip()
    if not text:
        return GRAPH_ABANDON_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 1 <= seconds < math.inf:
        raise FeatureLensError(
            f"FEATURE_LENS_GRAPH_ABANDON_S is {text!r}: give the seconds (1 or more) a graph build nobody's page "
            "asks about is kept, or unset it for 30."
        )
    return seconds


def model_allowed(model: str, limits: Limits) -> bool:
    """Whether a request may load this model: the built-in one, or a hub model the limits allow."""
    return model == catalog.BUILTIN_MODEL or limits.hub_models is None or model in limits.hub_models


def sae_allowed(name: str, limits: Limits) -> bool:
    """Whether a request may name this SAE: anything locally; hosted, only catalog names, so never a path."""
    return limits.allow_local_paths or name in catalog.builtin_sae_names() or name in catalog.hub_saes()
