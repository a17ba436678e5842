"""The public entry points: `rank` (which features cause, or are caused by, a feature) and `activations`.

Both validate their inputs once, here, and raise `FeatureLensError` with a message that says what
to change. The maths lives in `feature_lens_core.methods`; the definitions in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, validation
from feature_lens_core.errors import FeatureLensError, NothingToRank
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods import ESTIMATORS, activation, attribution
from feature_lens_core.methods.nodes import check_finite, node_keys
from feature_lens_core.methods.types import Anchor, Baseline, LogitAnchor, Scored
from feature_lens_core.options import BASELINES, DIRECTIONS, METHODS, BaselineKind, Direction, Method
from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef, Target
from feature_lens_core.validation import prompt_tokens

COLUMNS = ["sae", "hook", "layer", "kind", "feature", "position", "token", "activation", "score"]
ACTIVATION_COLUMNS = ["position", "token", "feature", "activation"]


def activations(model: HookedTransformer, sae: SAE, prompt: str) -> pd.DataFrame:
    """Which features of `sae` fire where on `prompt`: one row per active (position, feature).

    Columns: position, token, feature, activation; sorted by position, then activation, largest first.
    """
    where = hooks.check_fits(model, "sae", sae)
    tokens = prompt_tokens(model, prompt)
    with exclusive(), torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[where.read], stop_at_layer=where.layer + 1)
        acts = hooks.encode(sae, cache[where.read][0])
    check_finite(acts, "The SAE's activations on this prompt")
    positions, features = acts.nonzero(as_tuple=True)
    str_tokens = model.to_str_tokens(tokens[0])
    frame = pd.DataFrame(
        {
            "position": positions.cpu().numpy(),
            "token": [str_tokens[p] for p in positions.tolist()],
            "feature": features.cpu().numpy(),
            "activation": acts[positions, features].double().cpu().numpy(),
        },
        columns=ACTIVATION_COLUMNS,
    )
    return frame.sort_values(["position", "activation"], ascending=[True, False], ignore_index=True)


def predictions(model: HookedTransformer, prompt: str, position: int, *, count: int = 8) -> pd.DataFrame:
    """The model's `count` most probable next tokens after `position` of `prompt`, most probable first: what a
    logit target can ask about there.

    Columns: token_id, token (its text; a byte fragment shows as '�'), probability.
    """
    validation.count(count, "count")
    tokens = prompt_tokens(model, prompt)
    validation.index(position, "Position", tokens.shape[1], "the prompt")
    with exclusive(), torch.no_grad():
        logits = model(tokens)[0, position]
    check_finite(logits, "The model's logits")
    top = logits.float().softmax(-1).topk(min(count, logits.shape[-1]))
    return pd.DataFrame(
        {
            "token_id": top.indices.cpu().numpy(),
            "token": [model.to_single_str_token(int(i)) for i in top.indices],
            "probability": top.values.double().cpu().numpy(),
        }
    )


def anchor_of(model: HookedTransformer, saes: Mapping[str, SAE], target: Target) -> Anchor | LogitAnchor:
    """What the estimators score on for a validated `target`: a feature of one of `saes`, or a logit readout."""
    if isinstance(target, FeatureRef):
        return Anchor(target.sae, saes[target.sae], target.position, target.feature)
    token = validation.token_id(model, target.token)
    w_u, b_u = model.W_U.detach(), model.b_U.detach()
    if isinstance(target, LogitDiffRef):
        other = validation.token_id(model, target.other)
        direction, offset = w_u[:, token] - w_u[:, other], b_u[token] - b_u[other]
    else:
        direction, offset = w_u[:, token] - w_u.mean(1), b_u[token] - b_u.mean()
    return LogitAnchor(str(target), model, target.position, direction, float(offset))


def other_side(saes: Mapping[str, SAE], feature: Target, direction: Direction) -> dict[str, SAE]:
    """The SAEs ranked: every one but the feature's own that is on the asked side of it (for a logit target,
    upstream: every SAE, since all write at or before the final residual stream the logits read).

    Raises `NothingToRank` when there is none (an empty result, not a mistake: e.g. a first-layer feature
    has nothing upstream)."""
    if isinstance(feature, LogitRef | LogitDiffRef):
        if direction == "downstream":
            raise FeatureLensError(
                f"A logit target ({feature}) has nothing downstream: the logits are the model's output. Rank "
                "upstream, or pick a feature as the target."
            )
        return dict(saes)
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
        raise NothingToRank(f"Nothing to rank {direction} of '{feature.sae}': {rule}. {given} Add SAEs on that side.")
    return side


def has_side(saes: Mapping[str, SAE], target: Target, direction: Direction) -> bool:
    """Whether `other_side` finds any SAE on that side of `target`."""
    try:
        other_side(saes, target, direction)
    except NothingToRank:
        return False
    return True


def _frame(model: HookedTransformer, tokens: Tensor, scored: list[Scored]) -> pd.DataFrame:
    """One row per scored node, sorted by |score| (stable, so ties keep SAE, position, feature order)."""
    if not scored:
        return pd.DataFrame(columns=COLUMNS)
    sites = [hooks.site(part.sae) for part in scored]
    counts = [len(part.score) for part in scored]
    # Results come back on the CPU as float64, whatever the model's device and dtype.
    features = torch.cat([part.features for part in scored]).cpu().numpy()
    positions = torch.cat([part.positions for part in scored]).cpu().numpy()
    score = torch.cat([part.score.detach().double() for part in scored]).cpu()
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
            "activation": torch.cat([part.activation.detach().double() for part in scored]).cpu().numpy(),
            "score": score,
        },
        columns=COLUMNS,
    )
    return frame.iloc[np.argsort(-np.abs(score), kind="stable")].reset_index(drop=True)


def _candidates(
    model: HookedTransformer,
    tokens: Tensor,
    sources: dict[str, SAE],
    target: Anchor | LogitAnchor,
    baseline: Baseline,
    k: int,
) -> tuple[list[Scored], str]:
    """Activation patching of the `k` source nodes attribution ranks highest, and a note saying so."""
    estimate = attribution.upstream(model, tokens, sources, target, baseline)
    total = sum(len(s.score) for s in estimate)
    if k >= total:
        return activation.upstream(model, tokens, sources, target, baseline), ""
    scores = torch.cat([s.score.abs() for s in estimate])
    chosen = torch.zeros(total, dtype=torch.bool, device=scores.device)
    chosen[scores.topk(k).indices] = True
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
    feature: Target,
    *,
    direction: Direction,
    method: Method,
    baseline: BaselineKind = "zero",
    corrupt_prompt: str | None = None,
    candidates: int | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Rank the features (and SAE error nodes) upstream or downstream of `feature` on `prompt`.

    `feature` is a `FeatureRef`, or (upstream only) a `LogitRef` / `LogitDiffRef`: the model's
    next-token logit at a position (minus the mean logit), or the difference of two tokens' logits.

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
    validation.choice(direction, DIRECTIONS, "direction")
    validation.choice(method, METHODS, "method")
    validation.choice(baseline, BASELINES, "baseline")
    validation.count(candidates, "candidates", optional=True)
    validation.count(top_k, "top_k", optional=True)
    if candidates is not None and method != "activation":
        raise FeatureLensError("candidates only applies to method 'activation' (the other methods are cheap).")
    validation.sae_set(model, saes)
    tokens = prompt_tokens(model, prompt)
    validation.check_target(saes, feature, tokens.shape[1])
    base = validation.baseline(model, tokens, baseline, corrupt_prompt)
    others = other_side(saes, feature, direction)
    anchor = anchor_of(model, saes, feature)
    estimator = ESTIMATORS[method]
    note = ""
    with exclusive():  # the methods' hooks and forward-mode AD levels cannot be shared between threads
        if direction == "downstream":
            assert isinstance(anchor, Anchor)  # other_side refused a logit target
            scored = estimator.downstream(model, tokens, anchor, others, base)
            if candidates is not None:
                note = (
                    "Downstream activation patching is exhaustive (one patched pass covers every target): "
                    "candidates ignored."
                )
        elif candidates is not None:
            scored, note = _candidates(model, tokens, others, anchor, base, candidates)
        else:
            scored = estimator.upstream(model, tokens, others, anchor, base)
    frame = _frame(model, tokens, scored)
    if top_k is not None:
        frame = frame.head(top_k)
    frame.attrs["note"] = note
    return frame
