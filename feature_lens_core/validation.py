"""The checks every entry point (Python API, CLI, app) runs on a request, written once.

Each helper raises `FeatureLensError` with a message that says what is wrong and what to change;
the ranking, graph and batch functions call these before any tensor is touched.

>>> from feature_lens_core.validation import choice, count
>>> choice("direct", ("activation", "direct"), "method")
'direct'
>>> count(None, "top_k", optional=True) is None
True
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TypeVar

from jaxtyping import Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods.types import Baseline
from feature_lens_core.options import BaselineKind
from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef, Target

T = TypeVar("T", bound=str)


def choice(value: object, options: Collection[T], what: str) -> T:
    """`value` if it is one of `options`; else an error listing them all."""
    if not isinstance(value, str) or value not in options:
        raise FeatureLensError(f"Unknown {what} {value!r}. Use one of: {', '.join(options)}.")
    return value  # type: ignore[return-value]  # narrowed by the membership test


def whole(value: object) -> bool:
    """Whether `value` is an int (a bool is not a number of things)."""
    return isinstance(value, int) and not isinstance(value, bool)


def count(value: object, what: str, *, optional: bool = False) -> int | None:
    """`value` as a whole number of at least 1 (None passes when `optional`)."""
    if value is None and optional:
        return None
    if not whole(value) or value < 1:  # type: ignore[operator]  # whole() checked the type
        alternative = ", or None for all" if optional else ""
        raise FeatureLensError(f"{what} must be a whole number of at least 1{alternative} (got {value!r}).")
    return value  # type: ignore[return-value]


def index(value: object, what: str, size: int, where: str) -> int:
    """`value` as an index from 0 to `size - 1`; `where` names what it indexes, for the message."""
    if not whole(value):
        raise FeatureLensError(f"{what} {value!r} is not a whole number. Give an index such as 0, 1, 2, ...")
    if not 0 <= value < size:  # type: ignore[operator]
        plural = what.split()[0].lower() + "s"
        raise FeatureLensError(f"{what} {value!r} is out of range: {where} has {plural} 0 to {size - 1}.")
    return value  # type: ignore[return-value]


def non_negative(value: object, what: str, *, optional: bool = True) -> float | None:
    """`value` as a number of at least 0 (None passes when `optional`)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        alternative = ", or None" if optional else ""
        raise FeatureLensError(f"{what} must be a number of at least 0{alternative} (got {value!r}).")
    return float(value)


def fraction(value: object, what: str) -> float:
    """`value` as a number from 0 to 1 (a share of a total, such as a cumulative influence threshold)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FeatureLensError(f"{what} must be a number from 0 to 1 (got {value!r}).")
    return float(value)


def prompt_tokens(model: HookedTransformer, prompt: object, what: str = "prompt") -> Int[Tensor, "1 pos"]:
    """The prompt as the model tokenizes it by default; refuses empty prompts and ones over n_ctx tokens."""
    if not isinstance(prompt, str):
        raise FeatureLensError(f"The {what} must be text (a str), not a {type(prompt).__name__}.")
    if not prompt.strip():
        raise FeatureLensError(f"The {what} is empty. Give some text to run the model on.")
    _valid_unicode(prompt, what)
    if model.tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so it cannot read text prompts. Load it with one.")
    tokens = model.to_tokens(prompt, truncate=False)
    if tokens.shape[1] > model.cfg.n_ctx:
        raise FeatureLensError(
            f"The {what} is {tokens.shape[1]} tokens long, but this model reads at most {model.cfg.n_ctx} "
            "(BOS included). Shorten it."
        )
    return tokens


def _valid_unicode(text: str, what: str) -> None:
    """Refuse lone surrogates, which tokenizers cannot encode."""
    if any("\ud800" <= char <= "\udfff" for char in text):
        raise FeatureLensError(
            f"The {what} contains a lone surrogate (text that is not valid Unicode, as a non-UTF-8 byte becomes on "
            "a command line). Give the text as UTF-8."
        )


def sae_set(model: HookedTransformer, saes: object) -> Mapping[str, SAE]:
    """`saes` if it is a non-empty mapping from names to SAEs that fit `model`."""
    if not isinstance(saes, Mapping) or not saes:
        raise FeatureLensError("No SAEs were given. Pass a dict from name to SAE, the chosen feature's included.")
    for name, sae in saes.items():
        hooks.check_fits(model, name, sae)
    return saes


def check_target(saes: Mapping[str, SAE], target: object, n_pos: int) -> Target:
    """`target` if it is a Target whose SAE (for a feature) is in `saes`, whose feature is in range and whose
    position is on the prompt. A logit target's tokens are checked by `logit_tokens`."""
    if isinstance(target, LogitRef | LogitDiffRef):
        _position(target.position, n_pos)
        return target
    if not isinstance(target, FeatureRef):
        raise FeatureLensError(
            f"The target must be a FeatureRef(sae, feature, position), LogitRef(token, position) or "
            f"LogitDiffRef(token, other, position), not {target!r}."
        )
    if target.sae not in saes:
        raise FeatureLensError(
            f"SAE '{target.sae}' of the chosen feature is not among the SAEs given "
            f"({', '.join(saes) or 'none'}). Add it to the SAEs."
        )
    for what, value in (("Feature", target.feature), ("Position", target.position)):
        if not whole(value):
            raise FeatureLensError(f"{what} {value!r} is not a whole number. Give an index such as 0, 1, 2, ...")
    index(target.feature, "Feature", saes[target.sae].cfg.d_sae, f"SAE '{target.sae}'")
    _position(target.position, n_pos)
    return target


