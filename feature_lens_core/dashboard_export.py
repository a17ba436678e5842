"""Every feature's dashboard of one SAE as JSON: feature-lens's own layout, or Neuronpedia's feature-data layout
(what SAEDashboard's `NeuronpediaRunner` writes and Neuronpedia uploads: a `NeuronpediaDashboardBatch`).

The layouts are documented in docs/dashboards.md. Both are built from the same dashboards
(`dashboard.feature_dashboard` over one corpus pass), so the figures agree between them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from sae_lens import SAE
from transformer_lens import HookedTransformer

from feature_lens_core import dashboard, feature_data, hooks, validation
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.files import write_atomically

LAYOUTS = ("feature-lens", "neuronpedia")
FORMAT = "feature-lens-dashboards"
VERSION = 1
Progress = Callable[[int, int], None]
DIGITS = 5  # decimals kept, as SAEDashboard rounds (its round_list keeps 3; more does no harm)


def dashboards(
    model: HookedTransformer,
    sae: SAE,
    *,
    name: str,
    corpus: dashboard.Corpus,
    features: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> list[dashboard.FeatureDashboard]:
    """The dashboards of `features` (default: all) of `sae` on `corpus`, from one corpus pass; `progress(done,
    total)` after each feature."""
    chosen = list(range(sae.cfg.d_sae)) if features is None else list(features)
    for feature in chosen:
        validation.index(feature, "Feature", sae.cfg.d_sae, f"SAE '{name}'")
    acts = dashboard.corpus_activations(model, sae, corpus)
    out = []
    for done, feature in enumerate(chosen, start=1):
        out.append(dashboard.feature_dashboard(model, sae, acts, feature, name=name))
        if progress is not None:
            progress(done, len(chosen))
    return out


def _round(values: Sequence[float]) -> list[float]:
    return [round(float(v), DIGITS) for v in values]


def _centres(histogram: dashboard.Histogram) -> list[float]:
    edges = histogram.edges
    return _round([(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)])


def _effects(effects: Sequence[dashboard.TokenEffect]) -> list[dict]:
    return [{"token": e.token, "value": round(e.value, DIGITS), "fragment": e.fragment} for e in effects]


def _panel(sae: SAE, feature: int) -> dict | None:
    panel = feature_data.causal_panel(sae, feature)
    if panel is None:
        return None
    return {
        "occurrences": panel.occurrences,
        "n_prompts": panel.n_prompts,
        **{
            side: [
                {"sae": e.sae, "feature": e.feature, "score": round(e.score, DIGITS), "frequency": e.frequency}
                for e in edges
            ]
            for side, edges in (("upstream", panel.upstream), ("downstream", panel.downstream))
        },
    }


def feature_lens_layout(
    model: HookedTransformer, sae: SAE, boards: Sequence[dashboard.FeatureDashboard], *, name: str, corpus: str
) -> dict:
    """feature-lens's layout: one object per feature with everything its dashboard shows (docs/dashboards.md)."""
    where = hooks.site(sae)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model.cfg.model_name,
        "sae": name,
        "hook": where.read,
        "hook_out": where.write,
        "d_sae": sae.cfg.d_sae,
        "corpus": corpus,
        "n_text_tokens": boards[0].n_text if boards else 0,
        "features": [
            {
                "feature": b.feature,
                "label": b.label,
                "n_active": b.n_active,
                "density": b.density,
                "mean_activation": round(b.mean_activation, DIGITS + 3),
                "max_activation": round(b.max_activation, DIGITS),
                "activation_histogram": {"edges": _round(b.activations.edges), "counts": list(b.activations.counts)},
                "logit_histogram": {"edges": _round(b.logits.edges), "counts": list(b.logits.counts)},
                "promoted": [
                    {"token": e.token, "value": round(e.value, DIGITS), "fragment": e.fragment} for e in b.promoted
                ],
                "suppressed": [
                    {"token": e.token, "value": round(e.value, DIGITS), "fragment": e.fragment} for e in b.suppressed
                ],
                "example_groups": [
                    {
                        "title": g.title,
                        "low": round(g.low, DIGITS),
                        "high": round(g.high, DIGITS),
                        "share": g.share,
                        "examples": [
                            {
                                "tokens": list(c.tokens),
                                "activations": _round(c.activations),
                                "peak": c.peak,
                                "window": c.window,
                                "position": c.position,
                            }
                            for c in g.examples
                        ],
                    }
                    for g in b.groups
                ],
                "neighbours": [
                    {"sae": n.sae, "feature": n.feature, "cosine": round(n.cosine, DIGITS)} for n in b.neighbours
                ],
                "label_evidence": None
                if b.evidence is None
                else {
                    "text": b.evidence.text,
                    "parts": [
                        {"token": p.token, "share": p.share, "before": p.before, "before_share": p.before_share}
                        for p in b.evidence.parts
                    ],
                },
                "causal_panel": _panel(sae, b.feature),
            }
            for b in boards
        ],
    }


