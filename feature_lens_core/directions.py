"""Linear directions as features: a vector at a hook becomes a one-feature SAE-Lens SAE.

`direction_sae(model, hook, v)` is a `StandardSAE` with d_sae = 1, W_enc = v_hat as a column,
W_dec = v_hat as a row and zero biases, where v_hat = v / |v|:

    activation(x) = ReLU(<x, v_hat>),   reconstruction = activation * v_hat,   error = x - reconstruction.

So the feature is "present" where x points along v (negate v for the other sign), its activation is the
length of that projection, and ablating it to zero removes the component along v_hat (directional
ablation); its error node is everything else at the hook. Being a real SAE, it is a target or a source
for every method, the graph and the batch runs, like any other SAE.

`steering_vector` computes v as a difference of mean activations between two sets of prompts;
`load_direction` reads one from a .npy file (never pickled objects) or a safetensors file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, untrusted_files
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods.runner import run
from feature_lens_core.validation import prompt_tokens

MAX_DIRECTION_BYTES = 16 * 2**20  # a direction is one vector: 2**20 float64 numbers and a header fit
MAX_DIRECTION_ELEMENTS = 2**20  # wider than any model's residual stream or n_heads * d_head
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DIRECTION_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "attn.hook_z", "hook_mlp_out")
POSITIONS = ("all", "last")


def _check_hook(model: HookedTransformer, hook: str) -> None:
    if hook not in model.hook_dict or not hook.endswith(DIRECTION_HOOKS) or not hook.startswith("blocks."):
        raise FeatureLensError(
            f"A direction needs a hook where it is read and written: blocks.L.{{{', '.join(DIRECTION_HOOKS)}}} "
            f"with L from 0 to {model.cfg.n_layers - 1}; got '{hook}'."
        )


def _as_vector(model: HookedTransformer, hook: str, vector: Tensor | np.ndarray) -> Float[Tensor, " d"]:
    """`vector` as a finite, non-zero 1-D tensor of the hook's width, in the model's dtype."""
    if not isinstance(vector, Tensor):
        try:
            array = np.asarray(vector)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            reason = " ".join(str(exc).split())
            raise FeatureLensError(f"The direction must be an array of numbers ({reason}).") from exc
        if array.dtype.kind not in "biufc":
            raise FeatureLensError(f"The direction must be an array of real numbers, not of {array.dtype} values.")
        vector = torch.as_tensor(array)
    values = vector.detach().squeeze()
    width = hooks.hook_size(model, hook)
    if values.dim() != 1 or values.numel() != width:
        raise FeatureLensError(
            f"The direction has shape {tuple(values.shape)}, but '{hook}' holds vectors of size {width}"
            + (" (n_heads * d_head, heads first)." if hook.endswith("hook_z") else ".")
        )
    if values.dtype not in FLOAT_DTYPES and not values.dtype.is_complex:  # integers, bools, float8
        values = values.double()
    if values.dtype.is_complex or not torch.isfinite(values).all() or not values.any():
        raise FeatureLensError("The direction must be real, finite and not all zeros.")
    return values.to(model.cfg.dtype)


def direction_sae(model: HookedTransformer, hook: str, vector: Tensor | np.ndarray, name: str = "direction") -> SAE:
    """A one-feature SAE at `hook` whose feature is ReLU(<x, vector / |vector|>); see the module docstring.

    `vector` is [d_model], or [n_heads * d_head] (heads first) at attn.hook_z. `name` is recorded as the
    SAE's `cfg.metadata.sae_id`.
    """
    _check_hook(model, hook)
    unit = _as_vector(model, hook, vector)
    unit = unit / unit.norm()
    cfg = StandardSAEConfig(
        d_in=len(unit),
        d_sae=1,
        dtype=str(model.cfg.dtype).removeprefix("torch."),
        apply_b_dec_to_input=False,
        reshape_activations="hook_z" if hook.endswith("attn.hook_z") else "none",
        metadata=SAEMetadata(
            hook_name=hook,
            model_name=model.cfg.model_name,
            prepend_bos=model.cfg.default_prepend_bos,
            sae_id=name,
        ),
    )
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(unit[:, None])
        sae.W_dec.copy_(unit[None, :])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def _mean_activation(model: HookedTransformer, hook: str, prompts: Sequence[str], positions: str, what: str) -> Tensor:
    if isinstance(prompts, str) or not prompts:
        raise FeatureLensError(f"Give at least one prompt in {what} (a list of strings).")
    first = 1 if model.cfg.default_prepend_bos else 0  # BOS is the same on every prompt: leave it out
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            tokens = prompt_tokens(model, prompt, what=f"prompt in {what}")
            act = hooks.flat(run(model, tokens, capture={hook}, stop_at=hook)[hook][0], hook)
            rows.append(act[-1:] if positions == "last" else act[first:])
    return torch.cat(rows).double().mean(0)


def steering_vector(
    model: HookedTransformer,
    hook: str,
    prompts_a: Sequence[str],
    prompts_b: Sequence[str],
    positions: str = "all",
) -> Float[Tensor, " d"]:
    """mean activation at `hook` over prompts_a minus that over prompts_b (float64).

    The means pool every token of every prompt (BOS excluded) with `positions="all"`, or the last
    token of each prompt with "last". The result is flattened as `direction_sae` takes it.
    """
    _check_hook(model, hook)
    if positions not in POSITIONS:
        raise FeatureLensError(f"Unknown positions {positions!r}. Use one of: {', '.join(POSITIONS)}.")
    difference = _mean_activation(model, hook, prompts_a, positions, "prompts_a") - _mean_activation(
        model, hook, prompts_b, positions, "prompts_b"
    )
    if not difference.any():
        raise FeatureLensError("The two sets of prompts give the same mean activation: there is no direction.")
    return difference


def load_direction(source: str | Path | bytes, fmt: str | None = None, key: str | None = None) -> Tensor:
    """A direction vector from a .npy file (no pickled objects) or a .safetensors file, as a tensor.

    `source` is a path, or the file's bytes with `fmt` "npy" or "safetensors" (as an upload gives them).
    A safetensors file with several tensors needs `key`. The file must be at most `MAX_DIRECTION_BYTES` and
    hold float16, (bfloat16,) float32 or float64 values, at most `MAX_DIRECTION_ELEMENTS` of them; a .npy
    header is checked before anything is allocated.
    """
    if isinstance(source, bytes):
        what = f"The {fmt} direction"
    elif isinstance(source, str | Path):
        path = Path(source)
        fmt = fmt or path.suffix.lstrip(".").lower()
        what = f"Direction file '{path}'"
    else:
        raise FeatureLensError(f"Give a direction as a file path or the file's bytes, not a {type(source).__name__}.")
    if fmt not in ("npy", "safetensors"):
        raise FeatureLensError(f"Give a direction as a .npy or .safetensors file (got format {fmt!r}).")
    if not isinstance(source, bytes):
        source = untrusted_files.read_capped(Path(source), what=what, max_bytes=MAX_DIRECTION_BYTES)
    elif len(source) > MAX_DIRECTION_BYTES:
        raise FeatureLensError(
            f"{what} is {untrusted_files.mib(len(source))}; at most {untrusted_files.mib(MAX_DIRECTION_BYTES)} is "
            "read. A direction is one vector."
        )
    if fmt == "npy":
        return torch.from_numpy(untrusted_files.read_npy(source, what=what, max_elements=MAX_DIRECTION_ELEMENTS))
    try:
        tensors = load_safetensors_bytes(source)
    except (ValueError, OSError, SafetensorError) as exc:
        raise FeatureLensError(f"Could not read the {fmt} direction: {' '.join(str(exc).split())}") from exc
    if key is None and len(tensors) == 1:
        key = next(iter(tensors))
    if key not in tensors:
        raise FeatureLensError(
            f"The safetensors file holds {', '.join(sorted(tensors)) or 'no tensors'}: name the one to use (key)."
        )
    vector = tensors[key]
    if vector.dtype not in FLOAT_DTYPES:
        raise FeatureLensError(
            f"{what} holds {str(vector.dtype).removeprefix('torch.')} values. A direction must be float16, bfloat16, "
            "float32 or float64: convert it before saving."
        )
    if vector.numel() > MAX_DIRECTION_ELEMENTS:
        raise FeatureLensError(f"{what} has {vector.numel()} elements; at most {MAX_DIRECTION_ELEMENTS} are read.")
    return vector
