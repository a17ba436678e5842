"""The public entry points: `rank` (which features cause, or are caused by, a feature) and `activations`.

Both validate their inputs once, here, and raise `FeatureLensError` with a message that says what
to change. The maths lives in `feature_lens_core.methods`; the definitions in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, hooks
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods import (
    BASELINES,
    Anchor,
    Baseline,
    Scored,
    activation,
    attribution,
    check_finite,
    direct,
    integrated,
    node_keys,
)

DIRECTIONS = ("upstream", "downstream")
METHODS = {"activation": activation, "attribution": attribution, "direct": direct, "integrated": integrated}
COLUMNS = ["sae", "hook", "layer", "kind", "feature", "position", "token", "activation", "score"]
ACTIVATION_COLUMNS = ["position", "token", "feature", "activation"]


@dataclass(frozen=True)
class FeatureRef:
    """One feature at one position: `feature` of the SAE named `sae` (a key of the `saes` dict) at `position`.

    Positions index `model.to_tokens(prompt)`, so with the model's default BOS handling position 0
    is BOS.
    """

    sae: str
    feature: int
    position: int


def _choice(value: str, options: tuple[str, ...] | list[str], what: str) -> str:
    if value not in options:
        raise FeatureLensError(f"Unknown {what} {value!r}. Use one of: {', '.join(options)}.")
    return value


def _count(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FeatureLensError(f"{what} must be a whole number of at least 1 (got {value!r}), or None for all.")
    return value


def to_tokens(model: HookedTransformer, prompt: str, what: str = "prompt") -> Int[Tensor, "1 pos"]:
    """The prompt as the model tokenizes it by default; refuses empty prompts and ones over n_ctx tokens."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise FeatureLensError(f"The {what} is empty. Give some text to run the model on.")
    if model.tokenizer is None:
        raise FeatureLensError("This model has no tokenizer, so it cannot read text prompts. Load it with one.")
    tokens = model.to_tokens(prompt, truncate=False)
    if tokens.shape[1] > model.cfg.n_ctx:
        raise FeatureLensError(
            f"The {what} is {tokens.shape[1]} tokens long, but this model reads at most {model.cfg.n_ctx} "
            "(BOS included). Shorten it."
        )
    return tokens


def activations(model: HookedTransformer, sae: SAE, prompt: str) -> pd.DataFrame:
    """Which features of `sae` fire where on `prompt`: one row per active (position, feature).

    Columns: position, token, feature, activation; sorted by position, then activation, largest first.
    """
    where = hooks.check_fits(model, "sae", sae)
    tokens = to_tokens(model, prompt)
    with exclusive(), torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[where.read], stop_at_layer=where.layer + 1)
        acts = hooks.encode(sae, cache[where.read][0])
    check_finite(acts, "The SAE's activations on this prompt")
    positions, features = acts.nonzero(as_tuple=True)
    str_tokens = model.to_str_tokens(tokens[0])
    frame = pd.DataFrame(
        {
            "position": positions.numpy(),
            "token": [str_tokens[p] for p in positions.tolist()],
            "feature": features.numpy(),
            "activation": acts[positions, features].double().numpy(),
        },
        columns=ACTIVATION_COLUMNS,
    )
    return frame.sort_values(["position", "activation"], ascending=[True, False], ignore_index=True)


def _check_feature(saes: Mapping[str, SAE], feature: FeatureRef, n_pos: int) -> None:
    if not isinstance(feature, FeatureRef):
        raise FeatureLensError(f"The feature must be a FeatureRef(sae, feature, position), not {feature!r}.")
    if feature.sae not in saes:
        raise FeatureLensError(
            f"SAE '{feature.sae}' of the chosen feature is not among the SAEs given "
            f"({', '.join(saes) or 'none'}). Add it to the SAEs."
        )
    d_sae = saes[feature.sae].cfg.d_sae
    for what, value in (("Feature", feature.feature), ("Position", feature.position)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FeatureLensError(f"{what} {value!r} is not a whole number. Give an index such as 0, 1, 2, ...")
    if not 0 <= feature.feature < d_sae:
        raise FeatureLensError(
            f"Feature {feature.feature!r} is out of range: SAE '{feature.sae}' has features 0 to {d_sae - 1}."
        )
    if not 0 <= feature.position < n_pos:
        raise FeatureLensError(
            f"Position {feature.position!r} is out of range: the prompt has {n_pos} tokens (positions 0 to "
            f"{n_pos - 1}, 0 is BOS)."
        )


def _other_side(saes: Mapping[str, SAE], feature: FeatureRef, direction: str) -> dict[str, SAE]:
    """The SAEs ranked: every one but the feature's own that is on the asked side of it; refuses none."""
    own = hooks.site(saes[feature.sae])
    if direction == "upstream":
        side = {n: s for n, s in saes.items() if n != feature.sae and hooks.is_before(hooks.site(s).write, own.read)}
    else:
        side = {n: s for n, s in saes.items() if n != feature.sae and hooks.is_before(own.write, hooks.site(s).read)}
    if not side:
        if direction == "upstream":
            rule = f"an upstream SAE must sit before it reads ('{own.read}')"
        else:
            rule = f"a downstream SAE must sit after it writes ('{own.write}')"
        others = [n for n in saes if n != feature.sae]
        given = f"The other SAEs given ({', '.join(others)}) are not." if others else "No other SAE was given."
        raise FeatureLensError(
            f"Nothing to rank {direction} of '{feature.sae}': {rule}. {given} Add SAEs on that side."
        )
    return side


def _frame(model: HookedTransformer, tokens: Tensor, scored: list[Scored]) -> pd.DataFrame:
    """One row per scored node, sorted by |score| (stable, so ties keep SAE, position, feature order)."""
    if not scored:
        return pd.DataFrame(columns=COLUMNS)
    sites = [hooks.site(part.sae) for part in scored]
    counts = [len(part.score) for part in scored]
    features = torch.cat([part.features for part in scored]).numpy()
    positions = torch.cat([part.positions for part in scored]).numpy()
    score = torch.cat([part.score.detach().double() for part in scored])
    # Activations were checked, but a pass in low precision can still overflow: never chart inf or NaN.
    check_finite(score, "The ranking")
    score = score.numpy()
    frame = pd.DataFrame(
        {
            "sae": np.repeat([part.name for part in scored], counts),
            "hook": np.repeat([where.read for where in sites], counts),
            "layer": np.repeat([where.layer for where in sites], counts),
            "kind": np.where(features < 0, "error", "feature"),
            "feature": features,
            "position": positions,
            "token": np.asarray(model.to_str_tokens(tokens[0]), dtype=object)[positions],
            "activation": torch.cat([part.activation.detach().double() for part in scored]).numpy(),
            "score": score,
        },
        columns=COLUMNS,
    )
    return frame.iloc[np.argsort(-np.abs(score), kind="stable")].reset_index(drop=True)


def _candidates(
    model: HookedTransformer,
    tokens: Tensor,
    sources: dict[str, SAE],
    target: Anchor,
    baseline: Baseline,
    k: int,
) -> tuple[list[Scored], str]:
    """Activation patching of the `k` source nodes attribution ranks highest, and a note saying so."""
    estimate = attribution.upstream(model, tokens, sources, target, baseline)
    total = sum(len(s.score) for s in estimate)
    if k >= total:
        return activation.upstream(model, tokens, sources, target, baseline), ""
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.cat([s.score.abs() for s in estimate]).topk(k).indices] = True
    masks = chosen.split([len(s.score) for s in estimate])
    keep = {s.name: node_keys(s.sae, s.positions, s.features)[mask] for s, mask in zip(estimate, masks, strict=True)}
    note = (
        f"Activation patching was run on the {k} of {total} source nodes that attribution patching ranks "
        f"highest (candidates={k}); the other {total - k} were not patched and are not listed."
    )
    return activation.upstream(model, tokens, sources, target, baseline, keep=keep), note


