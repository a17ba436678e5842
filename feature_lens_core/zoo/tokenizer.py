"""Byte-level BPE tokenizer for the built-in model, trained with the `tokenizers` library."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on `texts` with one special token, `<|endoftext|>`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: Path) -> None:
    """Save as a transformers tokenizer folder whose encodings start with BOS, as TransformerLens expects."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=BOS, pad_token=BOS, add_bos_token=True
    )
    fast.save_pretrained(str(folder))


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """Load the saved tokenizer from its folder, never from a hub.

    Loading by local path matters: TransformerLens re-opens a tokenizer by its
    `name_or_path` when it lacks `add_bos_token`, and a local path keeps that offline.
    """
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
