"""The built-in model's architecture, training loop and on-disk format."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

MODEL_CONFIG = {
    "n_layers": 3,
    "d_model": 128,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "n_ctx": 128,
    "act_fn": "gelu",
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "original_architecture": "GPT2LMHeadModel",
    "default_prepend_bos": True,
    "model_name": "shakespeare-3l",
}


def build_model(
    config: dict[str, object], d_vocab: int, tokenizer: PreTrainedTokenizerBase, *, device: str | torch.device
) -> HookedTransformer:
    """A randomly initialised GPT-2-style HookedTransformer with the local tokenizer, on `device`."""
    cfg = HookedTransformerConfig(**config, d_vocab=d_vocab, device=str(device))  # type: ignore[arg-type]
    return HookedTransformer(cfg, tokenizer=tokenizer)


def bos_id(model: HookedTransformer) -> int:
    """The id of the model's BOS token (the zoo's tokenizer has one: `<|endoftext|>`)."""
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    assert isinstance(bos, int), "the model's tokenizer has no BOS token"
    return bos


def random_windows(
    stream: Int[torch.Tensor, " n"], batch: int, n_ctx: int, bos: int, generator: torch.Generator
) -> Int[torch.Tensor, "batch n_ctx"]:
    """`batch` random windows of the token stream, each starting with BOS as `to_tokens` does."""
    starts = torch.randint(0, len(stream) - n_ctx, (batch,), generator=generator)
    windows = torch.stack([stream[s : s + n_ctx - 1] for s in starts.tolist()])
    return torch.cat([torch.full((batch, 1), bos), windows], dim=1)


def train_model(
    model: HookedTransformer,
    stream: Int[torch.Tensor, " n"],
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    on_step: Callable[[int, float], None],
) -> None:
    """Next-token training with AdamW, linear warm-up and cosine decay."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    bos = bos_id(model)
    model.train()
    for step in range(steps):
        tokens = random_windows(stream, batch, model.cfg.n_ctx, bos, generator)
        loss = model(tokens, return_type="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        on_step(step, float(loss))
    model.eval()


def save_model(model: HookedTransformer, folder: Path) -> None:
    """Write `config.json` and `model.safetensors`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in MODEL_CONFIG.items()} | {"d_vocab": model.cfg.d_vocab}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not _is_buffer_mask(k)}
    save_file(state, str(folder / "model.safetensors"))


def load_model_folder(
    folder: Path, tokenizer: PreTrainedTokenizerBase, *, device: str | torch.device
) -> HookedTransformer:
    """Rebuild the model from `config.json` and load its safetensors weights onto `device`, in eval mode."""
    config = json.loads((folder / "config.json").read_text())
    d_vocab = config.pop("d_vocab")
    model = build_model(config, d_vocab, tokenizer, device=device)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)), strict=False)
    return model.eval()


def _is_buffer_mask(key: str) -> bool:
    # Causal masks and IGNORE constants are rebuilt by the constructor; shipping them wastes space.
    return key.endswith(("attn.mask", "attn.IGNORE"))


def consecutive_windows(stream: Int[torch.Tensor, " n"], n_ctx: int, bos: int) -> Int[torch.Tensor, "windows n_ctx"]:
    """The stream cut into consecutive BOS-prefixed windows (the tail that does not fill one is dropped).

    Position p >= 1 of window w holds stream token w * (n_ctx - 1) + p - 1.
    """
    body = n_ctx - 1
    n = len(stream) // body
    windows = stream[: n * body].reshape(n, body)
    return torch.cat([torch.full((n, 1), bos, dtype=stream.dtype), windows], dim=1)
