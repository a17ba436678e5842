"""A click while another visitor's long graph runs: how long one ranking waits, alone and under that load.

    python -m benchmarks.bench_contention [--clicks 5] [--gap 0.3]

The app serves every visitor from one process and one model, and the core runs one hooked pass at a time
(`feature_lens_core.exclusive`). This measures what a visitor feels when another one builds an
activation-patching graph (the longest interactive job): one thread builds it on the built-in model while
another, once the graph is under way, makes `--clicks` rankings (the Explore page's default view: the worked
example, attribution patching upstream), `--gap` seconds apart. It prints each click's latency alone, under
the graph with the project's first-come-first-served lock, and under a plain re-entrant lock (what the lock
was before), so the figures come from one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from feature_lens_core import exclusive, loading
from feature_lens_core.connectome import build_graph
from feature_lens_core.ranking import rank
from feature_lens_core.targets import FeatureRef

PROMPT = "O Romeo, Romeo, wherefore art thou Romeo?"
TARGET = FeatureRef("L1.mlp_out", 924, 8)
SAES = [f"L{i}.{k}" for i in range(3) for k in ("resid_pre", "attn_z", "mlp_out")]
GRAPH = {"method": "activation", "hops": 3, "node_budget": 60}  # tens of seconds here: a long job


def _clicks(model, saes, n: int, gap: float) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        rank(model, saes, PROMPT, TARGET, method="attribution", direction="upstream")
        latencies.append(time.perf_counter() - start)
        time.sleep(gap)
    return latencies


def _under_graph(model, saes, n: int, gap: float) -> tuple[list[float], float]:
    """Click latencies while a graph is built in another thread, and the graph's own time."""
    graph_time: list[float] = []

    def graph() -> None:
        start = time.perf_counter()
        build_graph(model, saes, PROMPT, TARGET, **GRAPH)
        graph_time.append(time.perf_counter() - start)

    worker = threading.Thread(target=graph)
    worker.start()
    time.sleep(0.2)  # the graph is under way
    latencies = _clicks(model, saes, n, gap)
    worker.join()
    return latencies, graph_time[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between one visitor's clicks")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = loading.load_model("toy")
    saes = {name: loading.load_sae("toy", name) for name in SAES}
    _clicks(model, saes, 1, 0)  # warm-up
    alone = _clicks(model, saes, args.clicks, 0)
    fair, fair_graph = _under_graph(model, saes, args.clicks, args.gap)
    exclusive._lock = threading.RLock()  # type: ignore[assignment]  # the lock as it was, for the comparison
    plain, plain_graph = _under_graph(model, saes, args.clicks, args.gap)

    def line(title: str, latencies: list[float]) -> str:
        shown = ", ".join(f"{t:.2f}" for t in latencies)
        return f"{title:<34} median {statistics.median(latencies):6.2f} s, worst {max(latencies):6.2f} s ({shown})"

    print(f"click = rank(attribution, upstream) of {TARGET} on the worked prompt; graph = build_graph({GRAPH})")
    print(line("alone", alone))
    print(line(f"under a graph, fair lock ({fair_graph:.0f} s)", fair))
    print(line(f"under a graph, plain lock ({plain_graph:.0f} s)", plain))


if __name__ == "__main__":
    main()
