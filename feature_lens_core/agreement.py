"""How well the cheap methods rank sources like exact activation patching.

`paired_scores` joins rankings on their nodes, `agreement` summarises each estimate (Spearman rank
correlation, top-k overlap, and how many of the exact top k a `candidates=3k` run would catch), and
`measure` runs it over prompts and targets on a model. The Compare page and the table in docs/methods.md
(`python -m scripts.agreement_table`) use these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from sae_lens import SAE
from transformer_lens import HookedTransformer

from feature_lens_core.ranking import FeatureRef, activations, rank

NODE_KEY = ["sae", "kind", "feature", "position"]
AGREEMENT_COLUMNS = ["method", "nodes", "spearman", "top_k", "top_k_overlap", "recall_at_3k"]
ESTIMATES = ("attribution", "direct")


def paired_scores(exact: pd.DataFrame, estimates: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Each estimate's rows joined to activation patching's on the node: columns exact, estimate, method.

    Nodes that only one method returned (e.g. outside activation patching's candidates) are left out.
    """
    frames = []
    base = exact[[*NODE_KEY, "token", "score", *(["label"] if "label" in exact else [])]]
    for method, frame in estimates.items():
        joined = base.merge(frame[[*NODE_KEY, "score"]], on=NODE_KEY, suffixes=("_exact", "_estimate"))
        joined = joined.rename(columns={"score_exact": "exact", "score_estimate": "estimate"})
        joined["method"] = method
        frames.append(joined)
    columns = [*NODE_KEY, "token", "label", "exact", "estimate", "method"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def agreement(pairs: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Per method: Spearman correlation with activation patching, the overlap of the two top-k sets, and
    the share of the exact top k found in the estimate's top 3k (what `candidates=3k` would patch)."""
    rows = []
    for method, group in pairs.groupby("method", sort=True):
        exact, estimate = pd.Series(group["exact"]), pd.Series(group["estimate"])
        spearman = float(exact.corr(estimate, method="spearman")) if len(group) > 2 else float("nan")

        def top(column: str, n: int, group: pd.DataFrame = group) -> set[int]:
            return set(pd.Series(group[column]).abs().nlargest(n).index)

        size = min(k, len(group))
        best = top("exact", k)
        rows.append(
            {
                "method": method,
                "nodes": len(group),
                "spearman": spearman,
                "top_k": size,
                "top_k_overlap": len(best & top("estimate", k)) / size if size else float("nan"),
                "recall_at_3k": len(best & top("estimate", 3 * k)) / size if size else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def strongest_feature(model: HookedTransformer, sae: SAE, prompt: str, position: int) -> int:
    """The feature of `sae` with the largest activation at `position` of `prompt`."""
    acts = activations(model, sae, prompt)
    here = acts[acts.position == position]
    if here.empty:
        raise ValueError(f"No feature is active at position {position} of {prompt!r}.")
    return int(here.iloc[0].feature)


def measure(
    model: HookedTransformer, saes: Mapping[str, SAE], cases: Sequence[tuple[str, str]], k: int = 10
) -> pd.DataFrame:
    """Agreement of each estimate with exhaustive activation patching, upstream, for each (prompt, target SAE).

    One row per case and estimate: prompt, target (SAE:feature@position), and `agreement`'s columns.
    """
    rows = []
    for prompt, target_sae in cases:
        position = len(model.to_str_tokens(prompt)) - 2
        target = FeatureRef(target_sae, strongest_feature(model, saes[target_sae], prompt, position), position)
        ranked = {
            m: rank(model, saes, prompt, target, direction="upstream", method=m) for m in ("activation", *ESTIMATES)
        }
        exact = ranked.pop("activation")
        table = agreement(paired_scores(exact, ranked), k)
        table.insert(0, "target", f"{target.sae}:{target.feature}@{target.position}")
        table.insert(0, "prompt", prompt)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)
