"""Does everything run on CUDA, with the CPU's results, and how fast: GPT-2 small's shape with 4 SAEs of 24576.

`python benchmarks/bench_gpu.py [--features 24576] [--tokens 16]` on a machine with CUDA:

1. synthesises a Hugging Face cache (tests/hf_cache.py) holding `gpt2` at GPT-2 small's shape (12 layers,
   d_model 768, 12 heads, n_ctx 1024; random weights, the small BPE's vocabulary) and four
   `gpt2-small-res-jb` SAEs (blocks.2/5/8/11.hook_resid_pre, 24576 features), and loads them offline through
   `load_model` / `load_sae` onto the CPU and onto CUDA, as a user's cached release would;
2. sets every encoder bias (the same on both devices) so that about 45 features fire per token;
3. runs `rank` with every method in both directions and `build_graph` (both directions, 2 hops) on a short
   prompt on each device, and checks the CUDA scores equal the CPU ones: |cuda - cpu| <= 1e-4 * max |cpu|
   per ranking, rows matched by (sae, feature, position);
4. prints the load and run times on each device and the largest differences. Exit status 1 if any check fails.

Without CUDA it says so and exits 0: nothing in CI depends on it. `--device cpu` runs every step against a
second CPU copy (a check of the script itself on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package is not installed: run from the checkout

import torch  # noqa: E402
from sae_lens import SAE  # noqa: E402
from transformer_lens import HookedTransformer  # noqa: E402

LAYERS = (2, 5, 8, 11)
FIRING = 45  # mean active features per token the encoder biases are set to
RELATIVE = 1e-4
PROMPT = "The quick brown fox jumps over the lazy dog."


def _cache(root: Path, d_sae: int) -> list[str]:
    """Write the synthesised cache under `root`; returns the SAE names."""
    from tests.hf_cache import HubCache, add_gpt2, add_sae_lens_release

    cache = HubCache(root)
    add_gpt2(cache, n_layers=12, d_model=768, n_heads=12, n_ctx=1024)
    names = []
    for seed, layer in enumerate(LAYERS):
        hook = f"blocks.{layer}.hook_resid_pre"
        add_sae_lens_release(cache, "gpt2-small-res-jb", hook, d_in=768, d_sae=d_sae, hook=hook, seed=seed)
        names.append(f"gpt2-small-res-jb/{hook}")
    return names


def _timed(fn: Callable[[], object], device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def _biases(model: HookedTransformer, saes: dict[str, SAE], prompt: str) -> dict[str, torch.Tensor]:
    """One encoder bias per SAE, at the quantile that leaves FIRING features per token (computed on the CPU)."""
    from feature_lens_core import hooks

    tokens = model.to_tokens(prompt)
    reads = {name: hooks.site(sae).read for name, sae in saes.items()}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=list(reads.values()))
        biases = {}
        for name, sae in saes.items():
            pre = sae.process_sae_in(cache[reads[name]][0]) @ sae.W_enc
            level = float(pre.flatten().quantile(1 - FIRING / sae.cfg.d_sae))
            biases[name] = torch.full_like(sae.b_enc, -level)
    return biases


def _runs(model: HookedTransformer, saes: dict[str, SAE], prompt: str) -> dict[str, tuple[float, object]]:
    """Every method both ways, and a graph: name -> (seconds, result)."""
    import feature_lens_core as flc
    from feature_lens_core.connectome import build_graph
    from feature_lens_core.options import METHODS

    device = str(model.cfg.device)
    names = list(saes)

    def strongest(name: str, position: int) -> flc.FeatureRef:
        acts = flc.activations(model, saes[name], prompt)
        return flc.FeatureRef(name, int(acts[acts.position == position].iloc[0].feature), position)

    last = model.to_tokens(prompt).shape[1] - 1
    target, source, middle = strongest(names[-1], last), strongest(names[0], 1), strongest(names[2], last)
    results = {}
    for method in METHODS:
        for direction, feature in (("upstream", target), ("downstream", source)):
            results[f"{method} {direction}"] = _timed(
                functools.partial(flc.rank, model, saes, prompt, feature, direction=direction, method=method), device
            )
    # Both sides of a middle SAE's feature: the last SAE has nothing downstream, which build_graph refuses.
    graph = functools.partial(build_graph, model, saes, prompt, middle, method="attribution", direction="both")
    results["graph both, 2 hops"] = _timed(graph, device)
    return results


def _difference(cpu: object, cuda: object) -> float:
    """Largest |cuda - cpu| over max |cpu|, rows matched by node (rankings) or by edge (graphs); inf if the rows
    differ."""
    import pandas as pd

    if not isinstance(cpu, pd.DataFrame):  # a Graph: compare its edges, and its faithfulness
        keys, cpu_frame, cuda_frame = ["source", "target"], cpu.edges, cuda.edges  # type: ignore[attr-defined]
        kept = (cpu.faithfulness.kept, cuda.faithfulness.kept, cpu.faithfulness.full)  # type: ignore[attr-defined]
        extra = abs(kept[0] - kept[1]) / max(abs(kept[2]), 1e-30)
    else:
        keys, cpu_frame, cuda_frame, extra = ["sae", "feature", "position"], cpu, cuda, 0.0
    merged = cpu_frame.merge(cuda_frame, on=keys, how="outer", suffixes=("_cpu", "_cuda"), indicator=True)
    if (merged["_merge"] != "both").any():
        return float("inf")
    scale = max(float(merged.score_cpu.abs().max()), 1e-30)
    return max(float((merged.score_cuda - merged.score_cpu).abs().max()) / scale, extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=24576, help="features per SAE (default 24576)")
    parser.add_argument(
        "--device", default="cuda", help="the device checked against the CPU (default cuda; 'cpu' checks the script)"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"No CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
            "nothing to check. Run this on a machine with an NVIDIA GPU."
        )
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # the check compares float32 with float32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    root = Path(tempfile.mkdtemp(prefix="bench_gpu_hub_"))
    os.environ["HF_HUB_CACHE"], os.environ["HF_HUB_OFFLINE"] = str(root), "1"
    from huggingface_hub import constants

    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(root), True
    import feature_lens_core as flc

    seconds, names = _timed(functools.partial(_cache, root, args.features), "cpu")
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"{gpu}, torch {torch.__version__}; cache written in {seconds:.1f} s")

    def load(device: str) -> tuple[HookedTransformer, dict[str, SAE]]:
        return flc.load_model("gpt2-small", device=device), {
            n: flc.load_sae("gpt2-small", n, device=device) for n in names
        }

    loaded = {}
    for role, device in (("reference", "cpu"), ("checked", args.device)):
        seconds, loaded[role] = _timed(functools.partial(load, device), device)
        print(f"{device}: model and {len(names)} SAEs of {args.features} loaded from the cache in {seconds:.2f} s")
    biases = _biases(*loaded["reference"], PROMPT)
    with torch.no_grad():
        for _, saes in loaded.values():
            for name, sae in saes.items():
                sae.b_enc.copy_(biases[name].to(sae.b_enc.device))
    runs = {}
    for role, (model, saes) in loaded.items():
        try:
            runs[role] = _runs(model, saes, PROMPT)
        except Exception as exc:  # report what fails on the device, and fail
            print(f"{model.cfg.device}: FAILED: {type(exc).__name__}: {exc}")
            return 1
    tokens = loaded["reference"][0].to_tokens(PROMPT).shape[1]
    print(f"\n{tokens} tokens; seconds per call (the first call on a device includes its warm-up)")
    print(f"{'run':<24}{'cpu s':>10}{args.device + ' s':>10}{'max rel diff':>16}")
    worst = 0.0
    for name, (cpu_s, cpu_result) in runs["reference"].items():
        checked_s, checked_result = runs["checked"][name]
        difference = _difference(cpu_result, checked_result)
        worst = max(worst, difference)
        flag = "" if difference <= RELATIVE else "  <-- differs"
        print(f"{name:<24}{cpu_s:>10.3f}{checked_s:>10.3f}{difference:>16.2e}{flag}")
    print(f"\nlargest relative difference {worst:.2e} (bound {RELATIVE:g}): {'ok' if worst <= RELATIVE else 'FAILED'}")
    return 0 if worst <= RELATIVE else 1


if __name__ == "__main__":
    sys.exit(main())
