"""Whole-prompt attribution graphs: the batched adjacency against one direct ranking per target and against the
model's own forward and backward pass, side by side in one run on the built-in model.

    python -m benchmarks.bench_graph [--repeats 3] [--sample 30]

For each SAE set it prints the graph's size, the median time of `attribution_graph.adjacency`, the time of
one direct ranking per target node extrapolated from a sample of rankings (how the graph was built before),
and one forward plus backward pass of the model on the prompt, with the ratios between them.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

from feature_lens_core import loading
from feature_lens_core.attribution_graph import adjacency
from feature_lens_core.ranking import has_side, rank
from feature_lens_core.targets import FeatureRef, LogitRef

PROMPT = "O Romeo, Romeo, wherefore art thou Romeo?"
SETS = {
    "attention and MLP outputs (6 SAEs)": [f"L{i}.{k}" for i in range(3) for k in ("attn_z", "mlp_out")],
    "transcoders (3)": [f"L{i}.transcoder" for i in range(3)],
}


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=30, help="direct rankings timed to extrapolate the loop")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = loading.load_model("toy")
    tokens = model.to_tokens(PROMPT)

    def forward_backward() -> None:
        with torch.enable_grad():
            model(tokens).logsumexp(-1).sum().backward()
        model.zero_grad(set_to_none=True)

    model_pass = _median(forward_backward, args.repeats)
    print(f"prompt: {PROMPT!r} ({tokens.shape[1]} tokens); model forward + backward: {model_pass:.3f} s")
    for title, names in SETS.items():
        saes = {name: loading.load_sae("toy", name) for name in names}
        graph = adjacency(model, saes, PROMPT)
        ours = _median(lambda saes=saes: adjacency(model, saes, PROMPT), args.repeats)
        rows = graph.nodes.loc[graph.nodes.kind.isin(["feature", "logit"])]
        targets = [
            LogitRef(int(r.feature), int(r.position))
            if r.kind == "logit"
            else FeatureRef(str(r.sae), int(r.feature), int(r.position))
            for r in rows.itertuples()
        ]
        targets = [t for t in targets if has_side(saes, t, "upstream")]
        sample = random.Random(0).sample(targets, min(args.sample, len(targets)))
        start = time.perf_counter()
        for target in sample:
            rank(model, saes, PROMPT, target, method="direct", direction="upstream")
        loop = (time.perf_counter() - start) / len(sample) * len(targets)
        print(
            f"{title}: {len(graph.nodes)} nodes ({graph.n_features} features, {len(targets)} targets with sources "
            f"upstream); adjacency {ours:.2f} s = {ours / model_pass:.0f} model passes; one direct ranking per "
            f"target {loop:.1f} s (extrapolated from {len(sample)}), {loop / ours:.0f}x the adjacency"
        )


if __name__ == "__main__":
    main()
