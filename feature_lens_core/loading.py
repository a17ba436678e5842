"""Load models and SAEs: the built-in zoo, the Hugging Face hub (when online) or a local folder.

Every failure a user can cause or meet (unknown name, no network, a folder that is not an
SAE) raises `FeatureLensError` with a message that says what to do instead.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import socket
import time
from pathlib import Path

from sae_lens import SAE
from safetensors import SafetensorError, safe_open
from transformer_lens import HookedTransformer

from feature_lens_core import catalog
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import load_model_folder
from feature_lens_core.zoo.tokenizer import load_tokenizer

HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0
# After a failed check the hub counts as unreachable for this long, so a page naming several hub models or SAEs
# waits out one timeout, not one per name.
HUB_RETRY_S = 30.0
SAE_FILES = ("cfg.json", "sae_weights.safetensors")
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "FEATURE_LENS_OFFLINE")  # set to anything but 0/false/no: do not try the hub
_hub_down_until = 0.0


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (and offline mode is off)."""
    global _hub_down_until
    if any(os.environ.get(flag, "0").strip().lower() not in ("", "0", "false", "no") for flag in OFFLINE_FLAGS):
        return False
    if time.monotonic() < _hub_down_until:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        _hub_down_until = time.monotonic() + HUB_RETRY_S
        return False


def _require_hub(what: str) -> None:
    if not hub_reachable():
        raise FeatureLensError(
            f"Could not fetch {what} from the Hugging Face hub: it is not reachable from here (offline). "
            f"Use the built-in model instead: model '{catalog.BUILTIN_MODEL}' with its SAEs "
            f"({', '.join(catalog.builtin_sae_names()[:3])}, ...)."
        )


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@functools.cache
def _builtin_model() -> HookedTransformer:
    return load_model_folder(paths.MODEL_DIR, load_tokenizer(paths.TOKENIZER_DIR))


def load_model(name: str) -> HookedTransformer:
    """A HookedTransformer in eval mode: `"toy"` is the built-in model, anything else a TransformerLens name.

    The built-in model is loaded once per process and shared; callers must not modify it.

    Example:
        >>> model = load_model("toy")
        >>> model.cfg.n_layers
        3
    """
    if name == catalog.BUILTIN_MODEL:
        return _builtin_model()
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    known = list(OFFICIAL_MODEL_NAMES) + [a for aliases in MODEL_ALIASES.values() for a in aliases]
    if name not in known:
        raise FeatureLensError(
            f"Unknown model '{name}'.{_suggest(name, known + [catalog.BUILTIN_MODEL])} "
            f"Use '{catalog.BUILTIN_MODEL}' (built-in) or a TransformerLens model name such as 'gpt2-small'."
        )
    _require_hub(f"model '{name}'")
    return HookedTransformer.from_pretrained(name, device="cpu").eval()


def list_saes(model: str) -> list[str]:
    """Names of the SAEs available for `model`: the built-in ones, or `release/sae_id` from SAE-Lens's directory."""
    if model == catalog.BUILTIN_MODEL:
        return catalog.builtin_sae_names()
    return sorted(name for name, entry in catalog.hub_saes().items() if entry.model == model)


def load_sae(model: str, name: str) -> SAE:
    """An SAE-Lens SAE (or Transcoder) for `model`, by built-in name, `release/sae_id` or local folder path.

    The returned SAE always has `cfg.metadata.hook_name` (and `hook_name_out` for a
    transcoder) set. Weights are read from safetensors only.
    """
    if model == catalog.BUILTIN_MODEL and name in catalog.builtin_sae_names():
        return _load_folder(paths.SAES_DIR / name)
    folder = Path(name).expanduser()
    if folder.is_dir() or name.startswith(("/", "./", "~")):
        return _load_folder(folder)
    entry = catalog.hub_saes().get(name)
    if entry is None:
        options = list_saes(model)
        hint = f" SAEs for '{model}' include: {', '.join(options[:5])}." if options else ""
        raise FeatureLensError(
            f"Unknown SAE '{name}' for model '{model}'.{_suggest(name, options)}{hint} "
            "Give a built-in name, 'release/sae_id' from SAE-Lens's directory, or a local folder."
        )
    if entry.model != model:
        raise FeatureLensError(
            f"SAE '{name}' belongs to model '{entry.model}', not '{model}'. Pick an SAE trained on '{model}'."
        )
    _require_hub(f"SAE '{name}'")
    sae = SAE.from_pretrained(entry.release, entry.sae_id, device="cpu")
    if entry.neuronpedia_id and not sae.cfg.metadata.neuronpedia_id:
        sae.cfg.metadata.neuronpedia_id = entry.neuronpedia_id
    return sae.eval()


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _load_folder(folder: Path) -> SAE:
    """Load an SAE-Lens folder, refusing anything but `cfg.json` + `sae_weights.safetensors`.

    Each file is checked on its own first, so a broken folder is reported by which file is wrong and how.
    """
    if not folder.is_dir():
        raise FeatureLensError(f"SAE folder '{folder}' does not exist. Give a folder with {' and '.join(SAE_FILES)}.")
    missing = [f for f in SAE_FILES if not (folder / f).is_file()]
    if missing:
        raise FeatureLensError(
            f"SAE folder '{folder}' lacks {', '.join(missing)}. feature-lens reads SAE-Lens's format "
            f"({' + '.join(SAE_FILES)}) and never unpickles .pt files; convert with `sae.save_model(folder)`."
        )
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureLensError(
            f"SAE folder '{folder}': cfg.json could not be read as JSON ({_one_line(exc)}). Fix or regenerate it."
        ) from exc
    if not isinstance(cfg, dict):
        raise FeatureLensError(f"SAE folder '{folder}': cfg.json must hold a JSON object of SAE-Lens settings.")
    try:
        with safe_open(str(folder / "sae_weights.safetensors"), framework="pt"):
            pass
    except (OSError, SafetensorError) as exc:
        raise FeatureLensError(
            f"SAE folder '{folder}': sae_weights.safetensors could not be read ({_one_line(exc)}). It is not a "
            "complete safetensors file: it may be truncated or corrupt; copy it again."
        ) from exc
    try:
        sae = SAE.load_from_disk(folder, device="cpu")
    except Exception as exc:  # a user's folder can fail in any library layer; report, don't crash
        raise FeatureLensError(
            f"SAE folder '{folder}': its weights do not fit its cfg.json ({_one_line(exc)[:300]}). "
            "Check d_in, d_sae, architecture and dtype in cfg.json against the weights."
        ) from exc
    if not sae.cfg.metadata.hook_name:
        hook = cfg.get("hook_name") or cfg.get("hook_point")
        if not hook:
            raise FeatureLensError(f"SAE folder '{folder}': cfg.json names no hook_name. Add metadata.hook_name.")
        sae.cfg.metadata.hook_name = hook
    # Remembered (not saved) so shipped feature data beside the weights can be found.
    sae.cfg.metadata.local_folder = str(folder.resolve())
    return sae.eval()
