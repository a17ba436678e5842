"""GPT-2 and the gpt2-small-res-jb release, read offline from a synthesised Hugging Face cache by the real loaders.

TransformerLens's `from_pretrained` reads the cache through transformers, SAE-Lens's `from_pretrained`
through its `sae_lens` loader: nothing is mocked. The weights are random, in GPT-2's and the release's
real file layouts, with a reduced width (d_model 64, 2 layers, 128 features) except in the slow test.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM, AutoTokenizer

import feature_lens_core as flc
from feature_lens_core import catalog
from feature_lens_core.connectome import build_graph
from feature_lens_core.options import METHODS
from tests.fixtures.hub import GPT2_D_MODEL, GPT2_D_SAE, GPT2_SAES, point_at
from tests.hf_cache import HubCache, add_gpt2, add_sae_lens_release

pytestmark = pytest.mark.integration
PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def gpt2(hub_cache: Path) -> HookedTransformer:
    return flc.load_model("gpt2-small", device="cpu")


def test_gpt2_loads_from_the_cache_through_transformer_lens(hub_cache: Path) -> None:
    start = time.perf_counter()
    model = flc.load_model("gpt2-small", device="cpu")
    print(f"load_model('gpt2-small') from the synthesised cache: {time.perf_counter() - start:.2f} s")
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads) == (2, GPT2_D_MODEL, 4)
    assert model.cfg.device == "cpu" and model.cfg.dtype == torch.float32 and not model.training
    # The tokenizer is GPT-2's format: <|endoftext|> (the last id) is BOS, and text round-trips.
    tokens = model.to_tokens(PROMPT)
    assert tokens[0, 0].item() == model.cfg.d_vocab - 1
    assert model.tokenizer.decode(tokens[0, 1:]) == PROMPT
    # Ground truth: transformers' own GPT-2 on the same cached files. TransformerLens folds and centres the
    # weights, which changes logits by a constant per position, so the log-probabilities must agree.
    reference = AutoModelForCausalLM.from_pretrained("gpt2").eval()
    assert AutoTokenizer.from_pretrained("gpt2")(PROMPT)["input_ids"] == tokens[0, 1:].tolist()
    with torch.no_grad():
        expected = reference(tokens).logits.log_softmax(-1)
        got = model(tokens).log_softmax(-1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_gpt2_small_res_jb_loads_with_its_weights_and_neuronpedia_id(hub_cache: Path) -> None:
    name = GPT2_SAES[0]
    sae = flc.load_sae("gpt2-small", name, device="cpu")
    assert sae.cfg.architecture() == "standard" and sae.cfg.d_in == GPT2_D_MODEL and sae.cfg.d_sae == GPT2_D_SAE
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    assert sae.cfg.metadata.neuronpedia_id == "gpt2-small/0-res-jb" == catalog.hub_sae(name).neuronpedia_id
    written = load_file(
        try_to_load_from_cache("jbloom/GPT2-Small-SAEs-Reformatted", f"{name.split('/')[1]}/sae_weights.safetensors")
    )
    for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(sae, key).detach(), written[key], atol=0, rtol=0)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("direction", ["upstream", "downstream"])
def test_rank_runs_every_method_on_the_cached_release(
    gpt2: HookedTransformer, hub_cache: Path, method: str, direction: str
) -> None:
    saes = {name: flc.load_sae("gpt2-small", name, device="cpu") for name in GPT2_SAES}
    own = GPT2_SAES[1] if direction == "upstream" else GPT2_SAES[0]
    acts = flc.activations(gpt2, saes[own], PROMPT)
    last = int(acts.position.max())
    strongest = acts[acts.position == last].iloc[0]
    feature = flc.FeatureRef(own, int(strongest.feature), last)
    frame = flc.rank(gpt2, saes, PROMPT, feature, direction=direction, method=method)
    assert len(frame) > 0 and frame.score.map(math.isfinite).all()
    assert set(frame.sae) == {GPT2_SAES[0] if direction == "upstream" else GPT2_SAES[1]}


def test_build_graph_on_the_cached_release(gpt2: HookedTransformer, hub_cache: Path) -> None:
    saes = {name: flc.load_sae("gpt2-small", name, device="cpu") for name in GPT2_SAES}
    acts = flc.activations(gpt2, saes[GPT2_SAES[1]], PROMPT)
    last = int(acts.position.max())
    target = flc.FeatureRef(GPT2_SAES[1], int(acts[acts.position == last].iloc[0].feature), last)
    graph = build_graph(gpt2, saes, PROMPT, target, method="attribution", hops=2, node_budget=12)
    assert len(graph.nodes) > 1 and len(graph.edges) > 0
    assert graph.faithfulness is not None and math.isfinite(graph.faithfulness.full)


@pytest.mark.slow
def test_gpt2_small_real_shapes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GPT-2 small's real widths (12 layers, d_model 768, 12 heads, n_ctx 1024) and two 24576-feature res-jb SAEs.

    The vocabulary stays the small BPE's: its width changes no loader code path.
    """
    cache = HubCache(tmp_path / "hub")
    add_gpt2(cache, n_layers=12, d_model=768, n_heads=12, n_ctx=1024)
    names = ["gpt2-small-res-jb/blocks.6.hook_resid_pre", "gpt2-small-res-jb/blocks.8.hook_resid_pre"]
    for seed, name in enumerate(names):
        release, sae_id = name.split("/", 1)
        add_sae_lens_release(cache, release, sae_id, d_in=768, d_sae=24576, hook=sae_id, seed=seed)
    point_at(monkeypatch, cache.root)
    start = time.perf_counter()
    model = flc.load_model("gpt2-small", device="cpu")
    saes = {name: flc.load_sae("gpt2-small", name, device="cpu") for name in names}
    print(f"GPT-2 small shape + two 24576-feature SAEs from the cache: {time.perf_counter() - start:.2f} s")
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_ctx) == (12, 768, 1024)
    assert all(sae.cfg.d_sae == 24576 for sae in saes.values())
    acts = flc.activations(model, saes[names[1]], PROMPT)
    last = int(acts.position.max())
    feature = flc.FeatureRef(names[1], int(acts[acts.position == last].iloc[0].feature), last)
    for method in ("attribution", "direct"):
        frame = flc.rank(model, saes, PROMPT, feature, direction="upstream", method=method, top_k=20)
        assert len(frame) == 20 and frame.score.map(math.isfinite).all() and set(frame.sae) == {names[0]}


def test_cli_ranks_a_cached_release_with_clean_stdout(
    gpt2: HookedTransformer, hub_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI end to end on the cached model: TransformerLens's progress lines must not reach stdout's JSON."""
    from feature_lens_core import cli

    acts = flc.activations(gpt2, flc.load_sae("gpt2-small", GPT2_SAES[1], device="cpu"), PROMPT)
    feature = f"{GPT2_SAES[1]}:{int(acts[acts.position == 1].iloc[0].feature)}@1"
    argv = ["rank", "--model=gpt2-small", f"--prompt={PROMPT}", f"--feature={feature}", f"--saes={GPT2_SAES[0]}"]
    status = cli.main([*argv, "--direction=upstream", "--method=attribution", "--format=json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    rows = json.loads(out)
    assert rows and {row["sae"] for row in rows} == {GPT2_SAES[0]}
