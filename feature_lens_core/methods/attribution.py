"""Attribution patching: the first-order estimate -<delta, dg/dx_U[p]>, gradients through every path.

The product is taken on the model as it is (`linear` with `frozen=False`): upstream one forward and one
backward pass, downstream one forward-mode pass.
"""

from __future__ import annotations

from collections.abc import Mapping

from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core.methods import linear
from feature_lens_core.methods.types import Anchor, Baseline, Scored, Target


def upstream(
    model: HookedTransformer, tokens: Tensor, sources: Mapping[str, SAE], target: Target, baseline: Baseline
) -> list[Scored]:
    """First-order scores of every node of every source SAE on the target: one forward, one backward."""
    return linear.upstream(model, tokens, sources, target, baseline, frozen=False)


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """First-order scores of the source on every active feature of every target SAE: one forward-mode pass."""
    return linear.downstream(model, tokens, source, targets, baseline, frozen=False)