def _position(position: object, n_pos: int) -> None:
    if not whole(position):
        raise FeatureLensError(f"Position {position!r} is not a whole number. Give an index such as 0, 1, 2, ...")
    if not 0 <= position < n_pos:  # type: ignore[operator]  # whole() checked the type
        raise FeatureLensError(
            f"Position {position!r} is out of range: the prompt has {n_pos} tokens (positions 0 to "
            f"{n_pos - 1}, 0 is BOS)."
        )


def token_id(model: HookedTransformer, token: object) -> int:
    """The id of `token`: a token id of the model's vocabulary, or a string that is exactly one token."""
    d_vocab = model.cfg.d_vocab
    if whole(token):
        return index(token, "Token id", d_vocab, "the vocabulary")
    if not isinstance(token, str) or not token:
        raise FeatureLensError(f"A logit's token must be a non-empty string or a token id, not {token!r}.")
    _valid_unicode(token, "logit's token")
    if model.tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so a token must be given as an id.")
    # The tokenizer itself, not model.to_tokens(prepend_bos=False): TransformerLens overrides a default on the
    # shared model while it tokenizes, so another visitor's prompt tokenized meanwhile would lose its BOS.
    ids = list(model.tokenizer.encode(token, add_special_tokens=False))
    if len(ids) != 1:
        pieces = " + ".join(repr(model.tokenizer.decode([i])) for i in ids)
        raise FeatureLensError(
            f"{token!r} is {len(ids)} tokens for this model's tokenizer ({pieces or 'none'}). A logit target "
            "needs exactly one token: give one of these pieces (mind a word's leading space) or a token id."
        )
    return int(ids[0])


def baseline(
    model: HookedTransformer, tokens: Int[Tensor, "1 pos"], kind: BaselineKind, corrupt_prompt: str | None
) -> Baseline:
    """The Baseline ablated nodes are set to; a corrupt prompt must have the prompt's token length."""
    if kind != "corrupt":
        return Baseline(kind, None, feature_data.mean_activations if kind == "mean" else None)
    if corrupt_prompt is None:
        raise FeatureLensError("The 'corrupt' baseline needs a corrupt prompt. Give one of the same token length.")
    corrupt = prompt_tokens(model, corrupt_prompt, what="corrupt prompt")
    if corrupt.shape != tokens.shape:
        raise FeatureLensError(
            f"The corrupt prompt is {corrupt.shape[1]} tokens long and the prompt {tokens.shape[1]}. They must "
            "have the same token length, so that positions correspond."
        )
    return Baseline(kind, corrupt)
