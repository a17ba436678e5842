"""How long building every dashboard of one built-in SAE takes, feature-lens against SAEDashboard, on the same
SAE and text: `python -m benchmarks.bench_dashboard [--sae L1.resid_pre] [--features 1024]`.

Both build, per feature: the activation histogram (40 bins), 10 top examples, 5 activation groups of 5
examples, the logit table (10 tokens each way) and the logit histogram, over the held-out plays' 600 windows of
128 tokens (BOS ignored); feature-lens also finds each feature's 10 nearest features by decoder (SAEDashboard's
feature tables, its correlated features, are built too). Each tool runs in a fresh process on one thread; the
time counts from the loaded model and SAE to the last dashboard, not the imports. SAEDashboard runs in its own
environment (/tmp/sdvenv, docs/model-zoo.md says how to make it) and is skipped, with the reason, without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SD_PYTHON = Path("/tmp/sdvenv/bin/python")
COMMON = """
import json, sys, time, torch
torch.set_num_threads(1)
import feature_lens_core as flc
from feature_lens_core import dashboard
name, n = sys.argv[1], int(sys.argv[2])
model, sae = flc.load_model("toy"), flc.load_sae("toy", name)
corpus = dashboard.held_out_corpus(model)
"""
FEATURE_LENS = (
    COMMON
    + """
start = time.perf_counter()
acts = dashboard.corpus_activations(model, sae, corpus)
read = time.perf_counter()
boards = [dashboard.feature_dashboard(model, sae, acts, f, name=name) for f in range(n)]
done = time.perf_counter()
print(json.dumps({"seconds": done - start, "corpus_pass_s": read - start, "per_feature_ms": 1000 * (done - read) / n}))
"""
)
SAE_DASHBOARD = (
    COMMON
    + """
from sae_dashboard.components_config import (ActsHistogramConfig, FeatureTablesConfig, LogitsHistogramConfig,
    LogitsTableConfig, SequencesConfig)
from sae_dashboard.layout import Column, SaeVisLayoutConfig
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
layout = SaeVisLayoutConfig(columns=[
    Column(FeatureTablesConfig()),
    Column(ActsHistogramConfig(), LogitsTableConfig(n_rows=10), LogitsHistogramConfig()),
    Column(SequencesConfig(buffer=None, top_acts_group_size=10, n_quantiles=5, quantile_group_size=5)),
])
cfg = SaeVisConfig(hook_point=sae.cfg.metadata.hook_name, features=list(range(n)),
    ignore_tokens={model.tokenizer.bos_token_id}, feature_centric_layout=layout, minibatch_size_tokens=64,
    verbose=False)
start = time.perf_counter()
vis = SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=corpus.windows)
assert len(vis.feature_data_dict) == n
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
)


def _run(python: str, probe: str, sae: str, n: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, "-c", probe, sae, str(n)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sae", default="L1.resid_pre")
    parser.add_argument("--features", type=int, default=1024, help="the first N features (default: all 1024)")
    args = parser.parse_args(argv)
    result = {
        "sae": args.sae,
        "features": args.features,
        "feature-lens": _run(sys.executable, FEATURE_LENS, args.sae, args.features),
    }
    if SD_PYTHON.exists():
        result["SAEDashboard"] = _run(str(SD_PYTHON), SAE_DASHBOARD, args.sae, args.features)
    else:
        result["SAEDashboard"] = {"error": f"not installed beside the project ({SD_PYTHON} does not exist)"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
