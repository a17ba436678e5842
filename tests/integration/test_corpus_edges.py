"""Causes and effects across a corpus: the aggregate equals a plain recomputation from each prompt's adjacency."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import torch

import feature_lens_core as flc
from feature_lens_core.batch import RayExecutor
from feature_lens_core.corpus_edges import CausalPanels, CorpusEdges, causal_panels

TRANSCODERS = ("L0.transcoder", "L1.transcoder", "L2.transcoder")


@pytest.fixture(scope="module")
def transcoders():
    return flc.load_model("toy"), {name: flc.load_sae("toy", name) for name in TRANSCODERS}


@pytest.fixture(scope="module")
def graphs(transcoders):
    model, saes = transcoders
    return saes, [flc.adjacency(model, saes, prompt) for prompt in flc.held_out_prompts(2, 12)]


def _recomputed(graphs) -> tuple[dict, dict, dict, dict]:
    """Per (target feature, source feature): summed edge, target occurrences with it, source occurrences with it;
    and each feature's occurrences. Features are (sae, feature); BOS (position 0) is left out."""
    score: dict = defaultdict(float)
    up: dict = defaultdict(int)
    down: dict = defaultdict(int)
    occurrences: dict = defaultdict(int)
    for graph in graphs:
        nodes = graph.nodes.iloc[: graph.n_features]
        kept = [i for i in range(graph.n_features) if nodes["position"].iloc[i] > 0]
        key = {i: (nodes["sae"].iloc[i], int(nodes["feature"].iloc[i])) for i in kept}
        for i in kept:
            occurrences[key[i]] += 1
        # pandas' groupby, not the index arithmetic under test: rows are targets, columns sources.
        frame = pd.DataFrame(graph.adjacency[kept][:, kept].numpy())
        labels = [key[i] for i in kept]
        per_target = frame.T.groupby(pd.Series(labels, dtype=object)).sum().T  # [target node, source feature]
        per_source = frame.groupby(pd.Series(labels, dtype=object)).sum()  # [target feature, source node]
        per_target.index = pd.Index(labels, dtype=object)
        per_source.columns = pd.Index(labels, dtype=object)
        for (target, source), value in _nonzero(per_target):
            score[target, source] += value
            up[target, source] += 1
        for (target, source), _ in _nonzero(per_source):
            down[source, target] += 1
    return score, up, down, occurrences


def _nonzero(frame: pd.DataFrame) -> list:
    """The ((row label, column label), value) pairs of a frame's non-zero cells (labels may repeat)."""
    rows, columns = frame.to_numpy().nonzero()
    values = frame.to_numpy()[rows, columns]
    return [((frame.index[r], frame.columns[c]), float(v)) for r, c, v in zip(rows, columns, values, strict=True)]


def _aggregated(graphs) -> tuple[CorpusEdges, dict[str, int]]:
    """The two prompts' graphs added into one aggregate, and where each SAE's features start in it."""
    saes, built = graphs
    edges = CorpusEdges.empty(saes, list(TRANSCODERS))
    for graph in built:
        edges.add(graph)
    return edges, dict(zip(edges.saes, edges.offsets, strict=True))


