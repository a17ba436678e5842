"""The figures of docs/connectome.md, measured on the built-in model.

python -m scripts.connectome_report                # every section (about 15 minutes)
python -m scripts.connectome_report --part graph   # or integrated, batch, clusters, directions
python -m scripts.connectome_report --png docs/img # also the graph and cluster map as PNG
                                                             # (needs vl-convert-python)
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from feature_lens_app.charts import cluster_map, graph_chart
from feature_lens_core import hooks
from feature_lens_core.batch import FeatureSpec, held_out_prompts, rank_many
from feature_lens_core.clustering import cluster_features, connection_profiles, label_coherence
from feature_lens_core.connectome import build_graph, faithfulness
from feature_lens_core.directions import direction_sae, steering_vector
from feature_lens_core.methods import integrated
from feature_lens_core.methods.types import Anchor, Baseline
from feature_lens_core.ranking import FeatureRef, activations, rank
from scripts.agreement_table import markdown

PROMPT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
# Embeddings, then every attention and MLP output of layers 0 and 1: a partition of what L2.resid_pre reads.
PARTITION = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.transcoder"]
GRAPH_POSITION = 6  # " to" in "To be, or not to be"
LOVE = [
    "O, my love, my love, my sweet love, I love thee more than words can wield the matter",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate",
    "My bounty is as boundless as the sea, my love as deep; the more I give to thee",
    "Love is a smoke made with the fume of sighs; being purged, a fire sparkling in lovers' eyes",
]
WAR = [
    "Once more unto the breach, dear friends, once more; or close the wall up with our English dead",
    "Cry havoc, and let slip the dogs of war, that this foul deed shall smell above the earth",
    "Let us to the field, and fight with swords and spears until the enemy is slain in battle",
    "Arm, arm, you soldiers, to the war; the drums do beat, the trumpets sound the charge",
]


def _strongest(model: HookedTransformer, sae: SAE, prompt: str, position: int) -> int:
    acts = activations(model, sae, prompt)
    return int(acts[acts.position == position].iloc[0].feature)


def graph_section(model: HookedTransformer, saes: dict[str, SAE], png: Path | None) -> str:
    """A two-hop graph of L2.resid_pre's strongest feature at position 6, and faithfulness by method, hops, budget."""
    target = FeatureRef("L2.resid_pre", _strongest(model, saes["L2.resid_pre"], PROMPT, GRAPH_POSITION), GRAPH_POSITION)
    picked = {n: saes[n] for n in [*PARTITION, "L2.resid_pre"]}
    graph = build_graph(model, picked, PROMPT, target, method="attribution", hops=2, node_budget=10)
    if png is not None:
        order = sorted(picked, key=lambda name: hooks.order(hooks.site(picked[name]).read))
        tokens = [str(t) for t in model.to_str_tokens(PROMPT)]
        chart = graph_chart(graph.nodes, graph.edges, [n for n in order if n in set(graph.nodes.sae)], tokens)
        chart.save(png / "connectome-graph.png", scale_factor=2)
    every = rank(model, picked, PROMPT, target, direction="upstream", method="activation")
    rows = []
    for method in ("attribution", "integrated", "activation"):
        for hops in (1, 2):
            for budget in (5, 10, 20, 40, 80) if method != "activation" else (5, 10, 20):
                for baseline in ("zero", "mean"):
                    start = time.perf_counter()
                    found = build_graph(
                        model,
                        picked,
                        PROMPT,
                        target,
                        method=method,
                        direction="upstream",
                        hops=hops,
                        threshold=None,
                        node_budget=budget,
                        baseline=baseline,
                    )
                    faith = found.faithfulness
                    assert faith is not None
                    seconds = time.perf_counter() - start
                    rows.append([method, hops, budget, baseline, len(found.edges), faith.score, seconds])
    for baseline in ("zero", "mean"):
        faith = faithfulness(model, picked, PROMPT, target, every, baseline=baseline)
        rows.append(["every active node", "", len(every), baseline, "", faith.score, ""])
    columns = ["method", "hops", "node budget", "baseline", "edges", "faithfulness", "seconds"]
    faith = graph.faithfulness
    assert faith is not None
    return "\n\n".join(
        [
            f"target {graph.target} on {PROMPT!r}: m(full) {faith.full:.3f}, m(empty) {faith.empty:.3f}, m(graph) "
            f"{faith.kept:.3f}, faithfulness {faith.score:.3f} (attribution, 2 hops, 10 nodes, zero baseline)",
            markdown(graph.nodes.drop(columns=["hook", "side"])),
            markdown(graph.edges),
            markdown(pd.DataFrame(rows, columns=columns)),
        ]
    )


