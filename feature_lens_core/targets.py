"""What a ranking or a graph is about: a feature at a position, or the model's next-token logit.

A `Target` is one of three shapes, each with a text form that `parse_target` reads and `str` writes (used
in URLs, CLI flags and graph node ids):

- `FeatureRef`: feature F of an SAE at position P, `SAE:F@P`;
- `LogitRef`: the logit of a token at position P minus the mean logit over the vocabulary (as
  circuit-tracer defines its logit nodes, so the unembedding bias and uniform shifts cancel), `logit[' thee']@P`;
- `LogitDiffRef`: logit(token) - logit(other) at P (the IOI-style metric), `logit[' thee' - ' you']@P`.

A token is a string that is exactly one token of the model's tokenizer, or a token id.

>>> from feature_lens_core.targets import FeatureRef, parse_target
>>> ref = FeatureRef.parse("L2.resid_pre:660@5")
>>> ref
FeatureRef(sae='L2.resid_pre', feature=660, position=5)
>>> str(ref)
'L2.resid_pre:660@5'
>>> parse_target("logit[' thee' - ' you']@7")
LogitDiffRef(token=' thee', other=' you', position=7)
>>> str(parse_target("logit[42]@3"))
'logit[42]@3'
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from feature_lens_core.errors import FeatureLensError

# Signed numbers parse, so that the range check (which names the valid range) is the one to report them.
_TEXT = re.compile(r"^(?P<sae>.+):(?P<feature>-?\d{1,18})@(?P<position>-?\d{1,18})$")  # 18 digits: any index fits
ERROR_NODE = "error"  # a node id's feature part for an SAE's reconstruction-error node


@dataclass(frozen=True)
class FeatureRef:
    """One feature at one position: `feature` of the SAE named `sae` (a key of the `saes` dict) at `position`.

    Positions index `model.to_tokens(prompt)`, so with the model's default BOS handling position 0
    is BOS. Whether the SAE exists, the feature is in range and the position is on the prompt is
    checked against a request (`validation.check_target`), not here.
    """

    sae: str
    feature: int
    position: int

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        """`SAE:FEATURE@POSITION` (e.g. `L2.resid_pre:660@5`) as a FeatureRef; refuses any other shape."""
        match = _TEXT.match(text) if isinstance(text, str) else None
        if not match:
            raise FeatureLensError(
                f"Expected a feature as SAE:FEATURE@POSITION, such as L2.resid_pre:12@5, not {text!r}."
            )
        return cls(match["sae"], int(match["feature"]), int(match["position"]))

    def __str__(self) -> str:
        return node_id(self.sae, self.feature, self.position)


@dataclass(frozen=True)
class LogitRef:
    """The logit of `token` at `position` minus the mean logit over the vocabulary (what predicts the next token).

    `token` is a string that is exactly one token of the model's tokenizer (mind the leading space of
    word tokens, e.g. `' thee'`), or a token id.
    """

    token: str | int
    position: int

    def __str__(self) -> str:
        return f"logit[{self.token!r}]@{self.position}"


@dataclass(frozen=True)
class LogitDiffRef:
    """logit(`token`) - logit(`other`) at `position`: how much the model prefers one next token to another."""

    token: str | int
    other: str | int
    position: int

    def __str__(self) -> str:
        return f"logit[{self.token!r} - {self.other!r}]@{self.position}"


Target = FeatureRef | LogitRef | LogitDiffRef
"""Everything a ranking can be about."""
LogitTarget = LogitRef | LogitDiffRef

_LOGIT = re.compile(r"^logit\[(?P<inside>.+)\]@(?P<position>-?\d{1,18})$", re.DOTALL)


def _token(text: str) -> str | int:
    """A token in a logit target's text: a Python string or int literal (never evaluated beyond a literal)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FeatureLensError(
            f"Expected a token as a quoted string or a token id, such as ' thee' or 42, not {text!r}."
        )
    return value


def parse_target(text: str) -> Target:
    """A target from its text form: `SAE:F@P`, `logit['TOKEN']@P` or `logit['TOKEN' - 'OTHER']@P`."""
    match = _LOGIT.match(text) if isinstance(text, str) else None
    if not match:
        return FeatureRef.parse(text)
    inside, position = match["inside"], int(match["position"])
    inside = inside.strip()
    try:
        body = ast.parse(inside, mode="eval").body if len(inside) < 1000 else None
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        body = None
    if isinstance(body, ast.BinOp) and isinstance(body.op, ast.Sub):
        left, right = (ast.get_source_segment(inside, side) or "" for side in (body.left, body.right))
        return LogitDiffRef(_token(left), _token(right), position)
    return LogitRef(_token(inside), position)


def node_id(sae: str, feature: int, position: int) -> str:
    """`SAE:FEATURE@POSITION`, or `SAE:error@POSITION` for an error node (feature -1)."""
    return f"{sae}:{ERROR_NODE if feature < 0 else feature}@{position}"
