"""The estimators behind `ranking.rank`: one protocol, one module per method, one registry.

One quantity, four ways to compute it (docs/methods.md): for a source node (feature f of SAE U at
position p, or U's reconstruction error at p) and a target feature g of SAE D at position q,

    score = g(clean) - g(ablated),

where the ablation adds `delta` at U's write hook, position p, and changes nothing else:
`delta = (b - a_f) * W_dec_U[f]` for a feature, `delta = e_b - e_p` for an error node (e_p is U's
reconstruction error, e_b its baseline: zero, or its value on the corrupt prompt).

- `activation`: runs the ablation (exact);
- `attribution`: -<delta, dg/dx_U[p]> on the clean run (first order, all paths);
- `direct`: the same product along the direct residual path only, with frozen LayerNorm scales,
  attention patterns and MLP slopes;
- `integrated`: attribution averaged along the path from clean to ablated (integrated gradients).

Each module implements `Estimator`; the shared steps (types, the hooked runner, node building) live in
`types`, `runner` and `nodes`. Adding a method is one module and one line in `ESTIMATORS` (and its name
in `options.Method`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core.methods import activation, attribution, direct, integrated
from feature_lens_core.methods.types import Anchor, Baseline, Scored, Target
from feature_lens_core.options import Method


class Estimator(Protocol):
    """Scores of every node on one side of an anchor, one `Scored` per SAE ranked.

    `tokens` [1, pos] is the whole prompt; the caller holds `exclusive()` and has validated the request.
    """

    def upstream(
        self, model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Target, baseline: Baseline
    ) -> list[Scored]:
        """Each node of each source SAE (at positions <= the target's) scored on the target."""
        ...

    def downstream(
        self, model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
    ) -> list[Scored]:
        """The source scored on each active feature of each target SAE (at positions >= the source's)."""
        ...


ESTIMATORS: dict[Method, Estimator] = {
    "activation": activation,
    "attribution": attribution,
    "direct": direct,
    "integrated": integrated,
}