def integrated_section(model: HookedTransformer, saes: dict[str, SAE], _png: Path | None) -> str:
    """Completeness of integrated gradients: sum over one SAE's nodes vs ablating all of them, by N (float64)."""
    model = copy.deepcopy(model).to(torch.float64)
    saes = {n: copy.deepcopy(saes[n]).to(dtype=torch.float64) for n in [*PARTITION, "L2.resid_pre"]}
    for sae in saes.values():
        if sae.cfg.reshape_activations == "hook_z":
            sae.turn_on_forward_pass_hook_z_reshaping()
    position = len(model.to_str_tokens(PROMPT)) - 2
    target = FeatureRef("L2.resid_pre", _strongest(model, saes["L2.resid_pre"], PROMPT, position), position)
    anchor = Anchor(target.sae, saes[target.sae], position, target.feature)
    tokens = model.to_tokens(PROMPT)
    rows = []
    for source in PARTITION:
        pair = {source: saes[source], target.sae: saes[target.sae]}
        whole = faithfulness(model, pair, PROMPT, target, pd.DataFrame(columns=["sae", "feature", "position"]))
        exact = whole.full - whole.empty
        row = [source, exact]
        for steps in (1, 3, 10, 30, 100):
            (scored,) = integrated.upstream(model, tokens, {source: saes[source]}, anchor, Baseline(), steps)
            row.append(abs(float(scored.score.sum()) - exact) / abs(exact))
        rows.append(row)
    columns = ["source SAE", "g(clean) - g(SAE ablated)", *[f"N={n}" for n in (1, 3, 10, 30, 100)]]
    return f"target {target.sae}:{target.feature}@{position}; relative error of the summed scores\n\n" + markdown(
        pd.DataFrame(rows, columns=columns)
    )


