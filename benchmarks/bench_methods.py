"""How fast each method ranks, against the model's own cost and a naive implementation.

`python -m benchmarks.bench_methods [--quick]` runs each workload in a fresh Python process:

- `toy`: the built-in model, a 42-token prompt, all 13 built-in SAEs;
- `gpt2`: a model of GPT-2-small's shape (12 layers, d_model 768, 12 heads, d_mlp 3072, vocabulary 50257) with
  random weights and random SAE-Lens StandardSAEs of 24576 features at blocks.3/6/9.hook_resid_pre, their
  encoder biases set so that 45 features fire per token on average, a 64-token prompt. A fourth such SAE
  (blocks.11.hook_resid_pre) is loaded but not ranked, for the memory figure.

For each method and direction it times, in turn (so that load from other processes hits all alike): our
`feature_lens_core.rank` call (validation and the DataFrame included: what a user waits for); one plain forward
pass `model(tokens)` (F); one forward pass computing the loss plus one backward pass to the residual stream
(FB: activation gradients through every layer, no weight gradients); and a naive implementation written here
with plain TransformerLens hooks, whose scores are checked against ours. Medians after a warm-up; the naive
loops are timed on a sample of nodes and extrapolated per node. Peak resident memory is measured per ranking
in the `gpt2` process, the peak reset after loading the model and the four SAEs. Prints a table and writes
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

import feature_lens_core as flc
from feature_lens_core import hooks
from feature_lens_core.methods import ESTIMATORS
from feature_lens_core.methods.types import Anchor, Baseline
from feature_lens_core.zoo.tokenizer import BOS, load_tokenizer, save_tokenizer

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results.json"
METHODS = ("direct", "attribution", "activation")
DIRECTIONS = ("upstream", "downstream")
# (method, direction) -> (reference, bound): ours / reference <= bound, or for "naive", naive / ours >= bound.
TARGETS = {
    ("direct", "upstream"): ("F", 1.2),
    ("direct", "downstream"): ("F", 1.2),
    ("attribution", "upstream"): ("FB", 1.5),
    ("attribution", "downstream"): ("F", 3.0),
    ("activation", "upstream"): ("naive", 10.0),
    ("activation", "downstream"): ("F", 2.5),
}
MEMORY_TARGET_GB = 2.0
TOY_PROMPT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
    "arrows of outrageous fortune, or to take arms"
)
GPT2_LAYERS = (3, 6, 9)
GPT2_SPARE_LAYER = 11
GPT2_D_SAE = 24576
GPT2_FIRING = 45  # mean active features per token that the encoder biases are calibrated to
GPT2_PROMPT_TOKENS = 64
WARM_UP_CANDIDATES = 20
# Naive and fast scores agree when |naive - ours| <= RTOL * max |ours| + ATOL (float32 summed in another order).
RTOL, ATOL = 1e-3, 1e-5


@dataclass(frozen=True)
class Plan:
    """How much to measure: timed repeats, naive nodes sampled, whether to run the longest case, and whether to
    time the method's computation alone too (what `rank` adds is validation and the DataFrame)."""

    repeats: int
    naive_nodes: int
    naive_features: int
    exhaustive_upstream: bool = True
    split: bool = False


PLANS = {
    ("toy", False): Plan(repeats=7, naive_nodes=300, naive_features=100, split=True),
    ("toy", True): Plan(repeats=2, naive_nodes=50, naive_features=20, split=True),
    ("gpt2", False): Plan(repeats=5, naive_nodes=12, naive_features=8),
    ("gpt2", True): Plan(repeats=1, naive_nodes=3, naive_features=2, exhaustive_upstream=False),
}


# ------------------------------------------------------------------------------------------------ workloads


@dataclass(frozen=True)
class Workload:
    """A model, the SAEs ranked, a prompt, the upstream target and the downstream source."""

    name: str
    model: HookedTransformer
    saes: dict[str, SAE]
    prompt: str
    tokens: Tensor
    target: flc.FeatureRef
    source: flc.FeatureRef
    description: str


