"""Where each kind of SAE reads and writes the model, and the order of hooks in the forward pass.

This is the one module that knows the SAE kinds:

| kind         | reads (`cfg.metadata.hook_name`)              | writes (a feature's change goes to)  |
|--------------|-----------------------------------------------|--------------------------------------|
| `residual`   | `blocks.L.hook_resid_pre/mid/post`            | the same hook                        |
| `attn_z`     | `blocks.L.attn.hook_z`, [.., n_heads, d_head] | the same hook (decoder rows reshaped) |
| `mlp_out`    | `blocks.L.hook_mlp_out`                       | the same hook                        |
| `transcoder` | `blocks.L.ln2.hook_normalized`                | `hook_name_out`: blocks.L.hook_mlp_out |

Decoder rows live in "write space": d_model wide, or n_heads * d_head (head-major, as SAE-Lens
flattens hook_z) for attention SAEs. `residual_directions` maps them into the residual stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core.errors import FeatureLensError

# Position of each hook inside a transformer block, in forward order. Hooks that are neither read nor
# written by an SAE are listed too, so that the order can be asked of any block hook.
_STAGE = {
    "hook_resid_pre": 0,
    "ln1.hook_scale": 1,
    "ln1.hook_normalized": 1,
    "attn.hook_q": 2,
    "attn.hook_k": 2,
    "attn.hook_v": 2,
    "attn.hook_attn_scores": 2,
    "attn.hook_pattern": 2,
    "attn.hook_z": 3,
    "attn.hook_result": 4,
    "hook_attn_out": 4,
    "hook_resid_mid": 5,
    "ln2.hook_scale": 6,
    "ln2.hook_normalized": 6,
    "mlp.hook_pre": 7,
    "mlp.hook_post": 7,
    "hook_mlp_out": 8,
    "hook_resid_post": 9,
}
_ATTN_READ = _STAGE["ln1.hook_normalized"]
_ATTN_OUT = _STAGE["attn.hook_z"]
_RESIDUAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
READ_HOOKS = (*_RESIDUAL, "attn.hook_z", "ln2.hook_normalized", "hook_mlp_out")
WRITE_HOOKS = (*_RESIDUAL, "attn.hook_z", "hook_mlp_out")
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Site:
    """Where an SAE reads its input and where its features write: hook names, its layer and kind."""

    read: str
    write: str
    layer: int
    kind: str


def _split(hook: str) -> tuple[int, str]:
    match = _BLOCK_HOOK.match(hook)
    if not match or match.group(2) not in _STAGE:
        raise FeatureLensError(
            f"Hook '{hook}' is not a TransformerLens block hook feature-lens knows "
            f"(blocks.L.{{{', '.join(READ_HOOKS)}}})."
        )
    return int(match.group(1)), match.group(2)


def order(hook: str) -> tuple[int, int]:
    """Sort key of a block hook in the forward pass: (layer, stage within the block).

    Within a block: resid_pre < ln1 < attention (q, k, v, pattern) < hook_z < attn_out < resid_mid
    < ln2 < mlp < mlp_out < resid_post.
    """
    layer, rest = _split(hook)
    return layer, _STAGE[rest]


def layer_of(hook: str) -> int:
    """The block index of a hook name."""
    return _split(hook)[0]


def site(sae: SAE) -> Site:
    """Where `sae` reads and writes; raises `FeatureLensError` for hooks feature-lens does not support."""
    read = sae.cfg.metadata.hook_name
    if not read:
        raise FeatureLensError("This SAE names no hook (cfg.metadata.hook_name is empty). Set it to where it reads.")
    write = sae.cfg.metadata.hook_name_out or read
    layer, read_rest = _split(read)
    _, write_rest = _split(write)
    if read_rest not in READ_HOOKS or write_rest not in WRITE_HOOKS:
        raise FeatureLensError(
            f"SAEs that read '{read}' and write '{write}' are not supported. feature-lens supports residual "
            "(hook_resid_pre/mid/post), attention hook_z, hook_mlp_out SAEs and transcoders "
            "(ln2.hook_normalized -> hook_mlp_out)."
        )
    if write != read:
        kind = "transcoder"
    elif read_rest in _RESIDUAL:
        kind = "residual"
    elif read_rest == "attn.hook_z":
        kind = "attn_z"
    else:
        kind = "mlp_out"
    if kind == "attn_z" and sae.cfg.reshape_activations != "hook_z":
        raise FeatureLensError(
            f"The SAE at '{read}' does not set cfg.reshape_activations='hook_z', so it cannot read hook_z's "
            "[.., n_heads, d_head] activations. Load it with reshape_activations='hook_z'."
        )
    return Site(read=read, write=write, layer=layer, kind=kind)


def read_path(read: str) -> str:
    """How a reader at `read` sees the residual stream: `residual` (directly), `ln2` (through ln2),
    `mlp` (through ln2 and the MLP) or `attention` (through ln1, the attention pattern and W_V)."""
    rest = _split(read)[1]
    if rest in _RESIDUAL:
        return "residual"
    return {"ln2.hook_normalized": "ln2", "hook_mlp_out": "mlp", "attn.hook_z": "attention"}[rest]


def hook_size(model: HookedTransformer, hook: str) -> int:
    """Width of the flattened activation at `hook`: n_heads * d_head for hook_z, else d_model."""
    return model.cfg.n_heads * model.cfg.d_head if hook.endswith("attn.hook_z") else model.cfg.d_model


def check_fits(model: HookedTransformer, name: str, sae: SAE) -> Site:
    """The SAE's site, after checking the types, that its hooks exist in `model` and its widths match them."""
    if not isinstance(model, HookedTransformer):
        raise FeatureLensError(f"The model must be a HookedTransformer (load it with load_model), not {model!r:.60}.")
    if not isinstance(sae, SAE):
        raise FeatureLensError(f"SAE '{name}' is a {type(sae).__name__}, not an SAE. Load it with load_sae.")
    where = site(sae)
    for hook in {where.read, where.write}:
        if hook not in model.hook_dict:
            raise FeatureLensError(
                f"SAE '{name}' uses hook '{hook}', which this model ({model.cfg.n_layers} layers) does not "
                "have. Pick SAEs trained on this model."
            )
    widths = {"reads": (where.read, sae.cfg.d_in), "writes": (where.write, sae.W_dec.shape[-1])}
    for verb, (hook, width) in widths.items():
        if width != hook_size(model, hook):
            raise FeatureLensError(
                f"SAE '{name}' {verb} vectors of size {width}, but the model's '{hook}' has size "
                f"{hook_size(model, hook)}. Pick SAEs trained on this model."
            )
    return where


