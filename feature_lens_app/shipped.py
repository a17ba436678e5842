"""The worked examples' results, computed by the core and shipped beside the app, so that a first visit draws its
charts while torch, TransformerLens and SAE-Lens are still loading (about ten seconds on a fresh server).

Reading them imports nothing heavy. `python -m feature_lens_app.shipped` recomputes them with the core
(tests/app/test_shipped.py checks they equal what the core computes now, so they cannot go stale silently).
Each entry is one exact view (model, SAEs, prompt, target, method, baseline...): only that view is drawn from it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from feature_lens_app import charts, state
from feature_lens_app.examples import EXAMPLES
from feature_lens_core.options import Direction

RESULTS = Path(__file__).with_name("worked_results.json")
ROWS = 20  # ranked rows kept per direction: the charts' bars and the table's first rows
PREDICTIONS = 8  # the model's top next tokens kept (the logit target's one-click choices)


@dataclass(frozen=True)
class Shipped:
    """One view's shipped results: the prompt's tokens, the top predictions at the position, and per direction
    the first `ROWS` ranked rows (labelled as the charts label them) and how many nodes were ranked."""

    tokens: list[str]
    predictions: pd.DataFrame  # token_id, token, probability
    rankings: dict[str, pd.DataFrame]
    counts: dict[str, int]
    notes: dict[str, str]
    target_label: str


def views() -> list[state.ViewState]:
    """The views shipped: the landing view, and each worked feature example on the landing view's SAEs."""
    examples = [
        replace(state.DEFAULT, kind="feature", prompt=e.prompt, sae=e.sae, feature=e.feature, pos=e.position, token="")
        for e in EXAMPLES
    ]
    return [state.DEFAULT, *examples]


def _key(view: state.ViewState) -> str:
    return json.dumps(state.to_params(view), sort_keys=True)


@functools.cache
def _entries() -> dict[str, dict]:
    if not RESULTS.exists():
        return {}
    return {_key_of(entry["view"]): entry for entry in json.loads(RESULTS.read_text(encoding="utf-8"))}


def _key_of(params: dict[str, str]) -> str:
    return json.dumps(params, sort_keys=True)


def lookup(view: state.ViewState) -> Shipped | None:
    """The shipped results of exactly this view, or None."""
    entry = _entries().get(_key(view))
    if entry is None:
        return None
    return Shipped(
        tokens=list(entry["tokens"]),
        predictions=pd.DataFrame(entry["predictions"], columns=["token_id", "token", "probability"]),
        rankings={d: pd.DataFrame(rows) for d, rows in entry["rankings"].items()},
        counts={d: int(n) for d, n in entry["counts"].items()},
        notes={d: str(n) for d, n in entry["notes"].items()},
        target_label=str(entry["target_label"]),
    )


def compute(view: state.ViewState) -> dict:
    """One view's results as the app computes them live (`resources.ranking`, `logit_target.predictions`,
    `interactions.labelled`), in the shipped file's form."""
    import feature_lens_core as flc  # the build imports the whole core; reading the results does not

    model = flc.load_model(view.model)
    saes = {name: flc.load_sae(view.model, name) for name in view.saes}
    names = {name: flc.feature_data.feature_labels(sae) for name, sae in saes.items()}
    tokens = [str(t) for t in model.to_str_tokens(flc.validation.prompt_tokens(model, view.prompt)[0])]
    entry: dict = {"view": state.to_params(view), "tokens": tokens, "rankings": {}, "counts": {}, "notes": {}}
    directions: list[Direction] = view.directions if view.kind == "feature" else ["upstream"]  # a logit: upstream
    for direction in directions:
        frame = flc.rank(
            model, saes, view.prompt, state.explored(view), direction=direction, method=view.method,
            baseline=view.baseline, corrupt_prompt=view.corrupt if view.baseline == "corrupt" else None,
        )  # fmt: skip
        head = frame.reset_index(drop=True).head(ROWS)
        rows = charts.add_labels(head, lambda sae, feature: names[sae][feature] if sae in names else "")
        entry["rankings"][direction] = json.loads(rows.to_json(orient="records", double_precision=15) or "[]")
        entry["counts"][direction] = len(frame)
        entry["notes"][direction] = str(frame.attrs.get("note", ""))
    top = flc.predictions(model, view.prompt, view.pos, count=PREDICTIONS)
    entry["predictions"] = json.loads(top.to_json(orient="values", double_precision=15) or "[]")
    label = names[view.sae][view.feature] if view.kind == "feature" and view.sae in names else ""
    entry["target_label"] = label
    return entry


def main() -> None:
    """Recompute every shipped view with the core and write them to `RESULTS`."""
    RESULTS.write_text(json.dumps([compute(view) for view in views()], indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