def batch_section(model: HookedTransformer, saes: dict[str, SAE], _png: Path | None) -> str:
    """One L1.resid_pre feature's upstream edges over 40 held-out prompts, wherever it is active."""
    prompts = held_out_prompts(40)
    picked = {n: saes[n] for n in ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.resid_pre"]}
    counts = pd.concat([activations(model, saes["L1.resid_pre"], p) for p in prompts]).feature.value_counts()
    feature = int(counts.index[5])  # a common feature, not the most common (often a BOS or newline feature)
    start = time.perf_counter()
    result = rank_many(
        model,
        picked,
        prompts,
        FeatureSpec("L1.resid_pre", feature, "active"),
        direction="upstream",
        method="attribution",
        top_k=10,
    )
    seconds = time.perf_counter() - start
    shown = result.edges.head(12).drop(columns=["anchor_feature", "hook", "anchor_prompts", "anchor_occurrences"])
    return (
        f"L1.resid_pre:{feature}: {len(result.occurrences)} occurrences on {result.occurrences.prompt.nunique()} of "
        f"{len(prompts)} prompts, {seconds:.0f} s\n\n" + markdown(shown)
    )


def clusters_section(model: HookedTransformer, saes: dict[str, SAE], png: Path | None) -> str:
    """L1.resid_pre features clustered by their connections over 60 held-out prompts; label coherence."""
    picked = {n: saes[n] for n in [*PARTITION, "L1.resid_pre", "L2.attn_z", "L2.transcoder"]}
    start = time.perf_counter()
    profiles = connection_profiles(model, picked, held_out_prompts(60), "L1.resid_pre", at="last", min_occurrences=2)
    seconds = time.perf_counter() - start
    rows, examples = [], []
    for k in (4, 8, 16):
        for method in ("kmeans", "agglomerative"):
            frame = cluster_features(profiles, picked, n_clusters=k, method=method)
            result = label_coherence(frame)
            rows.append([k, method, result.within, result.across, result.within / result.across, result.p_value])
            if k == 8 and method == "kmeans":
                if png is not None:
                    cluster_map(frame).save(png / "connectome-clusters.png", scale_factor=2)
                examples = [f"cluster {c}: " + "; ".join(group.label.head(6)) for c, group in frame.groupby("cluster")]
    table = pd.DataFrame(rows, columns=["clusters", "method", "within", "across", "ratio", "p"])
    return "\n\n".join(
        [
            f"{len(profiles.matrix)} features profiled ({profiles.matrix.shape[1]} partner columns), {seconds:.0f} s",
            markdown(table),
            "\n".join(examples),
        ]
    )


def directions_section(model: HookedTransformer, saes: dict[str, SAE], _png: Path | None) -> str:
    """A love-minus-war steering vector at blocks.1.hook_resid_pre as a feature: where it fires, what drives it."""
    hook = "blocks.1.hook_resid_pre"
    vector = steering_vector(model, hook, LOVE, WAR)
    picked = {n: saes[n] for n in ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L2.resid_pre"]}
    picked["love-war"] = direction_sae(model, hook, vector, name="love-war")
    prompt = "But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun"
    acts = activations(model, picked["love-war"], prompt)
    top = acts.sort_values("activation", ascending=False).head(5)
    position = int(top.position.iloc[0])
    target = FeatureRef("love-war", 0, position)
    up = rank(model, picked, prompt, target, direction="upstream", method="activation", top_k=8)
    up["label"] = [
        "error" if f < 0 else (picked[s].cfg.metadata.sae_id or s) for s, f in zip(up.sae, up.feature, strict=True)
    ]
    down = rank(model, picked, prompt, target, direction="downstream", method="attribution", top_k=8)
    graph = build_graph(model, picked, prompt, target, hops=2, node_budget=12, baseline="zero")
    assert graph.faithfulness is not None
    return "\n\n".join(
        [
            f"|v| = {float(vector.norm()):.3f}; strongest on {prompt!r}: "
            + ", ".join(f"{t!r}@{p} {a:.2f}" for t, p, a in zip(top.token, top.position, top.activation, strict=True)),
            markdown(up.drop(columns=["hook", "label"])),
            markdown(down.drop(columns=["hook"])),
            f"graph of 12 nodes: faithfulness {graph.faithfulness.score:.3f}",
        ]
    )


SECTIONS: dict[str, Callable[[HookedTransformer, dict[str, SAE], Path | None], str]] = {
    "graph": graph_section,
    "integrated": integrated_section,
    "batch": batch_section,
    "clusters": clusters_section,
    "directions": directions_section,
}


def main(argv: list[str] | None = None) -> None:
    from feature_lens_core.loading import list_saes, load_model, load_sae

    parser = argparse.ArgumentParser(description="The figures of docs/connectome.md, on the built-in model.")
    parser.add_argument("--part", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--png", type=Path, help="folder to save the graph and cluster map in, as PNG")
    args = parser.parse_args(argv)
    if args.png is not None:
        args.png.mkdir(parents=True, exist_ok=True)
    model = load_model("toy")
    saes = {name: load_sae("toy", name) for name in list_saes("toy")}
    for name, section in SECTIONS.items():
        if args.part in (name, "all"):
            print(f"## {name}\n\n{section(model, saes, args.png)}\n", flush=True)


if __name__ == "__main__":
    main()
