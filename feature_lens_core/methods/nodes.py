"""Building the nodes a ranking scores: which positions can matter, the anchor, sources and targets."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods.types import Anchor, Baseline, BaselineValues, LogitAnchor, Nodes, Scored, Target

SHOWN_ACTIVE = 8  # active features listed when a chosen feature is not active


def node_keys(sae: SAE, positions: Int[Tensor, " n"], features: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
    """One integer per (position, feature) node of `sae` (error nodes have feature -1)."""
    return positions * (sae.cfg.d_sae + 1) + features + 1


def reachable(
    write: str, read: str, n_pos: int, anchor: int, *, upstream: bool, device: torch.device | str = "cpu"
) -> Bool[Tensor, " pos"]:
    """Positions whose nodes can affect (upstream) or be affected by (downstream) the anchor's position.

    Causality rules out later sources; without an attention layer between `write` and `read`,
    only the anchor's own position is reachable.
    """
    positions = torch.arange(n_pos, device=device)
    same = positions == anchor
    if not hooks.crosses_positions(write, read):
        return same
    return positions <= anchor if upstream else positions >= anchor


def token_strings(model: HookedTransformer, tokens: Int[Tensor, "1 pos"]) -> list[str]:
    """The prompt's tokens as strings, for messages and result rows."""
    strings = model.to_str_tokens(tokens[0])
    return [str(t) for t in strings]


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


def target_value(
    target: Target, read_act: Float[Tensor, "pos ..."], tokens: list[str], *, frozen_norm: bool = False
) -> Tensor:
    """The upstream target's value at its position from its read hook's activation (keeping any autograd
    graph; `frozen_norm` as in `LogitAnchor.value`); a feature target must be active there."""
    if isinstance(target, LogitAnchor):
        value = target.value(read_act[target.position], frozen_norm=frozen_norm)
        check_finite(value, f"The {target.name} at position {target.position}")
        return value
    return anchor_activation(target, read_act, tokens, every_position=False)


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
    error = hooks.error(sae, read_act, write_act, where.write, acts=codes)
    error_positions = allowed.nonzero().flatten()
    # Filled in place: at scale (thousands of nodes, d_model wide) every temporary of this size counts.
    n = len(positions)
    delta = torch.empty(n + len(error_positions), error.shape[-1], dtype=dtype, device=error.device)
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


def upstream_hooks(sources: Mapping[str, SAE], target: Target) -> set[str]:
    """The hooks an upstream pass captures: each source's read and write hooks and the target's read hook."""
    return {h for sae in sources.values() for h in (hooks.site(sae).read, hooks.site(sae).write)} | {target.read}


def upstream_nodes(
    model: HookedTransformer,
    sources: Mapping[str, SAE],
    target: Target,
    baseline: Baseline,
    acts: Mapping[str, Tensor],
) -> list[Nodes]:
    """Every node of every source SAE that can reach the target, from the clean activations `acts` (batch 1,
    positions up to the target's): the preamble every upstream estimator shares."""
    q, read = target.position, target.read
    base = baseline.values(model, sources, q + 1)
    out = []
    for name, sae in sources.items():
        where = hooks.site(sae)
        read_act, write_act = acts[where.read][0].detach(), acts[where.write][0].detach()
        allowed = reachable(where.write, read, q + 1, q, upstream=True, device=write_act.device)
        out.append(source_nodes(name, sae, read_act, write_act, base[name], allowed))
    return out


def first_order_scores(
    model: HookedTransformer,
    sources: Mapping[str, SAE],
    target: Target,
    baseline: Baseline,
    acts: Mapping[str, Tensor],
    gradient: Callable[[Nodes], Float[Tensor, "pos d_write"]],
) -> list[Scored]:
    """Every upstream node scored -<delta, gradient(its SAE's nodes) at its position> (`Nodes.first_order`)."""
    return [nodes.first_order(gradient(nodes)) for nodes in upstream_nodes(model, sources, target, baseline, acts)]


def downstream_allowed(source: Anchor, read: str, n_pos: int, device: torch.device | str) -> Bool[Tensor, " pos"]:
    """Positions of a target SAE reading at `read` that the source can reach."""
    return reachable(hooks.site(source.sae).write, read, n_pos, source.position, upstream=False, device=device)


def target_nodes(
    name: str, sae: SAE, acts: Float[Tensor, "pos d_sae"], allowed: Bool[Tensor, " pos"], score: Tensor
) -> Scored:
    """Scored downstream nodes: the features active on the clean run at the `allowed` positions."""
    check_finite(acts, f"SAE '{name}'")
    positions, features = ((acts != 0) & allowed[:, None]).nonzero(as_tuple=True)
    return Scored(name, sae, positions, features, acts[positions, features], score[positions, features])
