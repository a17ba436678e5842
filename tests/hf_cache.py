"""A Hugging Face hub cache synthesised on disk: random weights in the exact file layouts of real repos.

The cache has huggingface_hub's real layout, so the real loaders (transformers, TransformerLens, SAE-Lens)
read it offline exactly as they read a cache filled by `hf download`:

    <root>/models--<org>--<name>/blobs/<sha256>               the file contents
    <root>/models--<org>--<name>/refs/main                    the commit the snapshot is
    <root>/models--<org>--<name>/snapshots/<commit>/<path>    a relative symlink to its blob

What is written, per real repo:
- `gpt2`: transformers' `save_pretrained` files (config.json, generation_config.json, model.safetensors) of a
  GPT-2 with a reduced config, and GPT-2-format tokenizer files (vocab.json, merges.txt, tokenizer.json,
  tokenizer_config.json) of a small byte-level BPE trained here.
- SAE-Lens-format releases (e.g. `gpt2-small-res-jb`): `<folder>/cfg.json` as the release's real files
  have it (pre-6.0 keys: hook_point, dtype "torch.float32", ...), `<folder>/sae_weights.safetensors` and
  `<folder>/sparsity.safetensors`.
- Gemma Scope releases: `<folder>/params.npz` with the real keys (W_enc, W_dec, b_enc, b_dec, threshold),
  for JumpReLU SAEs (`gemma_2` loader) and transcoders (`gemma_2_transcoder` loader). Their loaders take
  d_in from the repo name (2304 for gemma-2-2b) and d_sae from the folder name (width_16k: 16384), so
  these files always have the real shapes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.file_download import repo_folder_name
from safetensors.torch import save

# Text the small BPE is trained on: enough merges for words to be a few tokens each.
BPE_TEXT = [
    "When in the course of human events it becomes necessary for one people to dissolve the bands",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on in the warm sun.",
    "To be, or not to be, that is the question: whether it is nobler in the mind to suffer.",
    "Once upon a time there was a little girl who lived in a village near the forest.",
]
END_OF_TEXT = "<|endoftext|>"
GEMMA_2_D_MODEL = {"2b": 2304, "9b": 3584, "27b": 4608}  # what SAE-Lens's gemma_2 loaders assume per repo


@dataclass(frozen=True)
class HubCache:
    """A hub cache rooted at `root` (what HF_HUB_CACHE points to); `put` adds one file to a repo's snapshot."""

    root: Path

    def repo_dir(self, repo_id: str) -> Path:
        """`models--org--name`: where huggingface_hub keeps one model repo."""
        return self.root / repo_folder_name(repo_id=repo_id, repo_type="model")

    def put(self, repo_id: str, filename: str, data: bytes) -> Path:
        """Store `data` as `filename` of `repo_id` at its main commit; returns the snapshot path."""
        repo = self.repo_dir(repo_id)
        commit = hashlib.sha1(repo_id.encode()).hexdigest()  # one fixed commit per repo
        digest = hashlib.sha256(data).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        return link

    def put_json(self, repo_id: str, filename: str, value: object) -> Path:
        """Store `value` as indented JSON, as the hub's config files are."""
        return self.put(repo_id, filename, json.dumps(value, indent=2).encode())


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({name: t.contiguous() for name, t in tensors.items()})


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def add_gpt2(cache: HubCache, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 128) -> int:
    """Write repo `gpt2` (TransformerLens's `gpt2-small`) with random weights and a reduced config.

    Returns the vocabulary size (the BPE's merges, its 256 bytes and <|endoftext|>, which is last as in GPT-2).
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(BPE_TEXT, vocab_size=400, min_frequency=1, show_progress=False)
    bpe.add_special_tokens([END_OF_TEXT])
    vocab = bpe.get_vocab_size()
    end = bpe.token_to_id(END_OF_TEXT)
    assert end == vocab - 1
    # The keys of gpt2's own config.json (n_ctx included, which TransformerLens reads), sizes reduced.
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": end,
        "embd_pdrop": 0.1,
        "eos_token_id": end,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_ctx,
        "n_embd": d_model,
        "n_head": n_heads,
        "n_layer": n_layers,
        "n_positions": n_ctx,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": vocab,
    }
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        GPT2LMHeadModel(GPT2Config(**config)).save_pretrained(folder)  # model.safetensors, generation_config.json
        (Path(folder) / "config.json").write_text(json.dumps(config, indent=2))
        bpe.save_model(folder)  # vocab.json, merges.txt
        bpe.save(str(Path(folder) / "tokenizer.json"))
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps({"model_max_length": n_ctx}))
        for path in sorted(Path(folder).iterdir()):
            cache.put("gpt2", path.name, path.read_bytes())
    return vocab


def _sae_tensors(d_in: int, d_sae: int, d_out: int, seed: int) -> dict[str, torch.Tensor]:
    """Random SAE weights: unit-norm encoder columns and decoder rows, zero encoder bias (ReLU: half fire)."""
    generator = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(d_in, d_sae, generator=generator)
    w_enc = w_enc / w_enc.norm(dim=0, keepdim=True)
    w_dec = torch.randn(d_sae, d_out, generator=generator)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    b_enc = torch.zeros(d_sae)
    b_dec = 0.01 * torch.randn(d_out, generator=generator)
    return {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec}


def _directory_entry(release: str, sae_id: str) -> tuple[str, str]:
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    return get_repo_id_and_folder_name(release, sae_id)


def add_sae_lens_release(
    cache: HubCache, release: str, sae_id: str, *, d_in: int, d_sae: int, hook: str, seed: int = 0
) -> None:
    """Write one SAE of an SAE-Lens-format release (as `gpt2-small-res-jb`'s are) with random weights."""
    repo_id, folder = _directory_entry(release, sae_id)
    layer = int(re.search(r"blocks\.(\d+)\.", hook).group(1))  # type: ignore[union-attr]
    cfg = {  # the keys and value formats of the release's real cfg.json files (written before SAE-Lens 6)
        "model_name": "gpt2-small",
        "hook_point": hook,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "d_in": d_in,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "cpu",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": d_sae // d_in,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae,
        "tokens_per_buffer": 67108864,
        "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }
    cache.put_json(repo_id, f"{folder}/cfg.json", cfg)
    cache.put(repo_id, f"{folder}/sae_weights.safetensors", _safetensors(_sae_tensors(d_in, d_sae, d_in, seed)))
    log_sparsity = -3 - torch.rand(d_sae, generator=torch.Generator().manual_seed(seed))
    cache.put(repo_id, f"{folder}/sparsity.safetensors", _safetensors({"sparsity": log_sparsity}))


def gemma_scope_shape(release: str, sae_id: str) -> tuple[int, int]:
    """(d_in, d_sae) that SAE-Lens's Gemma Scope loaders require: d_in from the repo, d_sae from the folder."""
    repo_id, folder = _directory_entry(release, sae_id)
    size = next(s for s in GEMMA_2_D_MODEL if f"-{s}-" in repo_id)
    width = re.search(r"width_(\d+)k", folder)
    assert width, folder
    return GEMMA_2_D_MODEL[size], int(width.group(1)) * 1024


def add_gemma_scope(cache: HubCache, release: str, sae_id: str, *, seed: int = 0) -> tuple[int, int]:
    """Write one Gemma Scope JumpReLU SAE or transcoder (`<folder>/params.npz`, float32, the real keys).

    Returns (d_in, d_sae). The threshold lets about 1 in 700 features fire on activations of unit size per
    dimension (pre-activations are then standard normal): some 20 of 16384 per token.
    """
    repo_id, folder = _directory_entry(release, sae_id)
    d_in, d_sae = gemma_scope_shape(release, sae_id)
    tensors = _sae_tensors(d_in, d_sae, d_in, seed)
    tensors["threshold"] = torch.full((d_sae,), 3.0)
    cache.put(repo_id, f"{folder}/params.npz", _npz({name: t.numpy() for name, t in tensors.items()}))
    return d_in, d_sae
