"""Per-feature dashboard data: labels, top examples, density, mean activation, logit effects, causal panels.

The built-in SAEs ship this data beside their weights (`feature_data.safetensors`,
`labels.json` and `causal_panels.safetensors`, written by the zoo build). For any other SAE, what can be computed
locally (logit effects) is computed; the rest is reported as unavailable.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from sae_lens import SAE
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import untrusted_files, validation
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


# What each tensor of feature_data.safetensors is: floating point or integer, and its number of dimensions
# ([d_sae] or [d_sae, k]); tensors in one group share their shape.
SHIPPED = {
    "density": (True, 1),
    "mean_activation": (True, 1),
    "top_index": (False, 2),
    "top_position": (False, 2),
    "top_activation": (True, 2),
    "boosted": (False, 2),
    "boosted_value": (True, 2),
    "suppressed": (False, 2),
    "suppressed_value": (True, 2),
}
SHAPE_GROUPS = (("top_index", "top_position", "top_activation"), ("boosted", "boosted_value"))
SHAPE_GROUPS += (("suppressed", "suppressed_value"),)
# causal_panels.safetensors: per side, [d_sae, k] tensors (is it floating point?), plus `occurrences` [d_sae].
PANEL_FIELDS = {"sae": False, "feature": False, "score": True, "frequency": True}
PANEL_SIDES = ("upstream", "downstream")
LABELS_MAX_BYTES = 64 * 2**20  # a few hundred bytes per label for a million features


def _folder(sae: SAE) -> Path | None:
    folder = sae.cfg.metadata.local_folder
    return Path(folder) if folder and (Path(folder) / "feature_data.safetensors").exists() else None


@functools.cache
def _shipped(folder: Path, d_sae: int) -> dict[str, Tensor]:
    """feature_data.safetensors, checked against SHIPPED and the SAE's d_sae before any of it is indexed."""
    where = f"SAE folder '{folder}': feature_data.safetensors"
    try:
        data = load_file(str(folder / "feature_data.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise FeatureLensError(
            f"{where} could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}). It is not a "
            "complete safetensors file; rebuild it or remove it (the dashboards then show what can be computed)."
        ) from exc
    for name, (floating, dims) in SHIPPED.items():
        tensor = data.get(name)
        kind = "floating-point" if floating else "integer"
        if tensor is None or tensor.dim() != dims or tensor.shape[0] != d_sae or tensor.is_floating_point() != floating:
            found = "missing" if tensor is None else f"{tensor.dtype} of shape {tuple(tensor.shape)}"
            raise FeatureLensError(
                f"{where}: '{name}' must be {kind} of shape [d_sae{', k' if dims == 2 else ''}] with d_sae = {d_sae} "
                f"(found {found}). Rebuild it for this SAE or remove it."
            )
    for group in SHAPE_GROUPS:
        if len({data[name].shape for name in group}) > 1:
            raise FeatureLensError(f"{where}: {', '.join(group)} must have the same shape. Rebuild it or remove it.")
    if data["top_index"].max() >= len(_held_out_tokens()) or data["top_index"].min() < -1:
        raise FeatureLensError(f"{where}: top_index points outside the held-out text. Rebuild it or remove it.")
    return data


@functools.cache
def _labels(folder: Path, d_sae: int) -> tuple[str, ...]:
    """labels.json (a list of d_sae strings) if it exists, else ()."""
    path = folder / "labels.json"
    if not path.exists():
        return ()
    what = f"SAE folder '{folder}': labels.json"
    labels = untrusted_files.read_json(path, what=what, max_bytes=LABELS_MAX_BYTES)
    if not isinstance(labels, list) or len(labels) != d_sae or not all(isinstance(label, str) for label in labels):
        found = f"a list of {len(labels)}" if isinstance(labels, list) else f"a JSON {type(labels).__name__}"
        raise FeatureLensError(
            f"{what} must be a list of {d_sae} strings, one label per feature (found {found}). Fix it or remove it."
        )
    return tuple(labels)


@dataclass(frozen=True)
class CorpusEdge:
    """Another feature's edge with this one across the corpus: its mean score where the edge appears (the direct
    effect summed over positions, per occurrence) and its frequency (the share of this feature's occurrences
    with the edge)."""

    sae: str
    feature: int
    score: float
    frequency: float


@dataclass(frozen=True)
class CausalPanel:
    """A feature's top causes (`upstream`) and effects (`downstream`) over `n_prompts` held-out prompts in which
    it was active at `occurrences` positions, strongest first (mean score times frequency)."""

    occurrences: int
    n_prompts: int
    saes: tuple[str, ...]
    upstream: list[CorpusEdge]
    downstream: list[CorpusEdge]


@functools.cache
def _panels(folder: Path, d_sae: int) -> tuple[dict[str, Tensor], tuple[str, ...], int] | None:
    """causal_panels.safetensors (tensors, the SAE set's names, the number of prompts), checked, or None."""
    path = folder / "causal_panels.safetensors"
    if not path.exists():
        return None
    where = f"SAE folder '{folder}': causal_panels.safetensors"
    try:
        with safe_open(str(path), "pt") as file:
            data = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118  # safe_open is not a dict
            metadata = file.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise FeatureLensError(
            f"{where} could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}). Rebuild it "
            "(python -m feature_lens_core.zoo.build --stages causes) or remove it."
        ) from exc
    names = untrusted_files.read_json_text(metadata.get("saes", "null"), what=f"{where}: metadata 'saes'")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise FeatureLensError(f"{where}: its metadata 'saes' must list the SAE set's names. Rebuild it or remove it.")
    n_prompts = metadata.get("n_prompts", "")
    occurrences = data.get("occurrences")
    if not n_prompts.isdigit() or occurrences is None or occurrences.shape != (d_sae,):
        raise FeatureLensError(
            f"{where}: it must hold 'occurrences' of shape [{d_sae}] and 'n_prompts' in its metadata. Rebuild it."
        )
    shapes = set()
    for side in PANEL_SIDES:
        for field_name, floating in PANEL_FIELDS.items():
            tensor = data.get(f"{side}_{field_name}")
            if (
                tensor is None
                or tensor.dim() != 2
                or tensor.shape[0] != d_sae
                or tensor.is_floating_point() != floating
            ):
                found = "missing" if tensor is None else f"{tensor.dtype} of shape {tuple(tensor.shape)}"
                raise FeatureLensError(
                    f"{where}: '{side}_{field_name}' must be {'floating-point' if floating else 'integer'} of shape "
                    f"[{d_sae}, k] (found {found}). Rebuild it or remove it."
                )
            shapes.add(tensor.shape)
        if (
            data[f"{side}_sae"].min() < -1
            or data[f"{side}_sae"].max() >= len(names)
            or data[f"{side}_feature"].min() < -1
        ):
            raise FeatureLensError(
                f"{where}: '{side}_sae' or '{side}_feature' is out of range. Rebuild it or remove it."
            )
    if len(shapes) > 1:
        raise FeatureLensError(f"{where}: every upstream_* and downstream_* tensor must have one shape. Rebuild it.")
    return data, tuple(names), int(n_prompts)


def causal_panel(sae: SAE, feature: int) -> CausalPanel | None:
    """The feature's causes and effects across the held-out text, shipped for the built-in SAE sets, else None."""
    validation.index(feature, "Feature", sae.cfg.d_sae, "this SAE")
    folder = _folder(sae)
    shipped = _panels(folder, sae.cfg.d_sae) if folder else None
    if shipped is None:
        return None
    data, names, n_prompts = shipped
    return panel_of(data, names, n_prompts, feature)


def panel_of(top: Mapping[str, Tensor], names: Sequence[str], n_prompts: int, feature: int) -> CausalPanel:
    """One feature's panel from an SAE's top-k tensors (`CorpusEdges.top`: `upstream_sae` indexes `names`)."""
    validation.index(feature, "Feature", len(top["occurrences"]), "this SAE")

    def side(name: str) -> list[CorpusEdge]:
        return [
            CorpusEdge(names[int(s)], int(f), float(score), float(frequency))
            for s, f, score, frequency in zip(
                top[f"{name}_sae"][feature].tolist(),
                top[f"{name}_feature"][feature].tolist(),
                top[f"{name}_score"][feature].tolist(),
                top[f"{name}_frequency"][feature].tolist(),
                strict=True,
            )
            if s >= 0
        ]

    return CausalPanel(int(top["occurrences"][feature]), n_prompts, tuple(names), side("upstream"), side("downstream"))


@functools.cache
def _held_out_tokens() -> Tensor:
    return load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()


def shipped_data(sae: SAE) -> dict[str, Tensor] | None:
    """The SAE's shipped `feature_data.safetensors` (see docs/model-zoo.md), checked, or None where it ships none."""
    folder = _folder(sae)
    return _shipped(folder, sae.cfg.d_sae) if folder else None


def _shipped_labels(sae: SAE) -> tuple[str, ...]:
    folder = _folder(sae)
    return _labels(folder, sae.cfg.d_sae) if folder else ()


def check(sae: SAE) -> None:
    """Read and check the feature data shipped beside the SAE's weights, if any (`FeatureLensError` if broken)."""
    shipped_data(sae)
    _shipped_labels(sae)
    folder = _folder(sae)
    if folder:
        _panels(folder, sae.cfg.d_sae)


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
    return _shipped(folder, sae.cfg.d_sae)["mean_activation"].to(sae.W_dec.dtype)


def feature_labels(sae: SAE) -> list[str]:
    """A short label per feature: shipped automatic labels, or empty strings."""
    labels = _shipped_labels(sae)
    return list(labels) if labels else [""] * sae.cfg.d_sae


def feature_label(sae: SAE, feature: int) -> str:
    """One feature's label, or `#feature` when none is known."""
    validation.index(feature, "Feature", sae.cfg.d_sae, "this SAE")
    labels = _shipped_labels(sae)
    return labels[feature] if labels else f"#{feature}"


def feature_card(model: HookedTransformer, sae: SAE, feature: int, k: int = 8) -> FeatureCard:
    """The dashboard of `feature`: shipped data where it exists, logit effects computed for any SAE."""
    validation.sae_set(model, {"sae": sae})
    validation.index(feature, "Feature", sae.cfg.d_sae, "this SAE")
    if validation.count(k, "k") > model.cfg.d_vocab:  # type: ignore[operator]  # count() checked the type
        raise FeatureLensError(f"k must be at most the vocabulary size, {model.cfg.d_vocab} (got {k}).")
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so a dashboard cannot show text. Load it with one.")

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
    data = _shipped(folder, sae.cfg.d_sae)
    token_ids = torch.cat([data["boosted"][feature], data["suppressed"][feature]])
    if len(token_ids) and (token_ids.min() < 0 or token_ids.max() >= model.cfg.d_vocab):
        raise FeatureLensError(
            f"SAE folder '{folder}': feature_data.safetensors names tokens outside this model's vocabulary "
            f"(0 to {model.cfg.d_vocab - 1}). It was built for another model: rebuild it or remove it."
        )
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
