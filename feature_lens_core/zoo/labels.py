"""Write the built-in SAEs' shipped labels: `labels.json` in each SAE folder, one label per feature.

Each label is `dashboard.label_evidence` over the held-out plays, the text the dashboards show, with the feature's
logit effects: the tokens carrying most of its summed activation with their usual preceding token, and the output
token it promotes where that stands out (`' thou' after ' art' (12%) · ' me' (8%) → ','`). A dashboard of a
built-in SAE on those plays therefore shows the shipped label as its evidence.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from sae_lens import SAE
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core import dashboard
from feature_lens_core.files import write_atomically

FILE = "labels.json"


def sae_labels(model: HookedTransformer, sae: SAE, corpus: dashboard.Corpus) -> list[str]:
    """Every feature's label over `corpus`, with its logit effects."""
    acts = dashboard.corpus_activations(model, sae, corpus)
    tokenizer = model.tokenizer
    assert tokenizer is not None
    return [
        dashboard.label_evidence(tokenizer, acts, f, logits=dashboard.feature_logits(model, sae, f)).text
        for f in range(sae.cfg.d_sae)
    ]


def build_labels(model: HookedTransformer, saes_dir: Path) -> None:
    """`labels.json` for every SAE folder under `saes_dir`, from the held-out plays."""
    corpus = dashboard.held_out_corpus(model)
    if not corpus.held_out:
        raise ValueError("The zoo's labels are read off the shipped held-out tokens: build with the zoo's tokenizer.")
    for folder in tqdm(sorted(p for p in saes_dir.iterdir() if (p / "cfg.json").exists()), desc="labels"):
        labels = sae_labels(model, SAE.load_from_disk(folder), corpus)
        write_atomically(folder / FILE, functools.partial(_write, json.dumps(labels, ensure_ascii=False)))


def _write(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8")
