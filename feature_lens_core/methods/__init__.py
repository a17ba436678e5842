"""The three estimators behind `ranking.rank`, and what they share.

One quantity, three ways to compute it (docs/methods.md): for a source node (feature f of SAE U at
position p, or U's reconstruction error at p) and a target feature g of SAE D at position q,

    score = g(clean) - g(ablated),

where the ablation adds `delta` at U's write hook, position p, and changes nothing else:
`delta = (b - a_f) * W_dec_U[f]` for a feature, `delta = e_b - e_p` for an error node (e_p is U's
reconstruction error, e_b its baseline: zero, or its value on the corrupt prompt).

- `activation`: runs the ablation (exact);
- `attribution`: -<delta, dg/dx_U[p]> on the clean run (first order, all paths);
- `direct`: the same product along the direct residual path only, with frozen LayerNorm scales,
  attention patterns and MLP slopes.

Each module has `upstream(model, tokens, sources, target, baseline)` and
`downstream(model, tokens, source, targets, baseline)`, both returning one `Scored` per ranked SAE.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from feature_lens_core import hooks
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive

BASELINES = ("zero", "mean", "corrupt")
SHOWN_ACTIVE = 8  # active features listed when a chosen feature is not active

Edit = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Anchor:
    """The feature a ranking is about: the target (upstream) or the source (downstream)."""

    name: str
    sae: SAE
    position: int
    feature: int


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

    kind: str = "zero"
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
                features = hooks.encode(sae, read).to(dtype)
                error = hooks.flat(write, sites[name].write) - hooks.reconstruction(sae, read, sites[name].write).to(
                    dtype
                )
                out[name] = BaselineValues(features, error, widens=True)
            return out
        out = {}
        for name, sae in saes.items():
            width = sae.W_dec.shape[-1]
            features = torch.zeros(n_pos, sae.cfg.d_sae, dtype=dtype)
            if self.kind == "mean":
                assert self.means is not None
                features = features + self.means(sae).to(dtype)
            out[name] = BaselineValues(features, torch.zeros(n_pos, width, dtype=dtype), widens=False)
        return out


@contextmanager
def weights_frozen(*modules: nn.Module) -> Iterator[None]:
    """Inside the block the modules' parameters do not require grad (restored after): a pass with grad then
    keeps only what gradients w.r.t. activations need, not the inputs weight gradients would. The caller
    holds `exclusive()`, so that no other thread sees the parameters frozen."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once everything wanted has been read."""


def run(
    model: HookedTransformer,
    inputs: Tensor,
    *,
    capture: Collection[str] = (),
    stop_at: str | None = None,
    edits: Mapping[str, Edit] | None = None,
    start_layer: int | None = None,
    **forward: object,
) -> dict[str, Tensor]:
    """Run `model` and return the activations at the hooks in `capture`, as they leave each hook.

    `inputs` are tokens [batch, pos], or with `start_layer` the residual stream [batch, pos, d_model]
    entering that block (resuming a cached clean run). `edits` change an activation before it is
    captured. The pass ends as soon as `stop_at` has been captured, so later blocks are never run.
    Other keyword arguments go to the model's forward. Hooks are removed afterwards whatever happens.
    """
    edits = edits or {}
    acts: dict[str, Tensor] = {}

    def hook(act: Tensor, hook: object) -> Tensor:
        name = hook.name  # type: ignore[attr-defined]
        if name in edits:
            act = edits[name](act)
        if name in capture:
            acts[name] = act
        if name == stop_at:
            raise _Stop
        return act

    names = set(capture) | set(edits) | ({stop_at} if stop_at else set())
    with exclusive(), model.hooks(fwd_hooks=[(name, hook) for name in names]):
        try:
            if start_layer is None:
                model(inputs, return_type=None, **forward)
            else:
                model(inputs, start_at_layer=start_layer, return_type=None, **forward)
        except _Stop:
            pass
    return acts


