"""Worked examples on the built-in model: a prompt and a target feature that fires on it, and the landing view.

A first visit with no query parameters asks "why does the model predict this token here?" on the first
example's prompt and position: the model's next-token logit, for its top prediction there (`LANDING_TOKEN`).
Each was checked on the shipped model (see tests/app/test_examples.py): the target is
active at its position, so the rankings are never empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    title: str
    prompt: str
    sae: str
    feature: int
    position: int


EXAMPLES: tuple[Example, ...] = (
    # An MLP feature on the word after "art": what feeds it comes from " thou" itself and from attention.
    Example(
        title="Wherefore art thou Romeo?",
        prompt="O Romeo, Romeo, wherefore art thou Romeo?",
        sae="L1.mlp_out",
        feature=924,
        position=8,
    ),
    # A feature that fires on names of people (" Juliet" here, " Romeo" elsewhere), mostly from the MLP below.
    Example(
        title="Juliet is the sun",
        prompt="But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.",
        sae="L1.mlp_out",
        feature=78,
        position=21,
    ),
    # An attention feature that grows along the phrase "this sun of York", peaking on " York".
    Example(
        title="The sun of York",
        prompt="Now is the winter of our discontent made glorious summer by this sun of York.",
        sae="L1.attn_z",
        feature=804,
        position=18,
    ),
)

# The built-in model's most probable next token after ' thou' (position 8) of the first example's prompt, ahead of
# a new line and '?' (tests/app/test_examples.py checks it is still the top prediction).
LANDING_TOKEN = ","

# The SAEs a first visit ranks over: attention and MLP outputs of every layer. Within hosted mode's cap
# (hosting.HOSTED.max_saes), so a first visit to the hosted app is the same worked example.
DEFAULT_SAES: tuple[str, ...] = ("L0.attn_z", "L0.mlp_out", "L1.attn_z", "L1.mlp_out", "L2.attn_z", "L2.mlp_out")
