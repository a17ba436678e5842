"""Direct attribution: the linear effect of a source on a target along every path through no other chosen node.

LayerNorm scales and attention patterns are frozen at the clean run; a block whose output a chosen SAE
covers (an attention `hook_z` SAE, an MLP-output SAE or a transcoder of that layer) mediates, so paths
through it run through its nodes and are not part of the direct edge; a block no chosen SAE covers is a
linear pass-through (attention through its frozen pattern and OV circuit, an MLP through its Jacobian at
the clean input). This is the edge of an attribution graph as circuit-tracer computes it over transcoders;
with every block between source and target covered it is the direct residual-stream path alone. The
product -<delta, dg/dx_U[p]> is taken on that frozen model (`linear` with `frozen=True`): upstream one
forward and one backward pass, downstream one forward-mode pass. docs/methods.md has the definitions.
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
    """Direct scores of every node of every source SAE on the target: one forward, one backward (frozen)."""
    return linear.upstream(model, tokens, sources, target, baseline, frozen=True)


def downstream(
    model: HookedTransformer, tokens: Tensor, source: Anchor, targets: Mapping[str, SAE], baseline: Baseline
) -> list[Scored]:
    """Direct scores of the source on every active feature of every target SAE: one forward-mode pass (frozen)."""
    return linear.downstream(model, tokens, source, targets, baseline, frozen=True)
