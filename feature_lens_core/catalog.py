"""What can be loaded: the built-in zoo, SAE-Lens's offline directory of pretrained releases, and which of
the hub's models and SAEs are in the local Hugging Face cache (so they load offline).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.zoo.paths import SAES_DIR

BUILTIN_MODEL = "toy"
BUILTIN_MODEL_TITLE = "shakespeare-3l (built-in)"
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "FEATURE_LENS_OFFLINE")  # set to anything but 0/false/no: do not try the hub


@dataclass(frozen=True)
class HubSae:
    """One SAE of an SAE-Lens release, as listed in the offline directory."""

    release: str
    sae_id: str
    model: str
    neuronpedia_id: str | None
    repo_id: str
    path: str  # the SAE's folder (or file) inside repo_id
    loader: str  # SAE-Lens's name for the code that reads the release's files ("sae_lens", "gemma_2", ...)

    @property
    def name(self) -> str:
        """The name used everywhere in feature-lens: `release/sae_id`."""
        return f"{self.release}/{self.sae_id}"


def builtin_sae_names() -> list[str]:
    """Names of the shipped SAEs, in forward-pass order (layer, then resid_pre, attn, mlp)."""
    order = {"resid_pre": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 3, "resid_post": 4}
    names = [p.name for p in SAES_DIR.iterdir() if (p / "cfg.json").exists()] if SAES_DIR.is_dir() else []
    return sorted(names, key=lambda n: (int(n.split(".")[0][1:]), order.get(n.split(".")[1], 9)))


def offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE or FEATURE_LENS_OFFLINE says not to ask the hub (only the local cache is used)."""
    return any(os.environ.get(flag, "0").strip().lower() not in ("", "0", "false", "no") for flag in OFFLINE_FLAGS)


@functools.cache
def _directory_text() -> str:
    """SAE-Lens's directory of pretrained releases, the YAML file shipped in its wheel (so readable offline).

    Found without importing SAE-Lens (`importlib.resources.files` would import it, and with it torch and
    transformers: ten seconds before a fresh server's sidebar could list the hub models)."""
    spec = importlib.util.find_spec("sae_lens")
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise FeatureLensError("SAE-Lens is not installed: `pip install -r requirements.txt` installs it.")
    return (Path(folders[0]) / "pretrained_saes.yaml").read_text(encoding="utf-8")


def _parse(text: str) -> dict[str, dict]:
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _entries(release: str, value: dict) -> dict[str, HubSae]:
    """The SAEs of one release, from its YAML mapping (the fields SAE-Lens's own directory reads)."""
    loader = value.get("conversion_func") or "sae_lens"
    entries = (
        HubSae(release, sae["id"], value["model"], sae.get("neuronpedia"), value["repo_id"], str(sae["path"]), loader)
        for sae in value["saes"]
    )
    return {entry.name: entry for entry in entries}


@functools.cache
def hub_saes() -> dict[str, HubSae]:
    """Every SAE in SAE-Lens's directory, by `release/sae_id` (parsing it all takes about a second)."""
    releases = _parse(_directory_text())
    return {name: entry for release, value in releases.items() for name, entry in _entries(release, value).items()}


@functools.cache
def _sections() -> dict[str, tuple[int, int]]:
    """Where each release's section of the directory starts and ends: its top-level key's line up to the next."""
    text = _directory_text()
    starts = [(m.group(1), m.start()) for m in re.finditer(r"^([^\s#][^\n]*?):[ \t]*$", text, re.MULTILINE)]
    ends = [start for _, start in starts[1:]] + [len(text)]
    return {release: (start, end) for (release, start), end in zip(starts, ends, strict=True)}


@functools.cache
def _release(release: str) -> dict[str, HubSae]:
    """One release's SAEs, parsed from its own section of the directory only (milliseconds, not a second)."""
    where = _sections().get(release)
    if where is None:
        return {}
    return _entries(release, _parse(_directory_text()[where[0] : where[1]])[release])


def hub_sae(name: str) -> HubSae | None:
    """The directory entry of hub SAE `release/sae_id`, or None if SAE-Lens's directory has no such SAE."""
    release = name.split("/", 1)[0]
    return _release(release).get(name) if "/" in name else None


def hub_models() -> list[str]:
    """TransformerLens model names that SAE-Lens has at least one release for."""
    return sorted({s.model for s in hub_saes().values()})


