"""Whole-prompt attribution graphs: the batched adjacency against one direct ranking per target, the model's
own forward and backward pass, and circuit-tracer's `attribute()`, side by side in one run.

    python -m benchmarks.bench_graph [--repeats 3] [--sample 30] [--skip-gpt2] [--gpt2-repeats 1] [--peers-only]

On the built-in model, for each SAE set it prints the graph's size, the median time of
`attribution_graph.adjacency`, the time of one direct ranking per target node extrapolated from a sample of
rankings (how the graph was built before), and one forward plus backward pass of the model on the prompt.

With `FEATURE_LENS_CIRCUIT_TRACER_PYTHON` naming a Python that has circuit-tracer==0.5.0 (its pins clash with
this project's, so it has its own virtual environment), it also times circuit-tracer's `attribute()` on the
same model, transcoders and prompt (built from the same files, timed in its own process once the model is
built, with as many threads), on the built-in model's three transcoders and on a GPT-2-small-shaped model with
random weights and a random transcoder at each of its 12 layers, and prints how far the two graphs' edges
differ (relative to the largest edge; circuit-tracer leaves out the BOS position's nodes).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from benchmarks.bench_methods import forward_backward, gpt2_model, interleaved
from feature_lens_core import loading
from feature_lens_core.attribution_graph import adjacency
from feature_lens_core.ranking import has_side, rank
from feature_lens_core.targets import FeatureRef, LogitRef
from feature_lens_core.validation import prompt_tokens
from feature_lens_core.zoo import paths
from tests.helpers import random_transcoders
from tests.peers import CIRCUIT_TRACER_PYTHON, aligned, circuit_tracer_graph, circuit_tracer_ids, write_model

PROMPT = "O Romeo, Romeo, wherefore art thou Romeo?"
SETS = {
    "attention and MLP outputs (6 SAEs)": [f"L{i}.{k}" for i in range(3) for k in ("attn_z", "mlp_out")],
    "transcoders (3)": [f"L{i}.transcoder" for i in range(3)],
}
GPT2_TOKENS = 16
GPT2_D_TRANSCODER = 8192
GPT2_FIRING = 6  # mean active features per token and layer that the encoder biases are calibrated to (the
# prompt, the text's first tokens, fires about 7 times more: 8,230 features in all, see RESULTS.md)
GPT2_CALIBRATION_TOKENS = 1024


def _versus_circuit_tracer(
    title: str,
    model: HookedTransformer,
    saes: dict[str, SAE],
    prompt: str,
    files: tuple[Path, Path, list[Path]],
    repeats: int,
) -> None:
    """Time both tools' whole-prompt graph on the same transcoders and prompt, in turn `repeats` times (so a
    change of load hits both), and compare their edges."""
    tokens = prompt_tokens(model, prompt)[0].tolist()
    graph = adjacency(model, saes, prompt)
    ours_times, peer_times = [], []
    for _ in range(repeats):
        ours_times.append(interleaved({"ours": lambda: adjacency(model, saes, prompt)}, 1)["ours"])
        theirs = circuit_tracer_graph(*files, tokens, threads=torch.get_num_threads())
        peer_times.append(float(theirs["seconds"]))
    ids = circuit_tracer_ids(theirs, graph)
    mine = theirs["adjacency"].astype("float64")
    difference = abs(aligned(graph, ids) - mine)[:, [":error@0" not in i for i in ids]].max() / abs(mine).max()
    ours, peer = statistics.median(ours_times), statistics.median(peer_times)
    print(
        f"{title}: feature-lens {graph.n_features} features, adjacency {ours:.2f} s; circuit-tracer "
        f"{len(theirs['active_features'])} features (no BOS), attribute() {peer:.2f} s; circuit-tracer / "
        f"feature-lens = {peer / ours:.2f}; largest edge difference {difference:.1e} of the largest edge"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=30, help="direct rankings timed to extrapolate the loop")
    parser.add_argument("--skip-gpt2", action="store_true", help="leave out the GPT-2-shaped comparison")
    parser.add_argument("--gpt2-repeats", type=int, default=1, help="runs of each tool at GPT-2 shape")
    parser.add_argument("--peers-only", action="store_true", help="only the comparisons with circuit-tracer")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = loading.load_model("toy")
    tokens = model.to_tokens(PROMPT)
    model_pass = interleaved({"pass": lambda: forward_backward(model, tokens)}, args.repeats)["pass"]
    print(f"prompt: {PROMPT!r} ({tokens.shape[1]} tokens); model forward + backward: {model_pass:.3f} s")
    for title, names in [] if args.peers_only else SETS.items():
        saes = {name: loading.load_sae("toy", name) for name in names}
        graph = adjacency(model, saes, PROMPT)
        ours = interleaved({"ours": lambda saes=saes: adjacency(model, saes, PROMPT)}, args.repeats)["ours"]
        rows = graph.nodes.loc[graph.nodes.kind.isin(["feature", "logit"])]
        targets = [
            LogitRef(int(r.feature), int(r.position))
            if r.kind == "logit"
            else FeatureRef(str(r.sae), int(r.feature), int(r.position))
            for r in rows.itertuples()
        ]
        targets = [t for t in targets if has_side(saes, t, "upstream")]
        sample = random.Random(0).sample(targets, min(args.sample, len(targets)))

        def one_per_target(saes: dict[str, SAE] = saes, sample: list = sample) -> None:
            for target in sample:
                rank(model, saes, PROMPT, target, method="direct", direction="upstream")

        loop = interleaved({"loop": one_per_target}, 1)["loop"] / len(sample) * len(targets)
        print(
            f"{title}: {len(graph.nodes)} nodes ({graph.n_features} features, {len(targets)} targets with sources "
            f"upstream); adjacency {ours:.2f} s = {ours / model_pass:.0f} model passes; one direct ranking per "
            f"target {loop:.1f} s (extrapolated from {len(sample)}), {loop / ours:.0f}x the adjacency"
        )
    if not CIRCUIT_TRACER_PYTHON:
        print("circuit-tracer: not run (set FEATURE_LENS_CIRCUIT_TRACER_PYTHON to a Python that has it)")
        return
    names = SETS["transcoders (3)"]
    transcoders = {name: loading.load_sae("toy", name) for name in names}
    files = (paths.MODEL_DIR, paths.TOKENIZER_DIR, [paths.SAES_DIR / name for name in names])
    _versus_circuit_tracer("built-in model, 3 transcoders", model, transcoders, PROMPT, files, args.repeats)
    if args.skip_gpt2:
        return
    # Calibrated on enough tokens for each feature's own threshold to leave it firing that rarely.
    gpt2, text = gpt2_model(GPT2_CALIBRATION_TOKENS)
    prompt = " ".join(text.split()[: GPT2_TOKENS - 1])
    transcoders = random_transcoders(
        gpt2, d_sae=GPT2_D_TRANSCODER, firing=GPT2_FIRING / GPT2_D_TRANSCODER, seed=0, texts=[text]
    )
    with tempfile.TemporaryDirectory() as scratch:
        model_dir, tokenizer_dir = write_model(gpt2, Path(scratch))
        for name, sae in transcoders.items():
            sae.save_model(str(Path(scratch) / name))
        title = f"GPT-2-small shape, random weights, {GPT2_TOKENS} tokens, 12 transcoders of {GPT2_D_TRANSCODER}"
        folders = [Path(scratch) / name for name in transcoders]
        files = (model_dir, tokenizer_dir, folders)
        _versus_circuit_tracer(title, gpt2, transcoders, prompt, files, args.gpt2_repeats)


if __name__ == "__main__":
    main()
