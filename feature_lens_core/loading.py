"""Load models and SAEs, on a device: the built-in zoo, the Hugging Face hub (or its local cache) or a local folder.

Hub names load from the hub when it is reachable and from the local Hugging Face cache when it is not
(HF_HUB_OFFLINE=1, FEATURE_LENS_OFFLINE=1, or no network), as huggingface_hub's own offline mode does. Every
failure a user can cause or meet (unknown name, not cached while offline, a folder that is not an SAE, a
device this machine lacks) raises `FeatureLensError` with a message that says what to do instead.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sae_lens import SAE
from safetensors import SafetensorError, safe_open
from transformer_lens import HookedTransformer

from feature_lens_core import catalog, feature_data, untrusted_files, validation
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
DEVICE_ENV = "FEATURE_LENS_DEVICE"  # overrides the default device (CUDA, else MPS, else CPU)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
# SAE-Lens loaders that read pickled files (torch.load). feature-lens never unpickles, so it refuses these releases.
PICKLE_LOADERS = frozenset({"connor_rob_hook_z", "goodfire", "deepseek_r1", "qwen_scope", "dictionary_learning_1"})
# SAE-Lens loaders that ask the hub over HTTP for tensor shapes, so they cannot load from the cache offline.
ONLINE_ONLY_LOADERS = frozenset({"gemma_3"})
# TransformerLens reads these organisations' models from pickled .pth checkpoints.
PICKLE_MODEL_ORGS = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")
CFG_MAX_BYTES = 2**20  # SAE-Lens writes a few hundred bytes; a stranger's cfg.json is read only up to this
_hub_down_until = 0.0
_offline_lock = threading.Lock()


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (and offline mode is off)."""
    global _hub_down_until
    if catalog.offline_mode():
        return False
    if time.monotonic() < _hub_down_until:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        _hub_down_until = time.monotonic() + HUB_RETRY_S
        return False