NEURONPEDIA = "https://www.neuronpedia.org"


def neuronpedia_url(neuronpedia_id: str, feature: int) -> str:
    """Link to a feature's Neuronpedia page: `https://www.neuronpedia.org/{model}/{sae}/{feature}`.

    SAE-Lens's directory writes Neuronpedia ids as `{model}/{sae}` (e.g. `gpt2-small/8-res-jb`), the two
    path segments before the feature index.
    """
    return f"{NEURONPEDIA}/{neuronpedia_id.strip('/')}/{int(feature)}"


def neuronpedia_page(sae_name: str, feature: int) -> str | None:
    """The Neuronpedia page of `feature` of the hub SAE `release/sae_id`, or None when it has none."""
    entry = hub_sae(sae_name)
    return neuronpedia_url(entry.neuronpedia_id, feature) if entry and entry.neuronpedia_id else None


# Files TransformerLens's loading needs from a model's repo; each entry lists alternatives, any one will do.
MODEL_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("model.safetensors", "model.safetensors.index.json"),  # safetensors only: feature-lens never unpickles
    ("tokenizer.json", "tokenizer.model", "vocab.json"),
)
# Files each SAE-Lens loader reads from the SAE's folder. Loaders not listed are checked by their folder alone.
SAE_FILES: dict[str, tuple[str, ...]] = {
    "sae_lens": ("cfg.json", "sae_weights.safetensors"),
    "gemma_2": ("params.npz",),
    "gemma_2_transcoder": ("params.npz",),
}


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache (HF_HUB_CACHE, by default ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _cached(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _shards_missing(repo_id: str, index: Path) -> list[str]:
    """The shards a cached `*.safetensors.index.json` names that are not cached."""
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError):
        return [index.name]
    return [shard for shard in shards if _cached(repo_id, shard) is None]


def missing_from_cache(repo_id: str, needs: Sequence[Sequence[str]]) -> list[str]:
    """Which of `needs` (each a list of alternative file names) have no file in the cached `repo_id`.

    Shards named by a cached safetensors index count as needed. Returns the needs that failed, each written
    as its alternatives joined by " or "; empty when everything is cached.
    """
    missing = []
    for alternatives in needs:
        found = next((path for name in alternatives if (path := _cached(repo_id, name))), None)
        if found is None:
            missing.append(" or ".join(alternatives))
        elif found.name.endswith(".index.json"):
            missing.extend(_shards_missing(repo_id, found))
    return missing


def sae_missing_from_cache(entry: HubSae) -> list[str]:
    """The files of a hub SAE that its SAE-Lens loader would read and the local cache lacks.

    For loaders without a known file list, the SAE's folder (or file) must be in the cached snapshot.
    """
    files = SAE_FILES.get(entry.loader)
    if files is not None:
        return missing_from_cache(entry.repo_id, [(f"{entry.path}/{name}",) for name in files])
    snapshot = _snapshot(entry.repo_id)
    return [] if snapshot is not None and (snapshot / entry.path).exists() else [entry.path]


def _repo_dir(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


def _snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id`'s main branch, if there is one."""
    ref = _repo_dir(repo_id) / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = _repo_dir(repo_id) / "snapshots" / ref.read_text().strip()
    return snapshot if snapshot.is_dir() else None


@functools.cache
def model_repo(name: str) -> str | None:
    """The Hugging Face repo TransformerLens loads model `name` (a name or alias) from; None if it does not know it."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        return None


def cache_bytes(repo_id: str) -> int:
    """Bytes the cached `repo_id` takes on disk (its blobs: every revision and file that was downloaded)."""
    blobs = _repo_dir(repo_id) / "blobs"
    return sum(blob.stat().st_size for blob in blobs.iterdir() if blob.is_file()) if blobs.is_dir() else 0


def cached_models() -> dict[str, int]:
    """The hub models SAE-Lens has releases for that can load from the local cache: name -> bytes on disk.

    A model counts as cached when its config, safetensors weights (every shard) and tokenizer are there.
    Sorted by name, as `hub_models()`.
    """
    cached: dict[str, int] = {}
    if not any(hub_cache_dir().glob("models--*")):
        return cached  # an empty cache (a fresh host): no need to import TransformerLens for its model names
    for name in hub_models():
        repo = model_repo(name)
        if repo is not None and not missing_from_cache(repo, MODEL_FILES):
            cached[name] = cache_bytes(repo)
    return cached
