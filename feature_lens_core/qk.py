"""QK attribution: why head h of layer l attends from query position q to key position s, in features.

The pre-softmax score is bilinear in the residual streams entering the layer at the two positions:

    A_pre[h, q, s] = (ln1(x_q) W_Q[h] + b_Q[h]) . (ln1(x_s) W_K[h] + b_K[h]) / attn_scale

With ln1's scale frozen at its clean value, ln1 is linear (centring included) plus its bias, so writing each
residual stream as a sum of terms, x = sum_i c_i, splits the score exactly into query-term x key-term products,
plus the ones with the *qk bias* (ln1's bias through W_Q or W_K, and b_Q or b_K) on either side:

    A_pre = sum_{i, j} q_i . k_j / attn_scale,   q_i = (centre(c_i) / sigma_q * w) W_Q[h] (and the bias row).

The terms of a residual stream are what the chosen SAEs decode into it: the latest residual SAE at or before
the layer's input stands for everything before it (its active features, its error node and its decoder
bias); every attention and MLP output after that is split by its SAE if one covers it (a `hook_z` SAE through
W_O, with b_O in its bias term; an MLP-output SAE or transcoder) or kept whole as one term; with no residual SAE
the embeddings (the stream entering block 0) are one more term. They sum exactly to the stream.

Removing a key-side term from x_s (ln1's scale held) lowers the score by exactly that term's key marginal
(its column sum), and likewise on the query side, when q != s; at q == s a term sits on both sides.
docs/methods.md ("Attention, opened up") has the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from feature_lens_core import hooks, validation
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.exclusive import exclusive
from feature_lens_core.methods.runner import run

SIDE_COLUMNS = ["sae", "kind", "layer", "feature", "activation", "score"]
LABELS = ["sae", "kind", "layer", "feature", "activation"]
PAIR_COLUMNS = [*(f"query_{c}" for c in LABELS[:-1]), *(f"key_{c}" for c in LABELS[:-1]), "score"]
CENTRED = ("LN", "LNPre")  # LayerNorm types that subtract the mean; RMS norms only divide by the scale
TOLERANCE = 1e-5  # the decomposition must rebuild the model's own score to this (relative)


@dataclass(frozen=True)
class QKAttribution:
    """Head `head` of layer `layer`, query position q, key position s: the pre-softmax score and its terms.

    `queries` and `keys` have one row per term of that side's residual stream (columns sae, kind: feature,
    error, bias, embedding, attention, mlp or qk bias; layer; feature, -1 unless a feature; activation: the
    feature's, else the norm of the term's residual vector; score: its contribution to the score, summed over
    the other side), sorted by |score|; each side's scores sum to `score`. `pairs` has the largest query-term x
    key-term products (columns query_*, key_*, score), sorted by |score|.
    """

    layer: int
    head: int
    query_position: int
    key_position: int
    score: float
    pattern: float
    queries: pd.DataFrame
    keys: pd.DataFrame
    pairs: pd.DataFrame


def check_attention(model: HookedTransformer) -> None:
    """Refuse attention whose score is not `(ln1(x_q) W_Q + b_Q) . (ln1(x_s) W_K + b_K) / attn_scale`."""
    cfg = model.cfg
    reasons = {
        "positional_embedding_type": (
            cfg.positional_embedding_type != "standard",
            f"{cfg.positional_embedding_type} positional embeddings (they act on queries and keys by position)",
        ),
        "n_key_value_heads": (cfg.n_key_value_heads is not None, "grouped-query attention"),
        "use_qk_norm": (bool(getattr(cfg, "use_qk_norm", False)), "a norm on queries and keys"),
        "attn_scores_soft_cap": ((getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0, "soft-capped scores"),
    }
    for flag, (refused, what) in reasons.items():
        if refused:
            raise FeatureLensError(
                f"QK attribution decomposes attention scores that are bilinear in the residual stream; this model "
                f"uses {what} (cfg.{flag}), which feature-lens does not decompose. Pick a model with standard "
                "positional embeddings and plain query-key attention."
            )


def qk_attribution(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompt: str,
    *,
    layer: int,
    head: int,
    query_position: int,
    key_position: int,
    top_pairs: int | None = 100,
) -> QKAttribution:
    """Split head `head` of layer `layer`'s pre-softmax score from `query_position` to `key_position` into
    query-term x key-term products (module docstring), through ln1 frozen at its clean scale.

    `saes` are the SAEs to write the residual streams in (those reading after the layer's input are unused).
    One forward pass up to the layer's scores, then matrix products. The terms rebuild the model's own score to
    1e-5 (relative), else this raises (an attention this decomposition does not describe).

    Returns:
        `QKAttribution`: score, pattern, queries and keys (each side's terms, marginal over the other), and
        the `top_pairs` largest pairs (all with None).
    """
    validation.sae_set(model, saes)
    check_attention(model)
    cfg = model.cfg
    layer = validation.index(layer, "Layer", cfg.n_layers, "the model")
    head = validation.index(head, "Head", cfg.n_heads, f"layer {layer}")
    validation.count(top_pairs, "top_pairs", optional=True)
    tokens = validation.prompt_tokens(model, prompt)
    q = validation.index(query_position, "Position", tokens.shape[1], "the prompt")
    s = validation.index(key_position, "Position", tokens.shape[1], "the prompt")
    if s > q:
        raise FeatureLensError(
            f"Key position {s} is after query position {q}: a causal head attends only to positions up to its "
            "query. Pick a key position at or before the query's."
        )
    parts = _stream_parts(saes, layer)
    scores, pattern = f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"
    scale = f"blocks.{layer}.ln1.hook_scale"
    wanted = {scores, pattern, *(h for part in parts for h in part.hooks)}
    wanted |= {scale} if scale in model.hook_dict else set()
    with exclusive(), torch.no_grad():
        acts = run(model, tokens[:, : q + 1], capture=wanted, stop_at=pattern)
        acts = {name: act[0] for name, act in acts.items()}
        sides = []
        for position, w, b in ((q, "W_Q", "b_Q"), (s, "W_K", "b_K")):
            labels, vectors = _terms(model, parts, acts, position)
            labels.append(("", "qk bias", layer, -1, float("nan")))
            sides.append((labels, _project(model, layer, head, acts.get(scale), position, vectors, w, b)))
        attn_scale = float(model.blocks[layer].attn.attn_scale)
        products = (sides[0][1] @ sides[1][1].T / attn_scale).double().cpu()
        expected = float(acts[scores][head, q, s])
    total = float(products.sum())
    if abs(total - expected) > TOLERANCE * max(1.0, abs(expected)):
        raise FeatureLensError(
            f"The terms rebuild the score of head {head} of layer {layer} as {total:.6g}, but the model computes "
            f"{expected:.6g}: this model's attention is not the plain (ln1(x) W_Q + b_Q) . (ln1(x) W_K + b_K) / "
            "scale that QK attribution decomposes."
        )
    queries = _side(sides[0][0], products.sum(1))
    keys = _side(sides[1][0], products.sum(0))
    return QKAttribution(
        layer, head, q, s, expected, float(acts[pattern][head, q, s]), queries, keys,
        _pairs(sides[0][0], sides[1][0], products, top_pairs),
    )  # fmt: skip


@dataclass(frozen=True)
class _Part:
    """One piece of the residual stream entering a layer: an SAE's decomposition of what it reads or writes, or
    a whole activation (the embeddings, an uncovered attention or MLP output)."""

    kind: str
    layer: int
    hook: str
    name: str = ""
    sae: SAE | None = None

    @property
    def hooks(self) -> tuple[str, ...]:
        if self.sae is None:
            return (self.hook,)
        where = hooks.site(self.sae)
        return (where.read, where.write)


def _stream_parts(saes: Mapping[str, SAE], layer: int) -> list[_Part]:
    """What the residual stream entering `layer` is the sum of, in terms of the chosen SAEs."""
    entry = f"blocks.{layer}.hook_resid_pre"
    residual = [
        (name, sae)
        for name, sae in saes.items()
        if hooks.site(sae).kind == "residual" and hooks.order(hooks.site(sae).read) <= hooks.order(entry)
    ]
    base = max(residual, key=lambda item: hooks.order(hooks.site(item[1]).read), default=None)
    if base is None:
        parts, after = [_Part("embedding", 0, "blocks.0.hook_resid_pre")], (-1, -1)
    else:
        where = hooks.site(base[1])
        parts, after = [_Part("residual", where.layer, where.read, *base)], hooks.order(where.read)
    kinds = {(hooks.site(sae).layer, hooks.site(sae).kind): (name, sae) for name, sae in reversed(list(saes.items()))}
    for j in range(layer):
        if after < hooks.order(f"blocks.{j}.hook_resid_mid"):
            name, sae = kinds.get((j, "attn_z"), ("", None))
            parts.append(_Part("attention", j, f"blocks.{j}.hook_attn_out", name, sae))
        if after < hooks.order(f"blocks.{j}.hook_resid_post"):
            name, sae = kinds.get((j, "transcoder")) or kinds.get((j, "mlp_out")) or ("", None)
            parts.append(_Part("mlp", j, f"blocks.{j}.hook_mlp_out", name, sae))
    return parts


def _terms(
    model: HookedTransformer, parts: list[_Part], acts: Mapping[str, Tensor], position: int
) -> tuple[list[tuple[str, str, int, int, float]], Float[Tensor, "n d_model"]]:
    """The terms of the residual stream at `position` (labels: sae, kind, layer, feature, activation) and their
    residual-stream vectors."""
    dtype = acts[parts[0].hooks[0]].dtype
    labels: list[tuple[str, str, int, int, float]] = []
    vectors: list[Tensor] = []
    for part in parts:
        if part.sae is None:
            vector = acts[part.hook][position].to(dtype)
            labels.append(("", part.kind, part.layer, -1, float(vector.norm())))
            vectors.append(vector[None])
            continue
        where = hooks.site(part.sae)
        read, write = acts[where.read][position : position + 1], acts[where.write][position : position + 1]
        codes = hooks.encode(part.sae, read)
        active = codes[0].nonzero().flatten()
        decoder = hooks.decoder(part.sae, dtype)
        features = codes[0, active].to(dtype)[:, None] * decoder[active]
        error = hooks.error(part.sae, read, write.to(dtype), where.write, acts=codes)[0].to(dtype)
        bias = hooks.reconstruction(part.sae, read, where.write, acts=codes)[0].to(dtype) - features.sum(0)
        written = hooks.residual_directions(model, torch.cat([features, error[None], bias[None]]), where.write)
        if where.kind == "attn_z":  # the attention output's own bias joins the SAE's decoder bias
            written[-1] += model.blocks[where.layer].attn.b_O.detach().to(dtype)
        strengths = codes[0, active].tolist()
        labels += [(part.name, "feature", where.layer, f, a) for f, a in zip(active.tolist(), strengths, strict=True)]
        labels.append((part.name, "error", where.layer, -1, float(error.norm())))
        labels.append((part.name, "bias", where.layer, -1, float(written[-1].norm())))
        vectors.append(written)
    return labels, torch.cat(vectors)


def _project(
    model: HookedTransformer,
    layer: int,
    head: int,
    scale: Float[Tensor, "pos 1"] | None,
    position: int,
    vectors: Float[Tensor, "n d_model"],
    weight: str,
    bias: str,
) -> Float[Tensor, "n_plus_1 d_head"]:
    """Each term through ln1 frozen at its clean scale at `position` and the head's W_Q (or W_K), with one more
    row for the qk bias: ln1's bias through that matrix plus b_Q (or b_K)."""
    block = model.blocks[layer]
    attn = block.attn
    dtype = vectors.dtype
    w_in = getattr(attn, weight)[head].detach().to(dtype)  # [d_model, d_head]
    b_in = getattr(attn, bias)[head].detach().to(dtype)  # [d_head]
    normalised = vectors - vectors.mean(-1, keepdim=True) if model.cfg.normalization_type in CENTRED else vectors
    if scale is not None:
        normalised = normalised / scale[position].to(dtype)
    ln_w, ln_b = getattr(block.ln1, "w", None), getattr(block.ln1, "b", None)
    if isinstance(ln_w, Tensor):
        normalised = normalised * ln_w.detach().to(dtype)
    offset = b_in + (ln_b.detach().to(dtype) @ w_in if isinstance(ln_b, Tensor) else 0)
    return torch.cat([normalised @ w_in, offset[None]])


def _columns(labels: list[tuple[str, str, int, int, float]]) -> dict[str, np.ndarray]:
    """Terms' labels as one array per column of LABELS (the tables are built from arrays: building them row by
    row, or through DataFrame takes, cost more than the forward pass on a small model)."""
    sae, kind, layer, feature, activation = zip(*labels, strict=True)
    return {
        "sae": np.asarray(sae, dtype=object),
        "kind": np.asarray(kind, dtype=object),
        "layer": np.asarray(layer, dtype=np.int64),
        "feature": np.asarray(feature, dtype=np.int64),
        "activation": np.asarray(activation, dtype=np.float64),
    }


def _side(labels: list[tuple[str, str, int, int, float]], scores: Float[Tensor, " n"]) -> pd.DataFrame:
    """One side's terms with their marginal scores, sorted by |score|."""
    values = scores.numpy()
    order = np.argsort(-np.abs(values), kind="stable")
    columns = {name: column[order] for name, column in _columns(labels).items()}
    return pd.DataFrame(columns | {"score": values[order]}, columns=SIDE_COLUMNS)


def _pairs(
    query: list[tuple[str, str, int, int, float]],
    key: list[tuple[str, str, int, int, float]],
    products: Float[Tensor, "n m"],
    top: int | None,
) -> pd.DataFrame:
    """The `top` largest query-term x key-term products (all with None), sorted by |score|; the labels are each
    side's terms, the qk bias row last, as the products' rows and columns."""
    flat = products.flatten()
    order = flat.abs().argsort(descending=True, stable=True)
    order = order if top is None else order[:top]
    rows, cols = (order // products.shape[1]).numpy(), (order % products.shape[1]).numpy()
    left, right = _columns(query), _columns(key)
    frame = {f"query_{c}": left[c][rows] for c in LABELS[:-1]} | {f"key_{c}": right[c][cols] for c in LABELS[:-1]}
    return pd.DataFrame(frame | {"score": flat[order].numpy()}, columns=PAIR_COLUMNS)