def _sae_set(name: str) -> str:
    """Neuronpedia's SAE set of a name such as `L1.mlp_out` (`mlp_out`; its layer is a separate field)."""
    return re.sub(r"^L\d+\.", "", name)


def neuronpedia_layout(
    model: HookedTransformer,
    sae: SAE,
    boards: Sequence[dashboard.FeatureDashboard],
    *,
    name: str,
    corpus: str,
    n_windows: int,
) -> dict:
    """Neuronpedia's feature-data layout (SAEDashboard's `NeuronpediaDashboardBatch.to_dict()`): top examples as
    `bin_min` -1, `bin_max` the largest activation, `bin_contains` -1 (as SAEDashboard marks them), each quantile
    group with its bounds and share; histograms as bin centres and counts. Fields feature-lens does not compute
    (neuron alignment, correlated neurons and features, decoder weights by head) are empty lists."""
    features = []
    for b in boards:
        activations = []
        for index, group in enumerate(b.groups):
            top = index == 0
            for c in group.examples:
                activations.append(
                    {
                        "bin_min": -1 if top else round(group.low, DIGITS),
                        "bin_max": round(b.max_activation if top else group.high, DIGITS),
                        "bin_contains": -1 if top else group.share,
                        "tokens": list(c.tokens),
                        "values": _round(c.activations),
                        "qualifying_token_index": c.peak,
                    }
                )
        features.append(
            {
                "feature_index": b.feature,
                **{
                    key: []
                    for key in (
                        "neuron_alignment_indices",
                        "neuron_alignment_values",
                        "neuron_alignment_l1",
                        "correlated_neurons_indices",
                        "correlated_neurons_l1",
                        "correlated_neurons_pearson",
                        "correlated_features_indices",
                        "correlated_features_l1",
                        "correlated_features_pearson",
                    )
                },
                "neg_str": [e.token for e in b.suppressed],
                "neg_values": _round([e.value for e in b.suppressed]),
                "pos_str": [e.token for e in b.promoted],
                "pos_values": _round([e.value for e in b.promoted]),
                "frac_nonzero": b.density,
                "freq_hist_data_bar_values": _centres(b.activations),
                "freq_hist_data_bar_heights": list(b.activations.counts),
                "logits_hist_data_bar_heights": list(b.logits.counts),
                "logits_hist_data_bar_values": _centres(b.logits),
                "n_prompts_total": n_windows,
                "n_tokens_in_prompt": model.cfg.n_ctx,
                "dataset": corpus,
                "decoder_weights_dist": [],
                "activations": activations,
                "vector": [],
            }
        )
    return {
        "model_id": model.cfg.model_name,
        "layer": hooks.site(sae).layer,
        "sae_set": _sae_set(name),
        "sae_id_suffix": None,
        "features": features,
    }


def export_dashboards(
    model: HookedTransformer,
    sae: SAE,
    *,
    name: str,
    out: str | Path,
    layout: str = "feature-lens",
    text: str | None = None,
    features: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Write the dashboards of `sae`'s features (default: all) to `out` as JSON in `layout` (one of LAYOUTS),
    atomically, from the held-out plays (`text` None) or from `text`; returns what was written."""
    if layout not in LAYOUTS:
        raise FeatureLensError(f"Unknown layout '{layout}'. Choose one of: {', '.join(LAYOUTS)}.")
    path = Path(out)
    if not path.parent.is_dir():
        raise FeatureLensError(f"Cannot write '{path}': folder '{path.parent}' does not exist.")
    if path.is_dir():
        raise FeatureLensError(f"Cannot write '{path}': it is a folder. Give a file name such as dashboards.json.")
    corpus = dashboard.held_out_corpus(model) if text is None else dashboard.text_corpus(model, text)
    what = "feature-lens held-out plays (macbeth, twelfth night)" if text is None else "a text the user gave"
    boards = dashboards(model, sae, name=name, corpus=corpus, features=features, progress=progress)
    if layout == "feature-lens":
        data = feature_lens_layout(model, sae, boards, name=name, corpus=what)
    else:
        data = neuronpedia_layout(model, sae, boards, name=name, corpus=what, n_windows=len(corpus.windows))
    encoded = json.dumps(data, ensure_ascii=False, allow_nan=False)
    try:
        write_atomically(path, lambda temporary: temporary.write_text(encoded, encoding="utf-8"))
    except OSError as exc:
        raise FeatureLensError(f"Cannot write '{path}': {exc.strerror or exc}.") from exc
    return data
