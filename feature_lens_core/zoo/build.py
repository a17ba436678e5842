"""Rebuild the built-in model zoo from scratch: `python -m feature_lens_core.zoo.build`.

Stages, each deterministic from `--seed`:
  tokenizer -> model -> saes -> dashboards -> labels -> quality -> causes
Each stage writes into `feature_lens_core/zoo/toy/`; `--stages` re-runs a subset. The corpus is read (and
downloaded) only by the stages that need it: `labels` and `causes` read the shipped model, SAEs and held-out tokens.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from feature_lens_core.zoo import paths
from feature_lens_core.zoo.corpus import Corpus, load_corpus
from feature_lens_core.zoo.model import MODEL_CONFIG, build_model, load_model_folder, save_model, train_model
from feature_lens_core.zoo.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

STAGES = ("tokenizer", "model", "saes", "dashboards", "labels", "quality", "causes")
VOCAB_SIZE = 4096
BUILD_DEVICE = "cpu"  # the zoo is trained and measured on the CPU, where every stage is deterministic from --seed


def encode_stream(texts: list[tuple[str, str]], tokenizer) -> torch.Tensor:
    """All texts as one token stream, each text followed by `<|endoftext|>`."""
    ids: list[int] = []
    for _, text in texts:
        ids += tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "feature-lens")
    parser.add_argument("--model-steps", type=int, default=2500)
    args = parser.parse_args(argv)
    stages = args.stages.split(",")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    timings: dict[str, float] = {}

    @functools.cache
    def corpus() -> Corpus:
        return load_corpus(args.cache)

    if "tokenizer" in stages:
        start = time.perf_counter()
        save_tokenizer(train_tokenizer([t for _, t in corpus().train], VOCAB_SIZE), paths.TOKENIZER_DIR)
        timings["tokenizer"] = time.perf_counter() - start
    tokenizer = load_tokenizer(paths.TOKENIZER_DIR)

    @functools.cache
    def streams() -> tuple[torch.Tensor, torch.Tensor]:
        """The training and held-out plays as token streams; the held-out one is saved (dashboards point into it)."""
        held_out = encode_stream(corpus().held_out, tokenizer)
        save_file({"tokens": held_out.to(torch.int32)}, str(paths.HELD_OUT_TOKENS))
        return encode_stream(corpus().train, tokenizer), held_out

    if "tokenizer" in stages:
        streams()  # a new tokenizer's held-out tokens are saved even when no stage after it reads them

    if "model" in stages:
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model = build_model(MODEL_CONFIG, VOCAB_SIZE, tokenizer, device=BUILD_DEVICE)
        bar = tqdm(total=args.model_steps, desc="model")

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        train_model(model, streams()[0], args.model_steps, batch=32, lr=3e-3, seed=args.seed, on_step=on_step)
        bar.close()
        save_model(model, paths.MODEL_DIR)
        timings["model"] = time.perf_counter() - start
    model = load_model_folder(paths.MODEL_DIR, tokenizer, device=BUILD_DEVICE)

    if "saes" in stages:
        from feature_lens_core.zoo.train_saes import train_all_saes

        start = time.perf_counter()
        train_all_saes(model, streams()[0], paths.SAES_DIR, seed=args.seed)
        timings["saes"] = time.perf_counter() - start
    if "dashboards" in stages:
        from feature_lens_core.zoo.feature_data import build_all_feature_data

        start = time.perf_counter()
        build_all_feature_data(model, streams()[1], paths.SAES_DIR)
        timings["dashboards"] = time.perf_counter() - start
    if "labels" in stages:
        from feature_lens_core.zoo.labels import build_labels

        start = time.perf_counter()
        build_labels(model, paths.SAES_DIR)
        timings["labels"] = time.perf_counter() - start
    if "quality" in stages:
        from feature_lens_core.zoo.quality import measure_quality

        start = time.perf_counter()
        report = measure_quality(model, streams()[1], paths.SAES_DIR)
        report["held_out_plays"] = [name for name, _ in corpus().held_out]
        paths.QUALITY_FILE.write_text(json.dumps(report, indent=2))
        timings["quality"] = time.perf_counter() - start
    if "causes" in stages:
        from feature_lens_core.zoo.causal_panels import build_causal_panels

        start = time.perf_counter()
        build_causal_panels(model, paths.SAES_DIR)
        timings["causes"] = time.perf_counter() - start
    print(json.dumps({"seconds": timings}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
