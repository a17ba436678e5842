"""SAE-Lens's offline directory of releases, as the catalog reads it: the same names as a full parse, and
without importing SAE-Lens (a fresh server's sidebar lists the hub models before torch is loaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_lens_core import catalog

pytestmark = pytest.mark.integration


def test_the_hub_models_are_read_from_the_directory() -> None:
    models = catalog.hub_models()
    assert models == sorted({entry.model for entry in catalog.hub_saes().values()})
    assert "gpt2-small" in models and len(models) > 10


def test_the_model_picker_lists_imports_no_model_library_with_an_empty_cache(tmp_path: Path) -> None:
    """What a fresh server's first sidebar reads: the hub models and, offline, which of them are cached."""
    code = (
        "import sys; from feature_lens_core import catalog; "
        "assert catalog.hub_models() and catalog.offline_mode() and catalog.cached_models() == {}; "
        "print(sorted(m for m in ('sae_lens', 'torch', 'transformers', 'transformer_lens') if m in sys.modules))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.strip() == "[]"