def default_device() -> torch.device:
    """The device models load on by default: FEATURE_LENS_DEVICE if set, else CUDA, else MPS, else the CPU."""
    named = os.environ.get(DEVICE_ENV, "").strip()
    if named:
        return resolve_device(named, what=f"{DEVICE_ENV}={named!r}")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None, what: str = "") -> torch.device:
    """`device` checked against this machine (None: `default_device()`); refuses devices it does not have."""
    if device is None:
        return default_device()
    what = what or f"device {str(device)!r}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FeatureLensError(f"Unknown {what}. Use 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "" if torch.version.cuda else f" (this torch, {torch.__version__}, is built without CUDA)"
            raise FeatureLensError(f"The {what} needs CUDA, which is not available here{build}. Use 'cpu'.")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise FeatureLensError(
                f"The {what} does not exist: this machine has {count} CUDA device(s), 0 to {count - 1}."
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise FeatureLensError(f"The {what} needs Apple's MPS, which is not available here. Use 'cpu'.")
    elif parsed.type != "cpu":
        raise FeatureLensError(f"The {what} is not supported. Use 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return parsed


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """`dtype` as a torch dtype (None: float32); names such as "bfloat16" or "torch.float16" are accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else ""
    if name not in DTYPES:
        raise FeatureLensError(f"Unknown dtype {dtype!r}. Use one of: {', '.join(DTYPES)}.")
    return DTYPES[name]


def _check_name(name: object, what: str, example: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise FeatureLensError(f"The {what} must be a non-empty string such as {example!r}, not {_short(name)}.")


def _builtin_offer() -> str:
    return (
        f"Use the built-in model instead: model '{catalog.BUILTIN_MODEL}' with its SAEs "
        f"({', '.join(catalog.builtin_sae_names()[:3])}, ...)."
    )


def _require_cached(what: str, repo_id: str, missing: list[str], include: str | None = None) -> None:
    """Refuse, offline, to load `what` when the local cache lacks some of its files (`missing`)."""
    if not missing:
        return
    command = f"hf download {repo_id}" + (f" --include '{include}'" if include else "")
    raise FeatureLensError(
        f"Could not fetch {what} from the Hugging Face hub: it is not reachable from here (offline), and the "
        f"local cache ({catalog.hub_cache_dir()}) lacks {', '.join(missing)} of repo '{repo_id}'. On a machine "
        f"with network run `{command}` (older huggingface_hub: `huggingface-cli download`), then copy its cache "
        f"here or point HF_HOME at it. {_builtin_offer()}"
    )


@contextlib.contextmanager
def _from_cache(what: str, repo_id: str, include: str | None = None) -> Iterator[None]:
    """Run a hub loader against the local cache only: huggingface_hub's offline mode, for this call.

    feature-lens has found the hub unreachable, so every request would only wait out its timeout. A file the
    check before did not know about and that is missing fails here, with the same message.
    """
    from huggingface_hub import constants

    with _offline_lock:
        was = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError and transformers' OSError
            _require_cached(what, repo_id, [f"a file its loader asked for ({_one_line(exc)[:200]})"], include)
        finally:
            constants.HF_HUB_OFFLINE = was


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@functools.cache
def _builtin_model(device: str, dtype: torch.dtype) -> HookedTransformer:
    model = load_model_folder(paths.MODEL_DIR, load_tokenizer(paths.TOKENIZER_DIR), device=device)
    if dtype != torch.float32:
        model = model.to(dtype, print_details=False)
    return model.eval()


def load_model(
    name: str, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> HookedTransformer:
    """A HookedTransformer in eval mode: `"toy"` is the built-in model, anything else a TransformerLens name.

    `device` defaults to `default_device()` (CUDA, else MPS, else CPU; FEATURE_LENS_DEVICE overrides it),
    `dtype` to float32. Hub models come from the hub when it is reachable, else from the local Hugging Face
    cache. The built-in model is loaded once per process (per device and dtype) and shared; callers must not
    modify it.

    Example:
        >>> model = load_model("toy", device="cpu")
        >>> model.cfg.n_layers, model.cfg.device, model.cfg.dtype
        (3, 'cpu', torch.float32)
    """
    _check_name(name, "model name", catalog.BUILTIN_MODEL)
    where, precision = str(resolve_device(device)), resolve_dtype(dtype)
    if name == catalog.BUILTIN_MODEL:
        return _builtin_model(where, precision)
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    known = list(OFFICIAL_MODEL_NAMES) + [a for aliases in MODEL_ALIASES.values() for a in aliases]
    repo = catalog.model_repo(name) if name in known else None
    if repo is None:
        raise FeatureLensError(
            f"Unknown model '{name}'.{_suggest(name, known + [catalog.BUILTIN_MODEL])} "
            f"Use '{catalog.BUILTIN_MODEL}' (built-in) or a TransformerLens model name such as 'gpt2-small'."
        )
    if repo.startswith(PICKLE_MODEL_ORGS):
        raise FeatureLensError(
            f"Model '{name}' is stored as pickled .pth files, which feature-lens never loads (unpickling can run "
            f"code). Pick a model with safetensors weights, such as 'gpt2-small'."
        )
    what = f"model '{name}'"
    # TransformerLens annotates dtype as a name but takes a torch dtype, float64 included (its names lack it).
    load = functools.partial(HookedTransformer.from_pretrained, name, device=where, dtype=precision)  # pyright: ignore[reportArgumentType]
    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints progress; the CLI's stdout is for results
        if hub_reachable():
            model = load()
        else:
            _require_cached(what, repo, catalog.missing_from_cache(repo, catalog.MODEL_FILES))
            with _from_cache(what, repo):
                model = load()
    return model.eval()


def list_saes(model: str) -> list[str]:
    """Names of the SAEs available for `model`: the built-in ones, or `release/sae_id` from SAE-Lens's directory."""
    if model == catalog.BUILTIN_MODEL:
        return catalog.builtin_sae_names()
    return sorted(name for name, entry in catalog.hub_saes().items() if entry.model == model)


def load_sae(
    model: str, name: str, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> SAE:
    """An SAE-Lens SAE (or Transcoder) for `model`, by built-in name, `release/sae_id` or local folder path.

    `device` and `dtype` default as `load_model`'s do; pass the model's (`model.cfg.device`,
    `model.cfg.dtype`) so the SAE runs beside it. Hub SAEs come from the hub when it is reachable, else
    from the local Hugging Face cache. The returned SAE always has `cfg.metadata.hook_name` (and
    `hook_name_out` for a transcoder) set. Weights are read from safetensors or plain arrays (.npz) only.
    """
    _check_name(model, "model name", catalog.BUILTIN_MODEL)
    _check_name(name, "SAE name", "L0.resid_pre")
    where, precision = str(resolve_device(device)), resolve_dtype(dtype)
    if model == catalog.BUILTIN_MODEL and name in catalog.builtin_sae_names():
        return _load_folder(paths.SAES_DIR / name, where, precision)
    folder = Path(name).expanduser()
    if _is_dir(folder) or name.startswith(("/", "./", "~")):
        return _load_folder(folder, where, precision)
    entry = catalog.hub_sae(name)
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
    if entry.loader in PICKLE_LOADERS:
        raise FeatureLensError(
            f"SAE '{name}' is stored as pickled .pt files (SAE-Lens loader '{entry.loader}'), which feature-lens "
            "never unpickles. Convert it once with SAE-Lens (`sae.save_model(folder)`) and give the folder."
        )
    what = f"SAE '{name}'"
    load = functools.partial(SAE.from_pretrained, entry.release, entry.sae_id, device=where, dtype=str(precision))
    if hub_reachable():
        sae = load()
    elif entry.loader in ONLINE_ONLY_LOADERS:
        raise FeatureLensError(
            f"Could not fetch {what} from the Hugging Face hub: it is not reachable from here (offline), and "
            f"SAE-Lens's '{entry.loader}' loader asks the hub for the weights' shapes over HTTP even when they are "
            f"cached. Load it once online, save it with `sae.save_model(folder)` and give the folder. "
            f"{_builtin_offer()}"
        )
    else:
        include = f"{entry.path}/*"
        _require_cached(what, entry.repo_id, catalog.sae_missing_from_cache(entry), include)
        with _from_cache(what, entry.repo_id, include):
            sae = load()
    if entry.neuronpedia_id and not sae.cfg.metadata.neuronpedia_id:
        sae.cfg.metadata.neuronpedia_id = entry.neuronpedia_id
    return sae.eval()


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _is_dir(path: Path) -> bool:
    """Whether `path` is a folder; False, not an OSError, for a name the filesystem cannot hold (too long)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _check_cfg(folder: Path, cfg: dict[str, object], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a cfg.json whose values have the wrong type or whose sizes disagree with the weights' shapes.

    Run before SAE-Lens builds the SAE, so that a crafted d_sae cannot make it allocate more than the weights
    file holds, and a hook name that is not a string never reaches a regex.
    """
    where = f"SAE folder '{folder}': cfg.json"
    metadata = cfg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise FeatureLensError(f"{where}'s metadata must be a JSON object, not {_short(metadata)}.")
    for key in ("d_in", "d_sae", "d_out"):
        if key in cfg and not (validation.whole(cfg[key]) and cfg[key] >= 1):  # type: ignore[operator]
            raise FeatureLensError(f"{where}: {key} must be a whole number of at least 1, not {_short(cfg[key])}.")
    for source, key in ((cfg, "hook_name"), (cfg, "hook_point"), (metadata, "hook_name"), (metadata, "hook_name_out")):
        if source.get(key) is not None and not isinstance(source[key], str):
            raise FeatureLensError(
                f"{where}: {key} must be a hook name such as 'blocks.0.hook_resid_pre' (a string), "
                f"not {_short(source[key])}."
            )
    if not isinstance(cfg.get("architecture", ""), str):
        raise FeatureLensError(f"{where}: architecture must be a name such as 'standard' or 'topk'.")
    missing = [name for name in ("W_enc", "W_dec") if name not in shapes]
    if missing:
        raise FeatureLensError(
            f"SAE folder '{folder}': sae_weights.safetensors lacks {' and '.join(missing)}, which every SAE-Lens SAE "
            "has. Save it with SAE-Lens (`sae.save_model(folder)`)."
        )
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, cfg.get("d_out", d_in))}
    for name, shape in expected.items():
        if None not in shape and shapes[name] != shape:
            raise FeatureLensError(
                f"SAE folder '{folder}': its weights do not fit its cfg.json ({name} is "
                f"{' x '.join(map(str, shapes[name]))}, but d_in {d_in} and d_sae {d_sae} make it "
                f"{' x '.join(map(str, shape))}). Check d_in, d_sae and d_out in cfg.json against the weights."
            )


def _check_k(folder: Path, sae: SAE) -> None:
    """A TopK SAE keeps k features per token: k must be a whole number from 1 to d_sae."""
    k = getattr(sae.cfg, "k", None)
    if k is not None and not (validation.whole(k) and 1 <= k <= sae.cfg.d_sae):
        raise FeatureLensError(
            f"SAE folder '{folder}': cfg.json's k (how many features a TopK SAE keeps per token) is {_short(k)}; it "
            f"must be a whole number from 1 to d_sae ({sae.cfg.d_sae})."
        )


def _load_folder(folder: Path, device: str, dtype: torch.dtype) -> SAE:
    """Load an SAE-Lens folder, refusing anything but `cfg.json` + `sae_weights.safetensors`.

    Each file is checked on its own first, so a broken folder is reported by which file is wrong and how.
    """
    if not _is_dir(folder):
        raise FeatureLensError(f"SAE folder '{folder}' does not exist. Give a folder with {' and '.join(SAE_FILES)}.")
    missing = [f for f in SAE_FILES if not (folder / f).is_file()]
    if missing:
        raise FeatureLensError(
            f"SAE folder '{folder}' lacks {', '.join(missing)}. feature-lens reads SAE-Lens's format "
            f"({' + '.join(SAE_FILES)}) and never unpickles .pt files; convert with `sae.save_model(folder)`."
        )
    what = f"SAE folder '{folder}': cfg.json"
    cfg = untrusted_files.read_json(folder / "cfg.json", what=what, max_bytes=CFG_MAX_BYTES)
    if not isinstance(cfg, dict):
        raise FeatureLensError(f"{what} must hold a JSON object of SAE-Lens settings.")
    try:
        with safe_open(str(folder / "sae_weights.safetensors"), framework="pt") as weights:
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as exc:
        raise FeatureLensError(
            f"SAE folder '{folder}': sae_weights.safetensors could not be read ({_one_line(exc)}). It is not a "
            "complete safetensors file: it may be truncated or corrupt; copy it again."
        ) from exc
    _check_cfg(folder, cfg, shapes)
    try:
        sae = SAE.load_from_disk(folder, device=device).to(dtype=dtype)  # read as the folder says, then cast
    except Exception as exc:  # a user's folder can fail in any library layer; report, don't crash
        raise FeatureLensError(
            f"SAE folder '{folder}': its weights do not fit its cfg.json ({_one_line(exc)[:300]}). "
            "Check d_in, d_sae, architecture and dtype in cfg.json against the weights."
        ) from exc
    _check_k(folder, sae)
    if not sae.cfg.metadata.hook_name:
        hook = cfg.get("hook_name") or cfg.get("hook_point")
        if not hook:
            raise FeatureLensError(f"SAE folder '{folder}': cfg.json names no hook_name. Add metadata.hook_name.")
        sae.cfg.metadata.hook_name = hook
    # Remembered (not saved) so shipped feature data beside the weights can be found.
    sae.cfg.metadata.local_folder = str(folder.resolve())
    feature_data.check(sae)
    return sae.eval()