def _strongest(model: HookedTransformer, sae: SAE, prompt: str, position: int) -> int:
    acts = flc.activations(model, sae, prompt)
    return int(acts[acts.position == position].iloc[0].feature)


def toy_workload() -> Workload:
    """The built-in model and all its SAEs; target: L2.resid_post at the last token; source: L0.resid_pre at 1."""
    model = flc.load_model("toy")
    saes = {name: flc.load_sae("toy", name) for name in flc.list_saes("toy")}
    tokens = model.to_tokens(TOY_PROMPT)
    last = tokens.shape[1] - 1
    target = flc.FeatureRef("L2.resid_post", _strongest(model, saes["L2.resid_post"], TOY_PROMPT, last), last)
    source = flc.FeatureRef("L0.resid_pre", _strongest(model, saes["L0.resid_pre"], TOY_PROMPT, 1), 1)
    description = (
        f"built-in model (3 layers, d_model 128), {tokens.shape[1]} tokens, all {len(saes)} SAEs "
        f"({saes[target.sae].cfg.d_sae} features each)"
    )
    return Workload("toy", model, saes, TOY_PROMPT, tokens, target, source, description)


def word_tokenizer(d_vocab: int) -> PreTrainedTokenizerFast:
    """A tokenizer of `d_vocab` tokens, one per word "w0", "w1", ... and BOS last, saved and loaded as the
    built-in model's is. GPT-2's own is not available offline, and which ids a prompt has does not change
    the cost."""
    vocab = {f"w{i}": i for i in range(d_vocab - 1)} | {BOS: d_vocab - 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    folder = Path(tempfile.mkdtemp(prefix="bench_tokenizer_"))
    save_tokenizer(tokenizer, folder)
    return load_tokenizer(folder)


def gpt2_model(n_tokens: int = GPT2_PROMPT_TOKENS) -> tuple[HookedTransformer, str]:
    """A GPT-2-small-shaped model with random weights (float32, CPU) and a prompt of `n_tokens` random words
    (BOS included)."""
    cfg = HookedTransformerConfig(
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_head=64,
        d_mlp=3072,
        d_vocab=50257,
        n_ctx=1024,
        act_fn="gelu",
        normalization_type="LN",
        default_prepend_bos=True,
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=word_tokenizer(cfg.d_vocab)).eval()
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(0, cfg.d_vocab - 1, (n_tokens - 1,), generator=generator)
    return model, " ".join(f"w{i}" for i in words.tolist())


def gpt2_workload() -> tuple[Workload, SAE]:
    """The GPT-2-small-shaped workload, and the spare fourth SAE (loaded for the memory figure, never ranked)."""
    model, prompt = gpt2_model()
    cfg = model.cfg
    tokens = model.to_tokens(prompt)
    hooks = {str(layer): f"blocks.{layer}.hook_resid_pre" for layer in (*GPT2_LAYERS, GPT2_SPARE_LAYER)}
    torch.manual_seed(0)
    saes = {}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=list(hooks.values()))
        for name, hook in hooks.items():
            sae = StandardSAE(
                StandardSAEConfig(d_in=cfg.d_model, d_sae=GPT2_D_SAE, metadata=SAEMetadata(hook_name=hook))
            )
            # One bias for all features, at the quantile that leaves GPT2_FIRING features per token on average.
            sae.b_enc.zero_()
            pre = sae.process_sae_in(cache[hook][0]) @ sae.W_enc
            sae.b_enc.fill_(-float(pre.flatten().quantile(1 - GPT2_FIRING / GPT2_D_SAE)))
            saes[name] = sae.eval()
        firing = torch.cat([(saes[n].encode(cache[hooks[n]][0]) > 0).sum(-1) for n in map(str, GPT2_LAYERS)])
    del cache
    spare = saes.pop(str(GPT2_SPARE_LAYER))
    first, last = str(GPT2_LAYERS[0]), str(GPT2_LAYERS[-1])
    end = tokens.shape[1] - 1
    target = flc.FeatureRef(last, _strongest(model, saes[last], prompt, end), end)
    source = flc.FeatureRef(first, _strongest(model, saes[first], prompt, 1), 1)
    description = (
        f"GPT-2-small shape, random weights, {tokens.shape[1]} tokens, SAEs of {GPT2_D_SAE} features at "
        f"{', '.join(hooks[str(layer)] for layer in GPT2_LAYERS)} ({firing.float().mean():.0f} active per token "
        f"on average, {firing.min()} to {firing.max()})"
    )
    return Workload("gpt2", model, saes, prompt, tokens, target, source, description), spare


