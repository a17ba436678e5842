"""Per-feature dashboard data: labels, top examples, density, mean activation, logit effects.

The built-in SAEs ship this data beside their weights (`feature_data.safetensors`,
`labels.json`, written by the zoo build). For any other SAE, what can be computed
locally (logit effects) is computed; the rest is reported as unavailable.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from sae_lens import SAE
from safetensors.torch import load_file
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.logit_effects import logit_effects
from feature_lens_core.zoo import paths

CONTEXT_BEFORE = 10
CONTEXT_AFTER = 4


@dataclass(frozen=True)
class Example:
    """One top-activating snippet: text around the activating token, and the activation.

    The text is cut at the window the model read, so `before` is all the model saw before
    `token` (or its last `CONTEXT_BEFORE` tokens). `position` is the token's position in that
    window; at position 1 the model saw only BOS before it (`only_bos_before`).
    """

    before: str
    token: str
    after: str
    activation: float
    position: int

    @property
    def only_bos_before(self) -> bool:
        return self.position == 1


@dataclass(frozen=True)
class FeatureCard:
    """Everything a dashboard shows about one feature; `None` where no data exists for this SAE."""

    feature: int
    label: str
    density: float | None
    mean_activation: float | None
    examples: list[Example] = field(default_factory=list)
    boosted: list[tuple[str, float]] = field(default_factory=list)
    suppressed: list[tuple[str, float]] = field(default_factory=list)


def _folder(sae: SAE) -> Path | None:
    folder = sae.cfg.metadata.local_folder
    return Path(folder) if folder and (Path(folder) / "feature_data.safetensors").exists() else None


@functools.cache
def _shipped(folder: Path) -> dict[str, Tensor]:
    return load_file(str(folder / "feature_data.safetensors"))


@functools.cache
def _labels(folder: Path) -> tuple[str, ...]:
    path = folder / "labels.json"
    return tuple(json.loads(path.read_text())) if path.exists() else ()


@functools.cache
def _held_out_tokens() -> Tensor:
    return load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()


def shipped_data(sae: SAE) -> dict[str, Tensor] | None:
    """The SAE's shipped `feature_data.safetensors` (see docs/model-zoo.md), or None where it ships none."""
    folder = _folder(sae)
    return _shipped(folder) if folder else None


def has_feature_data(sae: SAE) -> bool:
    """Whether shipped dashboard data exists for this SAE."""
    return _folder(sae) is not None


def mean_activations(sae: SAE) -> Float[Tensor, " d_sae"]:
    """Each feature's mean activation on reference text (the `mean` baseline)."""
    folder = _folder(sae)
    if folder is None:
        raise FeatureLensError(
            f"The 'mean' baseline needs each feature's mean activation, and SAE "
            f"'{sae.cfg.metadata.hook_name}' ships none. Use baseline 'zero' or 'corrupt'."
        )
    return _shipped(folder)["mean_activation"].to(sae.W_dec.dtype)


def feature_labels(sae: SAE) -> list[str]:
    """A short label per feature: shipped automatic labels, or empty strings."""
    folder = _folder(sae)
    labels = _labels(folder) if folder else ()
    return list(labels) if labels else [""] * sae.cfg.d_sae


def feature_label(sae: SAE, feature: int) -> str:
    """One feature's label, or `#feature` when none is known."""
    folder = _folder(sae)
    labels = _labels(folder) if folder else ()
    return labels[feature] if labels else f"#{feature}"


def feature_card(model: HookedTransformer, sae: SAE, feature: int, k: int = 8) -> FeatureCard:
    """The dashboard of `feature`: shipped data where it exists, logit effects computed for any SAE."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise FeatureLensError(f"Feature {feature} is out of range: this SAE has features 0 to {sae.cfg.d_sae - 1}.")
    tokenizer = model.tokenizer
    assert tokenizer is not None

    def text(ids: Tensor) -> str:
        return str(tokenizer.decode(ids.tolist()))

    folder = _folder(sae)
    if folder is None:
        effects = logit_effects(model, sae, k)
        return FeatureCard(
            feature=feature,
            label=f"#{feature}",
            density=None,
            mean_activation=None,
            boosted=[
                (text(i[None]), float(v))
                for i, v in zip(effects.boosted[feature], effects.boosted_value[feature], strict=True)
            ],
            suppressed=[
                (text(i[None]), float(v))
                for i, v in zip(effects.suppressed[feature], effects.suppressed_value[feature], strict=True)
            ],
        )
    data = _shipped(folder)
    tokens = _held_out_tokens()
    examples = []
    for index, position, activation in zip(
        data["top_index"][feature].tolist(),
        data["top_position"][feature].tolist(),
        data["top_activation"][feature].tolist(),
        strict=True,
    ):
        if index < 0:
            continue
        # The window holds positions 1 .. n_ctx - 1 after its BOS, stream tokens start .. start + n_ctx - 2.
        start = index - position + 1
        end = start + model.cfg.n_ctx - 1
        examples.append(
            Example(
                before=text(tokens[max(start, index - CONTEXT_BEFORE) : index]),
                token=text(tokens[index : index + 1]),
                after=text(tokens[index + 1 : min(end, index + 1 + CONTEXT_AFTER)]),
                activation=activation,
                position=position,
            )
        )
    return FeatureCard(
        feature=feature,
        label=feature_label(sae, feature),
        density=float(data["density"][feature]),
        mean_activation=float(data["mean_activation"][feature]),
        examples=examples,
        boosted=[
            (text(torch.tensor([int(i)])), float(v))
            for i, v in zip(data["boosted"][feature][:k], data["boosted_value"][feature][:k], strict=True)
        ],
        suppressed=[
            (text(torch.tensor([int(i)])), float(v))
            for i, v in zip(data["suppressed"][feature][:k], data["suppressed_value"][feature][:k], strict=True)
        ],
    )