def is_before(write: str, read: str) -> bool:
    """Whether a change written at `write` can reach `read`: strictly earlier in the forward pass."""
    return order(write) < order(read)


def crosses_positions(write: str, read: str) -> bool:
    """Whether a change at one position, written at `write`, can reach other positions by `read`.

    It can only through an attention layer that reads the residual stream after `write` and writes
    (hook_z) no later than `read`.
    """
    layer, stage = order(write)
    first_attention = layer if stage < _ATTN_READ else layer + 1
    return (first_attention, _ATTN_OUT) <= order(read)


def start_layer(write: str) -> int:
    """The first block a patched run must execute for a change at `write`."""
    layer, rest = _split(write)
    return layer + 1 if rest in ("hook_mlp_out", "hook_resid_post") else layer


def writes_at_block_input(write: str) -> bool:
    """Whether a change at `write` equals adding it to the residual input of block `start_layer(write)`.

    True for resid_pre, resid_post and mlp_out (mlp_out is added straight into resid_post; any
    later reader sees the same effect).
    """
    return _split(write)[1] in ("hook_resid_pre", "hook_mlp_out", "hook_resid_post")


def block_input(layer: int) -> str:
    """A hook holding the residual stream that enters block `layer` (`layer` may be n_layers)."""
    return f"blocks.{layer - 1}.hook_resid_post" if layer > 0 else "blocks.0.hook_resid_pre"