def rank(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    feature: FeatureRef,
    direction: str,
    method: str,
    baseline: str = "zero",
    corrupt_prompt: str | None = None,
    candidates: int | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Rank the features (and SAE error nodes) upstream or downstream of `feature` on `prompt`.

    score = target(clean) - target(source ablated to the baseline): positive means the source
    supports the target. `method` picks how it is computed: "activation" (exact), "attribution"
    (first order, all paths), "direct" (direct path only) or "integrated" (integrated gradients, 10
    steps); see docs/methods.md and docs/connectome.md.

    Every SAE in `saes` other than the feature's own that is on the asked side of it is ranked (the
    others are skipped); upstream sources are nodes at positions <= the target's, downstream targets
    are the features active at positions >= the source's. `candidates=K` (activation, upstream)
    patches only the K nodes attribution ranks highest and says so in `df.attrs["note"]`.

    Returns:
        DataFrame with columns sae, hook, layer, kind ("feature" or "error"), feature (-1 for error
        nodes), position, token, activation (the node's clean activation; an error node's norm) and
        score, sorted by |score|, largest first; at most `top_k` rows.
    """
    _choice(direction, DIRECTIONS, "direction")
    _choice(method, list(METHODS), "method")
    _choice(baseline, BASELINES, "baseline")
    _count(candidates, "candidates")
    _count(top_k, "top_k")
    if candidates is not None and method != "activation":
        raise FeatureLensError("candidates only applies to method 'activation' (the other methods are cheap).")
    if not saes:
        raise FeatureLensError("No SAEs were given. Pass a dict from name to SAE, the chosen feature's included.")
    for name, sae in saes.items():
        hooks.check_fits(model, name, sae)
    tokens = to_tokens(model, prompt)
    _check_feature(saes, feature, tokens.shape[1])
    corrupt_tokens = None
    if baseline == "corrupt":
        if corrupt_prompt is None:
            raise FeatureLensError("The 'corrupt' baseline needs a corrupt prompt. Give one of the same token length.")
        corrupt_tokens = to_tokens(model, corrupt_prompt, what="corrupt prompt")
        if corrupt_tokens.shape != tokens.shape:
            raise FeatureLensError(
                f"The corrupt prompt is {corrupt_tokens.shape[1]} tokens long and the prompt "
                f"{tokens.shape[1]}. They must have the same token length, so that positions correspond."
            )
    others = _other_side(saes, feature, direction)
    means = feature_data.mean_activations if baseline == "mean" else None
    base = Baseline(baseline, corrupt_tokens, means)
    anchor = Anchor(feature.sae, saes[feature.sae], feature.position, feature.feature)
    note = ""
    with exclusive():  # the methods' hooks and forward-mode AD levels cannot be shared between threads
        if direction == "downstream":
            scored = METHODS[method].downstream(model, tokens, anchor, others, base)
            if candidates is not None:
                note = (
                    "Downstream activation patching is exhaustive (one patched pass covers every target): "
                    "candidates ignored."
                )
        elif candidates is not None:
            scored, note = _candidates(model, tokens, others, anchor, base, candidates)
        else:
            scored = METHODS[method].upstream(model, tokens, others, anchor, base)
    frame = _frame(model, tokens, scored)
    if top_k is not None:
        frame = frame.head(top_k)
    frame.attrs["note"] = note
    return frame