def test_aggregate_equals_a_recomputation_from_adjacency(graphs):
    saes, built = graphs
    edges, start = _aggregated(graphs)
    score, up, down, occurrences = _recomputed(built)

    def gid(feature: tuple[str, int]) -> int:
        return start[feature[0]] + feature[1]

    assert edges.n_prompts == 2
    assert {f: int(edges.occurrences[gid(f)]) for f in occurrences} == dict(occurrences)
    assert int(edges.occurrences.sum()) == sum(occurrences.values())
    assert int((edges.upstream_count > 0).sum()) == sum(1 for c in up.values() if c)
    for (target, source), value in score.items():
        assert float(edges.score[gid(target), gid(source)]) == pytest.approx(value, rel=1e-9, abs=1e-12)
        assert int(edges.upstream_count[gid(target), gid(source)]) == up[target, source]
        assert int(edges.downstream_count[gid(source), gid(target)]) == down[source, target]

    # The shipped top-k: each entry's mean score and frequency from the recomputed sums and counts.
    for name in TRANSCODERS:
        top = edges.top(name, k=8)
        checked = 0
        for feature in range(saes[name].cfg.d_sae):
            n = occurrences[name, feature]
            assert int(top["occurrences"][feature]) == n
            for side in ("upstream", "downstream"):
                for j in range(8):
                    other = int(top[f"{side}_sae"][feature, j])
                    if other < 0:
                        continue
                    them = (edges.saes[other], int(top[f"{side}_feature"][feature, j]))
                    pair = ((name, feature), them) if side == "upstream" else (them, (name, feature))
                    count = up[pair] if side == "upstream" else down[(name, feature), them]
                    assert float(top[f"{side}_score"][feature, j]) == pytest.approx(score[pair] / count, rel=1e-5)
                    assert float(top[f"{side}_frequency"][feature, j]) == pytest.approx(count / n, rel=1e-6)
                    checked += 1
        if name != TRANSCODERS[0]:
            assert checked > 0
        # Ranked by the mean over all occurrences, largest first.
        strength = top["upstream_score"].abs() * top["upstream_frequency"]
        assert bool((strength[:, :-1] >= strength[:, 1:] - 1e-6).all())
    # The first layer's transcoder has no upstream features, the last no downstream ones.
    assert bool((edges.top(TRANSCODERS[0])["upstream_sae"] == -1).all())
    assert bool((edges.top(TRANSCODERS[-1])["downstream_sae"] == -1).all())
    assert torch.isfinite(edges.score).all()


def test_the_sparse_sums_hold_exactly_the_pairs_that_meet(graphs):
    # The sums keep one entry per pair of features with an edge on some prompt, nothing for the others: their
    # size is the edges seen, and each entry is the pandas recomputation's.
    edges, start = _aggregated(graphs)
    score, up, down, _ = _recomputed(graphs[1])
    g = edges.n_features

    def key(row: tuple[str, int], column: tuple[str, int]) -> int:
        return (start[row[0]] + row[1]) * g + start[column[0]] + column[1]

    upstream = dict(
        zip(edges.up_keys.tolist(), zip(edges.up_score.tolist(), edges.up_count.tolist(), strict=True), strict=True)
    )
    met = {key(t, s): (score[t, s], up[t, s]) for (t, s) in up if up[t, s]}
    assert {k: c for k, (_, c) in upstream.items() if c} == {k: c for k, (_, c) in met.items()}
    for k, (value, _) in met.items():
        assert upstream[k][0] == pytest.approx(value, rel=1e-9, abs=1e-12)
    downstream = dict(zip(edges.down_keys.tolist(), edges.down_count.tolist(), strict=True))
    assert {k: c for k, c in downstream.items() if c} == {key(s, t): c for (s, t), c in down.items() if c}
    assert (
        edges.nbytes == 20 * len(edges.up_keys) + 12 * len(edges.down_keys) < 16 * g * g // 4
    )  # the dense sums: 151 MB here


def _assert_same_panels(expected: CausalPanels, got: CausalPanels) -> None:
    assert (got.saes, got.n_prompts, got.n_positions) == (expected.saes, expected.n_prompts, expected.n_positions)
    for name, tops in expected.top.items():
        for key, value in tops.items():
            assert torch.equal(got.top[name][key], value), (name, key)


def test_panels_from_a_thread_pool_equal_the_serial_ones(transcoders):
    """The prompts' graphs may finish in any order on an executor; they are added in the prompts' order."""
    model, saes = transcoders
    prompts = flc.held_out_prompts(3, 10)
    calls: list[tuple[int, int]] = []
    serial = causal_panels(model, saes, prompts, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        _assert_same_panels(serial, causal_panels(model, saes, prompts, executor=pool))


@pytest.mark.slow
def test_panels_on_a_local_ray_cluster_equal_the_serial_ones(transcoders):
    """Ray workers are separate processes: the adjacency task (model and SAEs) travels through the object store
    and each prompt's graph comes back to be summed here."""
    ray = pytest.importorskip("ray")
    model, saes = transcoders
    prompts = flc.held_out_prompts(2, 10)
    # A Ray task that asks for one CPU runs torch on one thread; float32 sums depend on the thread count, so
    # the serial reference runs on one thread too, and then the two agree to the last bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = causal_panels(model, saes, prompts)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        distributed = causal_panels(model, saes, prompts, executor=RayExecutor())
    finally:
        ray.shutdown()
    _assert_same_panels(serial, distributed)
