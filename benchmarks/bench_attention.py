"""What opening attention costs: head loadings against a plain direct ranking, and one QK attribution.

`python -m benchmarks.bench_attention [--quick]` uses the workloads of `benchmarks.bench_methods` (the built-in
model with all 13 SAEs; the same with only its residual SAEs and transcoders, so that every attention layer is
open; the GPT-2-small-shaped model with residual SAEs at layers 3, 6 and 9, the attention of layers 6 to 8 open
between them) and times, in turn, medians after a warm-up:

- *rank*: `rank(..., direction="upstream", method="direct")` on the workload's target (the DataFrame included);
- *split*: `head_loadings` of the ranking's strongest edge (validation included: a second call, as the app or
  the graph page would make it), and *split x10*, the ten strongest edges in one `head_loadings_many` call;
- *qk*: `qk_attribution` for head 0 of the target's layer (the last layer before it for a residual target), from
  the target's position to the top edge's source position (the pairs table capped at 100 rows);
- *F*: one plain forward pass `model(tokens)`;

each timed with `benchmarks.bench_methods.interleaved` (the functions in turn, medians). Then the graph page's
worked example: the whole-prompt graph of the built-in model's transcoders on the first example prompt
(`attribution_graph`, as the page builds it) against `edge_head_loadings` of every edge of it from a feature or an
error node (the page's "top heads"), in one call.

Prints tables; the figures are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os

import torch

import feature_lens_core as flc
from benchmarks.bench_methods import Workload, forward, gpt2_workload, interleaved, toy_workload
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import hooks
from feature_lens_core.heads import edge_head_loadings, head_loadings, head_loadings_many
from feature_lens_core.qk import qk_attribution
from feature_lens_core.targets import parse_target

OPEN_ATTENTION = ("L0.resid_pre", "L0.transcoder", "L1.resid_pre", "L1.transcoder", "L2.resid_pre", "L2.resid_post")


def measure(workload: Workload, repeats: int) -> dict:
    """The four timings of one workload, and how many heads the strongest edge's split has."""
    model, saes, prompt, target = workload.model, workload.saes, workload.prompt, workload.target

    def ranking():
        return flc.rank(model, saes, prompt, target, direction="upstream", method="direct")

    frame = ranking()
    rows = frame.head(10)
    top = [
        flc.FeatureRef(str(s), int(f), int(p)) for s, f, p in zip(rows.sae, rows.feature, rows.position, strict=True)
    ]
    split = head_loadings(model, saes, prompt, top[0], target)
    attention = hooks.site(saes[target.sae]).layer
    layer = attention if hooks.site(saes[target.sae]).kind == "attn_z" else max(attention - 1, 0)
    fns = {
        "rank": ranking,
        "split": lambda: head_loadings(model, saes, prompt, top[0], target),
        "split x10": lambda: head_loadings_many(model, saes, prompt, top, target),
        "qk": lambda: qk_attribution(
            model, saes, prompt, layer=layer, head=0, query_position=target.position, key_position=top[0].position
        ),
        "F": lambda: forward(workload),
    }
    for fn in fns.values():
        fn()  # warm-up
    timings = interleaved(fns, repeats)
    open_heads = int((~split.heads.covered).sum())
    return {"timings": timings, "heads": len(split.heads), "open": open_heads, "nodes": len(frame), "qk_layer": layer}


def measure_graph(repeats: int) -> dict:
    """The graph page's worked example: the transcoder graph, and every feature or error edge of it split by head."""
    model = flc.load_model("toy")
    names = [name for name in flc.list_saes("toy") if name.endswith("transcoder")]
    saes = {name: flc.load_sae("toy", name) for name in names}
    prompt = EXAMPLES[0].prompt
    graph = flc.attribution_graph(model, saes, prompt)
    nodes = graph.nodes.set_index("id")
    split = graph.edges.loc[graph.edges.source.map(nodes.kind).isin(["feature", "error"])]
    edges = [
        (flc.FeatureRef(str(nodes.sae[s]), int(nodes.feature[s]), int(nodes.position[s])), parse_target(t))
        for s, t in zip(split.source, split.target, strict=True)
    ]
    fns = {
        "graph": lambda: flc.attribution_graph(model, saes, prompt),
        "heads": lambda: edge_head_loadings(model, saes, prompt, edges),
    }
    for fn in fns.values():
        fn()  # warm-up
    through = sum(bool(s.top(1)) for s in edge_head_loadings(model, saes, prompt, edges))
    n_targets = len({t for _, t in edges})
    return {"timings": interleaved(fns, repeats), "edges": len(graph.edges), "split": len(edges)} | {
        "through": through,
        "targets": n_targets,
        "nodes": len(graph.nodes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no GPT-2-shaped workload")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    toy = toy_workload()
    open_toy = Workload(
        "toy, attention open",
        toy.model,
        {n: toy.saes[n] for n in OPEN_ATTENTION},
        toy.prompt,
        toy.tokens,
        toy.target,
        toy.source,
        toy.description.replace(f"all {len(toy.saes)} SAEs", f"{len(OPEN_ATTENTION)} SAEs (residual, transcoders)"),
    )
    workloads = [toy, open_toy] + ([] if args.quick else [gpt2_workload()[0]])
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, repeats {repeats}")
    print(f"{'workload':<22}{'nodes':>7}{'heads':>7}{'open':>6}{'rank ms':>10}{'split ms':>10}{'split/rank':>11}"
          f"{'x10 ms':>9}{'qk ms':>8}{'F ms':>8}{'qk/F':>6}")  # fmt: skip
    for workload in workloads:
        found = measure(workload, repeats)
        t = {name: seconds * 1e3 for name, seconds in found["timings"].items()}
        print(
            f"{workload.name:<22}{found['nodes']:>7}{found['heads']:>7}{found['open']:>6}{t['rank']:>10.1f}"
            f"{t['split']:>10.1f}{t['split'] / t['rank']:>11.2f}{t['split x10']:>9.1f}{t['qk']:>8.1f}{t['F']:>8.1f}"
            f"{t['qk'] / t['F']:>6.2f}"
        )
        print(f"  {workload.description}; qk: layer {found['qk_layer']} head 0")
    found = measure_graph(repeats)
    t = {name: seconds * 1e3 for name, seconds in found["timings"].items()}
    print(
        f"graph page, worked example: {found['nodes']} nodes, {found['edges']} edges, {found['split']} from features "
        f"or errors into {found['targets']} targets, {found['through']} through a head; graph {t['graph']:.1f} ms, "
        f"their head split {t['heads']:.1f} ms ({t['heads'] / t['graph']:.2f} of the graph)"
    )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