# ------------------------------------------------------------------------------------------------ measuring


def _status_gb(field: str) -> float:
    """VmRSS, or VmHWM (the peak since the last reset), of this process in GB (10^9 bytes)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError(f"{field} is not in /proc/self/status")


def _reset_peak() -> float:
    """Free what can be freed, reset the peak resident set to the current one (Linux) and return that, in GB."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages: the baseline is then what is really held
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_gb("VmRSS")


def _peak_of(fn: Callable[[Workload], object], workload: Workload) -> float:
    """Peak resident set in GB while `fn(workload)` runs, from the level before it."""
    _reset_peak()
    fn(workload)
    return _status_gb("VmHWM")


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions timed in turn `repeats` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_seconds(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def encode_all(workload: Workload) -> float:
    """Median seconds to encode every SAE of the workload once on the prompt (from one cache): a floor under
    any ranking that lists their active features."""
    reads = {hooks.site(sae).read for sae in workload.saes.values()}
    with torch.no_grad():
        _, cache = workload.model.run_with_cache(workload.tokens, names_filter=list(reads))

        def encode() -> None:
            for sae in workload.saes.values():
                hooks.encode(sae, cache[hooks.site(sae).read][0])

        encode()
        return statistics.median(_seconds(encode) for _ in range(7))


def _method_only(workload: Workload, method: str, direction: str) -> Callable[[], object]:
    """The method's computation as `rank` calls it, without validation and without building the DataFrame."""
    anchor = workload.target if direction == "upstream" else workload.source
    own = hooks.site(workload.saes[anchor.sae])
    if direction == "upstream":
        side = {n: s for n, s in workload.saes.items() if hooks.is_before(hooks.site(s).write, own.read)}
    else:
        side = {n: s for n, s in workload.saes.items() if hooks.is_before(own.write, hooks.site(s).read)}
    side.pop(anchor.sae, None)
    at = Anchor(anchor.sae, workload.saes[anchor.sae], anchor.position, anchor.feature)
    module = ESTIMATORS[method]
    if direction == "upstream":
        return lambda: module.upstream(workload.model, workload.tokens, side, at, Baseline())
    return lambda: module.downstream(workload.model, workload.tokens, at, side, Baseline())


def forward(workload: Workload) -> None:
    """F: one plain forward pass, logits and all."""
    with torch.no_grad():
        workload.model(workload.tokens)


def forward_backward(model: HookedTransformer, tokens: Tensor) -> None:
    """FB: a forward pass computing the loss, and its gradient w.r.t. the residual stream entering block 0."""
    leaf = {}

    def make_leaf(act: Tensor, hook: object) -> Tensor:  # noqa: ARG001
        leaf["x"] = act.detach().requires_grad_(True)
        return leaf["x"]

    with torch.enable_grad():
        loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[("blocks.0.hook_resid_pre", make_leaf)])
        torch.autograd.grad(loss, leaf["x"])


# ------------------------------------------------------------------------------------------------ naive


def _write_hook(sae: SAE) -> str:
    return sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name


def _clean_cache(workload: Workload) -> ActivationCache:
    with torch.no_grad():
        return workload.model.run_with_cache(workload.tokens, return_type=None)[1]