def reads_block_input(read: str) -> int | None:
    """The block whose residual input `read` is (resid_pre L -> L, resid_post L -> L + 1), else None."""
    layer, rest = _split(read)
    return {"hook_resid_pre": layer, "hook_resid_post": layer + 1}.get(rest)


def flat(act: Float[Tensor, "*shape"], hook: str) -> Float[Tensor, "... d_write"]:
    """An activation at `hook` in write space: hook_z's [.., n_heads, d_head] flattened head-major."""
    return act.flatten(-2) if hook.endswith("attn.hook_z") else act


def unflat(model: HookedTransformer, vectors: Float[Tensor, "... d_write"], hook: str) -> Float[Tensor, "*shape"]:
    """Write-space vectors shaped as the activation at `hook` (the inverse of `flat`)."""
    if hook.endswith("attn.hook_z"):
        return vectors.unflatten(-1, (model.cfg.n_heads, model.cfg.d_head))
    return vectors


def encode(sae: SAE, read_act: Float[Tensor, "*shape"]) -> Float[Tensor, "... d_sae"]:
    """Feature activations from the activation at the SAE's read hook, as the hook gives it.

    hook_z activations must keep their [.., n_heads, d_head] shape: SAE-Lens flattens the last two
    axes itself, so passing [.., n_heads * d_head] would merge the position axis into it.
    """
    return sae.encode(read_act)


def reconstruction(
    sae: SAE, read_act: Float[Tensor, "*shape"], write: str, acts: Float[Tensor, "... d_sae"] | None = None
) -> Float[Tensor, "... d_write"]:
    """What the SAE puts at its write hook in place of the model's activation, in write space.

    `acts`, if given, must be `encode(sae, read_act)` (as it returns it): passing it saves encoding twice.
    """
    acts = encode(sae, read_act) if acts is None else acts
    if sae.cfg.reshape_activations == "hook_z" and getattr(sae, "d_head", None) is None:
        # SAE-Lens records d_head on its first encode, through a closure bound to the original object, so
        # a deep copy never gets it and its decode fails; record it as SAE-Lens would (an attribute SAE-Lens
        # sets at run time, so it is not declared on the class).
        setattr(sae, "d_head", read_act.shape[-1])  # noqa: B010
    out = flat(sae.decode(acts), write)
    skip = getattr(sae, "W_skip", None)  # skip transcoders add a linear path from input to output
    if skip is not None:
        out = out + read_act.to(skip.dtype) @ skip.T
    return out


def error(
    sae: SAE,
    read_act: Float[Tensor, "*shape"],
    write_act: Float[Tensor, "*shape"],
    write: str,
    acts: Float[Tensor, "... d_sae"] | None = None,
) -> Float[Tensor, "... d_write"]:
    """The SAE's reconstruction error at its write hook, in write space and `write_act`'s dtype: what the model
    put there minus what the SAE would (`acts` as in `reconstruction`)."""
    return flat(write_act, write) - reconstruction(sae, read_act, write, acts=acts).to(write_act.dtype)


def decoder(sae: SAE, dtype: torch.dtype) -> Float[Tensor, "d_sae d_write"]:
    """Decoder rows in write space, detached and cast to `dtype`."""
    return sae.W_dec.detach().to(dtype)


def residual_directions(
    model: HookedTransformer, vectors: Float[Tensor, "... d_write"], write: str
) -> Float[Tensor, "... d_model"]:
    """What write-space `vectors` add to the residual stream: through W_O for hook_z, else themselves."""
    if not write.endswith("attn.hook_z"):
        return vectors
    w_o = model.blocks[layer_of(write)].attn.W_O.detach().to(vectors.dtype)
    per_head = unflat(model, vectors, write)
    return einops.einsum(per_head, w_o, "... h d, h d m -> ... m")
