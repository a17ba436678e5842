"""The hooked forward pass every estimator runs, and the helpers that keep it cheap."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn
from transformer_lens import HookedTransformer

from feature_lens_core.exclusive import exclusive

Edit = Callable[[Tensor], Tensor]


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


def batch_size(model: HookedTransformer, n_pos: int, budget: int = 2**24) -> int:
    """How many patched copies of an n_pos-token run fit in about `budget` floats of activations."""
    cfg = model.cfg
    per_copy = n_pos * (2 * (cfg.d_mlp or 4 * cfg.d_model) + 6 * cfg.d_model + 2 * cfg.n_heads * n_pos)
    return max(1, budget // per_copy)
