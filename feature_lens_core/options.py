"""The named choices of a request, defined once: methods, directions, baselines.

Each is a `Literal` type for the type checker and a tuple of its values for the CLI's choices, the app's
widgets and validation (`validation.choice`), so a name added here reaches every entry point.

>>> from feature_lens_core.options import METHODS, DIRECTIONS
>>> METHODS
('activation', 'attribution', 'direct', 'integrated')
>>> DIRECTIONS
('upstream', 'downstream')
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["activation", "attribution", "direct", "integrated"]
"""How a score is computed: exact ablation, gradient x delta, the direct path, or integrated gradients."""

Direction = Literal["upstream", "downstream"]
"""Which side of the anchor is ranked: its causes (upstream) or its effects (downstream)."""

GraphDirection = Literal["upstream", "downstream", "both"]
"""Which sides of its target a graph grows on."""

BaselineKind = Literal["zero", "mean", "corrupt"]
"""What an ablated node is set to: zero, its mean activation, or its value on a corrupt prompt."""

METHODS: tuple[Method, ...] = get_args(Method)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
GRAPH_DIRECTIONS: tuple[GraphDirection, ...] = get_args(GraphDirection)
BASELINES: tuple[BaselineKind, ...] = get_args(BaselineKind)