def _changes(workload: Workload, cache: ActivationCache, rows: pd.DataFrame) -> list[Tensor]:
    """What zero-ablating each row's node adds at its SAE's write hook, at its position, shaped as the activation
    there: -a_f W_dec[f] for a feature, minus the reconstruction error for an error node (feature -1)."""
    codes, errors = {}, {}
    with torch.no_grad():
        for name in rows.sae.unique():
            sae = workload.saes[name]
            written = cache[_write_hook(sae)][0]
            codes[name] = sae.encode(cache[sae.cfg.metadata.hook_name][0])
            errors[name] = written - sae.decode(codes[name]).reshape(written.shape)
        return [
            -errors[row.sae][row.position]
            if row.feature < 0
            else -codes[row.sae][row.position, row.feature]
            * workload.saes[row.sae].W_dec[row.feature].reshape(errors[row.sae].shape[1:])
            for row in rows.itertuples()
        ]


def _sample(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` rows spread evenly over the frame sorted by SAE, position and feature."""
    ordered = rows.sort_values(["sae", "position", "feature"], ignore_index=True)
    return ordered.iloc[:: max(1, len(ordered) // n)].head(n)


def _agreement(naive: list[float], ours: list[float]) -> dict:
    worst = max(abs(a - b) for a, b in zip(naive, ours, strict=True))
    scale = max(abs(b) for b in ours)
    return {"compared": len(ours), "max_abs_diff": worst, "max_abs_score": scale, "equal": worst <= RTOL * scale + ATOL}


def _extrapolated(fixed: float, per_node: float, nodes: int, timed: int) -> dict:
    return {
        "seconds": fixed + per_node * nodes,
        "seconds_per_node": per_node,
        "timed_nodes": timed,
        "extrapolated": timed < nodes,
    }


def naive_activation_upstream(workload: Workload, ours: pd.DataFrame, n_sample: int) -> dict:
    """One full forward pass per ablated source node, on a sample of our nodes; time extrapolated per node."""
    target = workload.saes[workload.target.sae]
    read, q, g = target.cfg.metadata.hook_name, workload.target.position, workload.target.feature
    cache = _clean_cache(workload)
    sample = _sample(ours, n_sample)
    seen = {}

    def grab(act: Tensor, hook: object) -> None:  # noqa: ARG001
        seen["x"] = act

    naive, elapsed = [], 0.0
    with torch.no_grad():
        clean = float(target.encode(cache[read][0, q])[g])
        for row, change in zip(sample.itertuples(), _changes(workload, cache, sample), strict=True):

            def add(act: Tensor, hook: object, p: int = row.position, change: Tensor = change) -> Tensor:  # noqa: ARG001
                act = act.clone()
                act[:, p] += change
                return act

            hooks = [(_write_hook(workload.saes[row.sae]), add), (read, grab)]
            elapsed += _seconds(lambda hooks=hooks: workload.model.run_with_hooks(workload.tokens, fwd_hooks=hooks))
            naive.append(clean - float(target.encode(seen["x"][0, q])[g]))
    return _extrapolated(0.0, elapsed / len(sample), len(ours), len(sample)) | _agreement(naive, sample.score.tolist())


def naive_activation_downstream(workload: Workload, ours: pd.DataFrame) -> dict:
    """Two full forward passes (clean, and with the source ablated), then every target SAE encoded on both."""
    source = workload.saes[workload.source.sae]
    source_row = pd.DataFrame(
        {"sae": [workload.source.sae], "position": [workload.source.position], "feature": [workload.source.feature]}
    )
    reads = {name: workload.saes[name].cfg.metadata.hook_name for name in ours.sae.unique()}
    patched = {}

    def grab(act: Tensor, hook: object) -> None:
        patched[hook.name] = act  # type: ignore[attr-defined]

    with torch.no_grad():
        start = time.perf_counter()
        cache = _clean_cache(workload)
        (change,) = _changes(workload, cache, source_row)

        def add(act: Tensor, hook: object) -> Tensor:  # noqa: ARG001
            act = act.clone()
            act[:, workload.source.position] += change
            return act

        hooks = [(_write_hook(source), add)] + [(read, grab) for read in set(reads.values())]
        workload.model.run_with_hooks(workload.tokens, fwd_hooks=hooks)
        score = {
            name: workload.saes[name].encode(cache[read][0]) - workload.saes[name].encode(patched[read][0])
            for name, read in reads.items()
        }
        elapsed = time.perf_counter() - start
    naive = [float(score[row.sae][row.position, row.feature]) for row in ours.itertuples()]
    return {"seconds": elapsed, "extrapolated": False} | _agreement(naive, ours.score.tolist())


def naive_attribution_downstream(workload: Workload, ours: pd.DataFrame, n_sample: int) -> dict:
    """One forward pass, then one backward pass per downstream feature (sampled; time extrapolated per feature)."""
    source = workload.saes[workload.source.sae]
    p = workload.source.position
    source_row = pd.DataFrame({"sae": [workload.source.sae], "position": [p], "feature": [workload.source.feature]})
    (change,) = _changes(workload, _clean_cache(workload), source_row)
    sample = _sample(ours, n_sample)
    leaf, seen = {}, {}

    def add_leaf(act: Tensor, hook: object) -> Tensor:  # noqa: ARG001
        leaf["x"] = torch.zeros_like(act, requires_grad=True)
        return act + leaf["x"]

    def grab(act: Tensor, hook: object) -> None:
        seen[hook.name] = act  # type: ignore[attr-defined]

    reads = {workload.saes[name].cfg.metadata.hook_name for name in ours.sae.unique()}
    with torch.enable_grad():
        hooks = [(_write_hook(source), add_leaf)] + [(read, grab) for read in reads]
        fixed = _seconds(lambda: workload.model.run_with_hooks(workload.tokens, fwd_hooks=hooks))
        naive, backward = [], 0.0
        for row in sample.itertuples():
            sae = workload.saes[row.sae]
            start = time.perf_counter()
            value = sae.encode(seen[sae.cfg.metadata.hook_name][0, row.position])[row.feature]
            (grad,) = torch.autograd.grad(value, leaf["x"], retain_graph=True)
            backward += time.perf_counter() - start
            naive.append(-float((change * grad[0, p]).sum()))
    timing = _extrapolated(fixed, backward / len(sample), len(ours), len(sample))
    return timing | _agreement(naive, sample.score.tolist())


def naive_attribution_upstream(workload: Workload, ours: pd.DataFrame) -> dict:
    """One full forward pass with grad (a zero leaf at every source's write hook) and one backward pass."""
    target = workload.saes[workload.target.sae]
    read, q, g = target.cfg.metadata.hook_name, workload.target.position, workload.target.feature
    writes = sorted({_write_hook(workload.saes[name]) for name in ours.sae.unique()})
    leaves, seen = {}, {}

    def add_leaf(act: Tensor, hook: object) -> Tensor:
        leaves[hook.name] = torch.zeros_like(act, requires_grad=True)  # type: ignore[attr-defined]
        return act + leaves[hook.name]  # type: ignore[attr-defined]

    def grab(act: Tensor, hook: object) -> None:  # noqa: ARG001
        seen["x"] = act

    with torch.enable_grad():
        start = time.perf_counter()
        workload.model.run_with_hooks(workload.tokens, fwd_hooks=[(w, add_leaf) for w in writes] + [(read, grab)])
        value = target.encode(seen["x"][0, q])[g]
        grads = dict(zip(writes, torch.autograd.grad(value, [leaves[w] for w in writes]), strict=True))
        elapsed = time.perf_counter() - start
    changes = _changes(workload, _clean_cache(workload), ours)
    naive = [
        -float((change * grads[_write_hook(workload.saes[row.sae])][0, row.position]).sum())
        for row, change in zip(ours.itertuples(), changes, strict=True)
    ]
    return {"seconds": elapsed, "extrapolated": False} | _agreement(naive, ours.score.tolist())


def _naive(workload: Workload, plan: Plan, method: str, direction: str, ours: pd.DataFrame) -> dict | None:
    if (method, direction) == ("activation", "upstream"):
        return naive_activation_upstream(workload, ours, plan.naive_nodes)
    if (method, direction) == ("activation", "downstream"):
        return naive_activation_downstream(workload, ours)
    if (method, direction) == ("attribution", "upstream"):
        return naive_attribution_upstream(workload, ours)
    if (method, direction) == ("attribution", "downstream"):
        return naive_attribution_downstream(workload, ours, plan.naive_features)
    return None  # direct attribution has no naive counterpart asked for: it is already one forward pass


# ------------------------------------------------------------------------------------------------ one workload


def _verdict(case: dict) -> dict:
    reference, bound = TARGETS[case["method"], case["direction"]]
    if reference == "naive":
        value = case["naive_over_ours"]
        return {"text": f"naive/ours >= {bound:g}", "value": value, "met": value >= bound}
    value = case[f"ours_over_{reference}"]
    return {"text": f"ours/{reference} <= {bound:g}", "value": value, "met": value <= bound}


def measure_case(workload: Workload, plan: Plan, method: str, direction: str, memory: bool) -> dict:
    """One method and direction: ours, F and FB timed in turn after a warm-up, the naive run, peak memory."""
    anchor = workload.target if direction == "upstream" else workload.source
    case: dict = {"method": method, "direction": direction}

    def ours() -> pd.DataFrame:
        return flc.rank(workload.model, workload.saes, workload.prompt, anchor, direction=direction, method=method)

    references = {"F": lambda: forward(workload), "FB": lambda: forward_backward(workload.model, workload.tokens)}
    if memory:
        case["rss_before_gb"] = _reset_peak()
    if (method, direction) == ("activation", "upstream") and workload.name == "gpt2":
        # One exhaustive run takes minutes here: it is timed once, after a warm-up on a few candidates.
        flc.rank(
            workload.model,
            workload.saes,
            workload.prompt,
            anchor,
            direction=direction,
            method=method,
            candidates=WARM_UP_CANDIDATES,
        )
        start = time.perf_counter()
        result = ours()
        seconds = time.perf_counter() - start
        peak = _status_gb("VmHWM")
        medians = {"ours": seconds} | interleaved(references, plan.repeats)
        case["repeats"] = 1
    else:
        result = ours()
        peak = _status_gb("VmHWM")
        timed = {"ours": ours} | references
        if plan.split:
            timed["method"] = _method_only(workload, method, direction)
        medians = interleaved(timed, plan.repeats)
        case["repeats"] = plan.repeats
    if memory:
        case["peak_rss_gb"] = peak  # of the ranking alone: the reference passes run after it was read
    case |= {"nodes": len(result)} | {f"{k}_s": v for k, v in medians.items()}
    case["ours_over_F"] = medians["ours"] / medians["F"]
    case["ours_over_FB"] = medians["ours"] / medians["FB"]
    naive = _naive(workload, plan, method, direction, result)
    if naive is not None:
        case["naive"] = naive
        case["naive_over_ours"] = naive["seconds"] / medians["ours"]
    case["target"] = _verdict(case)
    return case


def worker(name: str, quick: bool) -> dict:
    """Build one workload in this (fresh) process and measure it; the `gpt2` one measures memory too."""
    rss_imported = _status_gb("VmRSS")
    start = time.perf_counter()
    workload, spare = (toy_workload(), None) if name == "toy" else gpt2_workload()
    out: dict = {"description": workload.description, "build_s": time.perf_counter() - start}
    out["torch_threads"] = torch.get_num_threads()
    plan = PLANS[name, quick]
    forward(workload)
    forward_backward(workload)
    out["encode_all_s"] = encode_all(workload)
    if spare is not None:
        out["reference_peaks_gb"] = {
            name: _peak_of(fn, workload) for name, fn in (("F", forward), ("FB", forward_backward))
        }
    out["cases"] = []
    for method in METHODS:
        for direction in DIRECTIONS:
            if (method, direction) == ("activation", "upstream") and not plan.exhaustive_upstream:
                out["cases"].append({"method": method, "direction": direction, "skipped": "skipped with --quick"})
                continue
            case = measure_case(workload, plan, method, direction, memory=spare is not None)
            out["cases"].append(case)
            print(f"  {name} {method} {direction}: {case['ours_s'] * 1e3:,.1f} ms", file=sys.stderr, flush=True)
    if spare is not None:
        measured = [c for c in out["cases"] if "peak_rss_gb" in c]
        peak = max(c["peak_rss_gb"] for c in measured)
        out["memory"] = {
            "rss_after_imports_gb": rss_imported,
            "saes_loaded": len(workload.saes) + 1,
            "rss_loaded_gb": min(c["rss_before_gb"] for c in measured),
            "peak_rss_one_ranking_gb": peak,
            "max_rss_whole_process_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
            "met": peak <= MEMORY_TARGET_GB,
        }
    return out


# ------------------------------------------------------------------------------------------------ reporting


def _machine() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}" if seconds < 100 else f"{seconds:,.0f} s"


def table(results: dict) -> str:
    """The figures as a fixed-width text table, one block per workload."""
    header = (
        f"{'method':<12}{'direction':<11}{'nodes':>7}{'ours ms':>11}{'core ms':>10}{'F ms':>9}{'FB ms':>9}{'ours/F':>8}"
        f"{'ours/FB':>8}{'naive ms':>13}{'naive/ours':>11}  {'naive = ours':<14}{'target':<19}{'met'}"
    )
    lines = []
    for name, workload in results["workloads"].items():
        lines += ["", f"{name}: {workload['description']}", header, "-" * len(header)]
        lines.insert(-2, f"encoding every SAE once: {_ms(workload['encode_all_s'])} ms")
        for case in workload["cases"]:
            if "skipped" in case:
                lines.append(f"{case['method']:<12}{case['direction']:<11}  {case['skipped']}")
                continue
            naive = case.get("naive")
            naive_ms = "—" if naive is None else _ms(naive["seconds"]) + ("*" if naive["extrapolated"] else "")
            ratio = f"{case['naive_over_ours']:.1f}" if naive else "—"
            agree = "—" if naive is None else f"{'yes' if naive['equal'] else 'NO'} ({naive['compared']})"
            target = case["target"]
            lines.append(
                f"{case['method']:<12}{case['direction']:<11}{case['nodes']:>7}{_ms(case['ours_s']):>11}"
                f"{_ms(case['method_s']) if 'method_s' in case else '—':>10}"
                f"{_ms(case['F_s']):>9}{_ms(case['FB_s']):>9}{case['ours_over_F']:>8.2f}{case['ours_over_FB']:>8.2f}"
                f"{naive_ms:>13}{ratio:>11}  {agree:<14}{target['text']:<19}{'yes' if target['met'] else 'NO'}"
            )
        memory = workload.get("memory")
        if memory:
            lines.append(
                f"memory: {memory['rss_after_imports_gb']:.2f} GB after imports, {memory['rss_loaded_gb']:.2f} GB "
                f"with the model and {memory['saes_loaded']} SAEs loaded, {memory['peak_rss_one_ranking_gb']:.2f} GB "
                f"peak during a ranking (target <= {MEMORY_TARGET_GB:g} GB: {'met' if memory['met'] else 'NOT met'}); "
                f"for comparison, one plain forward pass peaks at {workload['reference_peaks_gb']['F']:.2f} GB "
                f"and one forward + backward at {workload['reference_peaks_gb']['FB']:.2f} GB"
            )
    lines.append(
        "\ncore: the method's computation alone, without validation and the DataFrame (`rank` is 'ours')"
        "\n* timed on a sample of nodes and extrapolated per node (timed_nodes in the JSON)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples; skips the longest case")
    parser.add_argument("--worker", choices=["toy", "gpt2"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.quick)))
        return
    started = time.perf_counter()
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.bench_methods" + (" --quick" if args.quick else ""),
        "machine": _machine(),
        "load_average_before": os.getloadavg()[0],
        "workloads": {},
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("toy", "gpt2"):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--worker", name] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.exit(f"the {name} worker failed (its error is above)")
        results["workloads"][name] = json.loads(done.stdout.splitlines()[-1])  # libraries may print too
    results["load_average_after"] = os.getloadavg()[0]
    results["seconds"] = time.perf_counter() - started
    RESULTS.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(
        f"\n{results['seconds']:.0f} s in all; 1-minute load average {results['load_average_before']:.1f} before, "
        f"{results['load_average_after']:.1f} after (2 cores: above ~0.5 other processes share them); "
        f"written to {RESULTS.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
