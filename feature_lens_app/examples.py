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
    story: str  # the guided tour's words for it (`feature_lens_app.tour`); a "#N" it cites leads a ranking there


EXAMPLES: tuple[Example, ...] = (
    # Each target's shipped label (read off the held-out plays) names the token it fires on here
    # (tests/integration/test_labels.py), so the label a newcomer reads says what the example shows.
    Example(
        title="Wherefore art thou Romeo?",
        prompt="O Romeo, Romeo, wherefore art thou Romeo?",
        sae="L1.mlp_out",
        feature=843,
        position=8,
        story="A feature that fires on ' thou'. What drives it is led by a layer-0 ' thou' feature (#834); what it "
        "drives, by a layer-2 one (#685): one word carried through the layers. Click a bar to follow it; Back "
        "returns.",
    ),
    Example(
        title="Juliet is the sun",
        prompt="But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.",
        sae="L1.mlp_out",
        feature=282,
        position=22,
        story="A feature of the verb \"to be\" (' is', ' was'), on ' is' after ' Juliet': fed by a layer-0 ' is' "
        "feature (#826), feeding a layer-2 one (#415). Grey dashed bars are what the SAEs fail to explain.",
    ),
    Example(
        title="The winter of our discontent",
        prompt="Now is the winter of our discontent made glorious summer by this sun of York.",
        sae="L1.mlp_out",
        feature=793,
        position=6,
        story="A feature of possessives (' our', ' their'), on ' our': driven by a layer-0 ' our' feature (#264), "
        "it holds down (blue) a layer-2 feature of other possessives (#571: ' your', ' his', ' my').",
    ),
)

# The built-in model's most probable next token after ' thou' (position 8) of the first example's prompt, ahead of
# a new line and '?' (tests/app/test_examples.py checks it is still the top prediction).
LANDING_TOKEN = ","

# The SAEs a first visit ranks over: attention and MLP outputs of every layer. Within hosted mode's cap
# (hosting.HOSTED.max_saes), so a first visit to the hosted app is the same worked example.
DEFAULT_SAES: tuple[str, ...] = ("L0.attn_z", "L0.mlp_out", "L1.attn_z", "L1.mlp_out", "L2.attn_z", "L2.mlp_out")
