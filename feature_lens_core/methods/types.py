"""What the estimators pass around: the anchor, ablatable nodes, scored nodes and the baseline.

A node is feature f of SAE U at position p, or U's reconstruction error at p (feature -1). Ablating it
adds `delta` at U's write hook, position p (write space: d_model, or n_heads * d_head for hook_z).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from feature_lens_core import hooks
from feature_lens_core.methods.runner import run
from feature_lens_core.options import BaselineKind


@dataclass(frozen=True)
class Anchor:
    """The feature a ranking is about: the target (upstream) or the source (downstream)."""

    name: str
    sae: SAE
    position: int
    feature: int

    @property
    def read(self) -> str:
        """The hook the feature is computed from."""
        return hooks.site(self.sae).read

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Modules besides the model whose weights the target's value depends on."""
        return (self.sae,)

    def value(
        self,
        read_act: Float[Tensor, "*batch ..."],
        *,
        frozen_norm: bool = False,
        scale: Float[Tensor, "*batch 1"] | None = None,
    ) -> Float[Tensor, " *batch"]:
        """The feature's activation from the activation at its read hook at its position (batch axes first).

        An SAE encoder normalises nothing, so `frozen_norm` and `scale` change nothing here (see `LogitAnchor`)."""
        del frozen_norm, scale
        return hooks.encode(self.sae, read_act)[..., self.feature]


@dataclass(frozen=True)
class LogitAnchor:
    """A logit target: `unembed . value(x) = ln_final(x) @ direction + offset` at `position`, where x is the final
    residual stream. For a token's logit minus the mean logit, direction = W_U[:, t] - mean_j W_U[:, j] and
    offset = b_U[t] - mean_j b_U[j]; for logit(t) - logit(o), the differences of the two columns.
    """

    name: str
    model: HookedTransformer = field(repr=False, compare=False)
    position: int
    direction: Float[Tensor, " d_model"] = field(repr=False, compare=False)
    offset: float

    @property
    def read(self) -> str:
        """The final residual stream, which ln_final and the unembedding read."""
        return f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post"

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        return ()

    def value(
        self,
        read_act: Float[Tensor, "*batch d_model"],
        *,
        frozen_norm: bool = False,
        scale: Float[Tensor, "*batch 1"] | None = None,
    ) -> Float[Tensor, " *batch"]:
        """The logit target from the final residual stream at its position (batch axes first).

        With `frozen_norm`, ln_final's scale is held constant (detached), so a gradient through this value is
        the direct path's: ln_final as the linear map it is at the clean scale. With `scale`, ln_final uses
        that scale (a clean run's `ln_final.hook_scale` at the position) instead of the one `read_act` gives.
        """
        ln_final = self.model.ln_final
        scale_hook = getattr(ln_final, "hook_scale", None)
        handle = None
        if scale is not None and isinstance(scale_hook, nn.Module):
            held = scale
            handle = scale_hook.register_forward_hook(lambda _module, _args, out: held.expand_as(out).to(out.dtype))
        elif frozen_norm and isinstance(scale_hook, nn.Module):
            handle = scale_hook.register_forward_hook(lambda _module, _args, scale: scale.detach())
        try:
            normalized = ln_final(read_act)
        finally:
            if handle is not None:
                handle.remove()
        return normalized @ self.direction.to(normalized.dtype) + self.offset


Target = Anchor | LogitAnchor
"""What an upstream estimator scores sources on."""


@dataclass(frozen=True)
class Nodes:
    """Ablatable nodes of one source SAE: features (index >= 0) and error nodes (index -1).

    `delta[i]` is what ablating node i adds at the SAE's write hook, position `positions[i]`
    (write space: d_model, or n_heads * d_head for hook_z).
    """

    name: str
    sae: SAE
    positions: Int[Tensor, " n"]
    features: Int[Tensor, " n"]
    activation: Float[Tensor, " n"]
    delta: Float[Tensor, "n d_write"]

    def subset(self, keep: Bool[Tensor, " n"]) -> Nodes:
        """Only the nodes where `keep` is true."""
        return Nodes(
            self.name,
            self.sae,
            self.positions[keep],
            self.features[keep],
            self.activation[keep],
            self.delta[keep],
        )

    def scored(self, score: Float[Tensor, " n"]) -> Scored:
        return Scored(self.name, self.sae, self.positions, self.features, self.activation, score)

    def first_order(self, gradient: Float[Tensor, "pos d_write"]) -> Scored:
        """Each node scored -<delta, gradient at its position>: the first-order estimate of its ablation."""
        return self.scored(-(self.delta * gradient[self.positions]).sum(-1))


@dataclass(frozen=True)
class Scored:
    """Ranked nodes of one SAE: position, feature (-1 for an error node), activation and score."""

    name: str
    sae: SAE
    positions: Int[Tensor, " n"]
    features: Int[Tensor, " n"]
    activation: Float[Tensor, " n"]
    score: Float[Tensor, " n"]


@dataclass(frozen=True)
class BaselineValues:
    """What one SAE's nodes are set to by an ablation, per position.

    `widens` says the baseline can switch inactive features on (corrupt prompt), so those become
    nodes too.
    """

    features: Float[Tensor, "pos d_sae"]
    error: Float[Tensor, "pos d_write"]
    widens: bool


@dataclass(frozen=True)
class Baseline:
    """The value a source is ablated to: `zero`, its `mean` activation, or its value on a `corrupt` prompt.

    Error nodes go to zero, or to their value on the corrupt prompt, so that a corrupt prompt equal
    to the clean one changes nothing.
    """

    kind: BaselineKind = "zero"
    corrupt_tokens: Int[Tensor, "1 pos"] | None = None
    means: Callable[[SAE], Tensor] | None = field(default=None, compare=False)

    def values(self, model: HookedTransformer, saes: Mapping[str, SAE], n_pos: int) -> dict[str, BaselineValues]:
        """Baseline values of each SAE at the first `n_pos` positions."""
        dtype = model.cfg.dtype
        sites = {name: hooks.site(sae) for name, sae in saes.items()}
        if self.kind == "corrupt":
            assert self.corrupt_tokens is not None
            wanted = {h for s in sites.values() for h in (s.read, s.write)}
            with torch.no_grad():
                acts = run(
                    model,
                    self.corrupt_tokens[:, :n_pos],
                    capture=wanted,
                    stop_at=max(wanted, key=hooks.order),
                )
            out = {}
            for name, sae in saes.items():
                read, write = acts[sites[name].read][0], acts[sites[name].write][0]
                codes = hooks.encode(sae, read)
                error = hooks.error(sae, read, write.to(dtype), sites[name].write, acts=codes)
                out[name] = BaselineValues(codes.to(dtype), error, widens=True)
            return out
        out = {}
        for name, sae in saes.items():
            width = sae.W_dec.shape[-1]
            device = sae.W_dec.device
            features = torch.zeros(n_pos, sae.cfg.d_sae, dtype=dtype, device=device)
            if self.kind == "mean":
                assert self.means is not None
                features = features + self.means(sae).to(device, dtype)
            error = torch.zeros(n_pos, width, dtype=dtype, device=device)
            out[name] = BaselineValues(features, error, widens=False)
        return out
