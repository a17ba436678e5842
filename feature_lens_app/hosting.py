"""Hosted mode (`FEATURE_LENS_HOSTED=1`): limits that keep a public, shared server alive.

On Streamlit Community Cloud one process with about 2.7 GB of memory serves every visitor,
so a single request must not be able to exhaust it: prompts, SAE counts and the exact
(activation-patching) work per request are capped, caches are kept small, and nobody may
read files from the server's disk through a "local SAE folder".
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
    cache_entries: int


LOCAL = Limits(
    hosted=False,
    max_prompt_chars=2000,
    max_saes=None,
    candidates=None,
    allow_local_paths=True,
    hub_models=None,
    cache_entries=256,
)
HOSTED = Limits(
    hosted=True,
    max_prompt_chars=300,
    max_saes=6,
    candidates=32,
    allow_local_paths=False,
    hub_models=("gpt2-small", "pythia-70m-deduped"),
    cache_entries=64,
)


def is_hosted() -> bool:
    """Whether the env var `FEATURE_LENS_HOSTED` turns hosted mode on (`1`, `true`, `yes`)."""
    return os.environ.get("FEATURE_LENS_HOSTED", "").strip().lower() in {"1", "true", "yes", "on"}


def limits() -> Limits:
    """The limits in force for this process (read each call so tests can flip the env var)."""
    return HOSTED if is_hosted() else LOCAL
