"""The public loaders on the built-in model: shapes, hook names, reconstruction, offline use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from sae_lens import SAE, Transcoder
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

import feature_lens_core
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import reconstruct, sae_target

pytestmark = pytest.mark.integration

PROMPT = "But soft, what light through yonder window breaks? It is the east, and Juliet is the sun."


def test_load_model_is_gpt2_style_and_in_eval_mode(toy_model: HookedTransformer) -> None:
    cfg = toy_model.cfg
    assert not toy_model.training
    assert 2 <= cfg.n_layers <= 4 and 128 <= cfg.d_model <= 256 and cfg.n_ctx >= 128
    assert cfg.normalization_type == "LN" and cfg.act_fn == "gelu"
    assert cfg.positional_embedding_type == "standard" and not cfg.attn_only
    assert cfg.d_vocab <= 8192
    tokens = toy_model.to_tokens(PROMPT)
    assert tokens[0, 0].item() == toy_model.tokenizer.bos_token_id
    assert toy_model.to_string(tokens[0, 1:]) == PROMPT


def test_public_names_are_exported() -> None:
    for name in ("load_model", "list_saes", "load_sae"):
        assert callable(getattr(feature_lens_core, name))


def test_list_saes_covers_every_layer(toy_model: HookedTransformer) -> None:
    names = feature_lens_core.list_saes("toy")
    assert all(isinstance(n, str) for n in names)
    for layer in range(toy_model.cfg.n_layers):
        for kind in ("resid_pre", "attn_z", "mlp_out", "transcoder"):
            assert f"L{layer}.{kind}" in names
    assert f"L{toy_model.cfg.n_layers - 1}.resid_post" in names


def test_hook_names_and_kinds(toy_saes: dict[str, SAE], toy_model: HookedTransformer) -> None:
    hook_points = set(toy_model.hook_dict)
    for name, sae in toy_saes.items():
        layer = int(name.split(".")[0][1:])
        assert sae.cfg.metadata.hook_name in hook_points, name
        if name.endswith("transcoder"):
            assert isinstance(sae, Transcoder)
            assert sae.cfg.metadata.hook_name == f"blocks.{layer}.ln2.hook_normalized"
            assert sae.cfg.metadata.hook_name_out == f"blocks.{layer}.hook_mlp_out"
        elif name.endswith("attn_z"):
            assert sae.cfg.metadata.hook_name == f"blocks.{layer}.attn.hook_z"
            assert sae.cfg.reshape_activations == "hook_z"
        assert sae.cfg.d_in == toy_model.cfg.d_model
        assert sae.W_dec.shape == (sae.cfg.d_sae, toy_model.cfg.d_model)


def test_load_sae_reconstructs_the_activation_at_its_hook(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE]
) -> None:
    hooks = {h for s in toy_saes.values() for h in (s.cfg.metadata.hook_name, s.cfg.metadata.hook_name_out) if h}
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    windows = consecutive_windows(held_out, toy_model.cfg.n_ctx, toy_model.tokenizer.bos_token_id)[:4]
    _, cache = toy_model.run_with_cache(windows, names_filter=list(hooks))
    for name, sae in toy_saes.items():
        acts, recon = reconstruct(sae, cache)
        target = sae_target(sae, cache)[:, 1:].flatten(0, 1)  # BOS positions are not text
        recon = recon[:, 1:].flatten(0, 1)
        fve = 1 - (target - recon).pow(2).sum() / (target - target.mean(0)).pow(2).sum()
        assert fve > 0.75, f"{name}: FVE {fve:.3f} on 4 held-out windows"
        assert 4 <= (acts[:, 1:] > 0).float().sum(-1).mean() <= 64, name


def test_everything_loads_with_the_network_blocked() -> None:
    """A fresh interpreter with sockets disabled and HF_HUB_OFFLINE=1 loads the model, every SAE and tokenizes."""
    script = textwrap.dedent(
        """
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        import feature_lens_core as flc
        model = flc.load_model("toy")
        saes = [flc.load_sae("toy", n) for n in flc.list_saes("toy")]
        print(len(saes), model.to_str_tokens("Good morrow")[:2])
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("13 ['<|endoftext|>', 'Good']")


def test_weights_are_safetensors_only() -> None:
    from feature_lens_core.zoo import paths

    files = [p for p in paths.ZOO_DIR.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pt", ".pth", ".bin", ".pkl", ".ckpt"}]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20


def test_model_is_deterministic(toy_model: HookedTransformer) -> None:
    with torch.no_grad():
        a = toy_model(PROMPT)
        b = toy_model(PROMPT)
    assert torch.equal(a, b)