def node_keys(sae: SAE, positions: Int[Tensor, " n"], features: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
    """One integer per (position, feature) node of `sae` (error nodes have feature -1)."""
    return positions * (sae.cfg.d_sae + 1) + features + 1


def reachable(write: str, read: str, n_pos: int, anchor: int, upstream: bool) -> Bool[Tensor, " pos"]:
    """Positions whose nodes can affect (upstream) or be affected by (downstream) the anchor's position.

    Causality rules out later sources; without an attention layer between `write` and `read`,
    only the anchor's own position is reachable.
    """
    positions = torch.arange(n_pos)
    same = positions == anchor
    if not hooks.crosses_positions(write, read):
        return same
    return positions <= anchor if upstream else positions >= anchor


def check_finite(values: Tensor, what: str) -> None:
    """Refuse NaN or infinite activations, which would make every score meaningless."""
    if not torch.isfinite(values).all():
        raise FeatureLensError(
            f"{what} contains NaN or infinite values. Check the model and SAE weights (and their dtype)."
        )


def anchor_activation(
    anchor: Anchor, read_act: Float[Tensor, "pos ..."], tokens: list[str], every_position: bool = True
) -> Tensor:
    """The anchor's activation at its position (keeping any autograd graph); refuses an inactive anchor.

    By default every position is encoded, which keeps the arithmetic identical to the baseline's (so a
    baseline equal to the clean value cancels exactly); `every_position=False` encodes the anchor's alone,
    for a target whose value is compared with nothing (upstream).
    """
    if every_position:
        acts = hooks.encode(anchor.sae, read_act)[anchor.position]
    else:
        acts = hooks.encode(anchor.sae, read_act[anchor.position : anchor.position + 1])[0]
    check_finite(acts, f"SAE '{anchor.name}' at position {anchor.position}")
    value = acts[anchor.feature]
    if value == 0:
        top = acts.detach().topk(min(SHOWN_ACTIVE, acts.numel()))
        active = [f"{i} ({v:.3g})" for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True) if v != 0]
        listed = ", ".join(active) if active else "none"
        raise FeatureLensError(
            f"Feature {anchor.feature} of '{anchor.name}' is not active at position {anchor.position} "
            f"(token {tokens[anchor.position]!r}). Active there: {listed}. Pick an active feature or another "
            "position."
        )
    return value


def source_nodes(
    name: str,
    sae: SAE,
    read_act: Float[Tensor, "pos ..."],
    write_act: Float[Tensor, "pos ..."],
    base: BaselineValues,
    allowed: Bool[Tensor, " pos"],
) -> Nodes:
    """Every node of one source SAE at the `allowed` positions: active features, then error nodes.

    A feature is a node where it is active on the clean prompt (or, for a corrupt baseline, on the
    corrupt one). Each position has one error node.
    """
    where = hooks.site(sae)
    dtype = write_act.dtype
    codes = hooks.encode(sae, read_act)
    acts = codes.to(dtype)
    check_finite(acts, f"SAE '{name}'")
    active = acts != 0
    if base.widens:
        active = active | (base.features != 0)
    positions, features = (active & allowed[:, None]).nonzero(as_tuple=True)
    a = acts[positions, features]
    recon = hooks.reconstruction(sae, read_act, where.write, acts=codes).to(dtype)
    error = hooks.flat(write_act, where.write) - recon
    error_positions = allowed.nonzero().flatten()
    # Filled in place: at scale (thousands of nodes, d_model wide) every temporary of this size counts.
    n = len(positions)
    delta = torch.empty(n + len(error_positions), error.shape[-1], dtype=dtype)
    torch.index_select(hooks.decoder(sae, dtype), 0, features, out=delta[:n])
    delta[:n] *= (base.features[positions, features] - a)[:, None]
    torch.sub(base.error[error_positions], error[error_positions], out=delta[n:])
    return Nodes(
        name,
        sae,
        torch.cat([positions, error_positions]),
        torch.cat([features, torch.full_like(error_positions, -1)]),
        torch.cat([a, error[error_positions].norm(dim=-1)]),
        delta,
    )


def anchor_delta(
    anchor: Anchor,
    read_act: Float[Tensor, "pos ..."],
    base: BaselineValues,
    tokens: list[str],
    dtype: torch.dtype,
) -> Float[Tensor, " d_write"]:
    """What ablating the anchor feature adds at its write hook, at its position."""
    a = anchor_activation(anchor, read_act, tokens).detach().to(dtype)
    b = base.features[anchor.position, anchor.feature]
    return (b - a) * hooks.decoder(anchor.sae, dtype)[anchor.feature]


def target_nodes(
    name: str, sae: SAE, acts: Float[Tensor, "pos d_sae"], allowed: Bool[Tensor, " pos"], score: Tensor
) -> Scored:
    """Scored downstream nodes: the features active on the clean run at the `allowed` positions."""
    check_finite(acts, f"SAE '{name}'")
    positions, features = ((acts != 0) & allowed[:, None]).nonzero(as_tuple=True)
    return Scored(name, sae, positions, features, acts[positions, features], score[positions, features])


def batch_size(model: HookedTransformer, n_pos: int, budget: int = 2**24) -> int:
    """How many patched copies of an n_pos-token run fit in about `budget` floats of activations."""
    cfg = model.cfg
    per_copy = n_pos * (2 * (cfg.d_mlp or 4 * cfg.d_model) + 6 * cfg.d_model + 2 * cfg.n_heads * n_pos)
    return max(1, budget // per_copy)
