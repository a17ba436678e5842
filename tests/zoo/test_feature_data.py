"""Shipped dashboard data agrees with the model: top examples really activate, labels exist for every feature."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.feature_data import feature_card, feature_labels, mean_activations
from feature_lens_core.logit_effects import logit_effects
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.feature_data import auto_label
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import reconstruct

pytestmark = pytest.mark.integration


def test_every_feature_has_a_label_and_means(toy_saes: dict[str, SAE]) -> None:
    for name, sae in toy_saes.items():
        labels = feature_labels(sae)
        assert len(labels) == sae.cfg.d_sae and all(labels), name
        means = mean_activations(sae)
        assert means.shape == (sae.cfg.d_sae,) and bool((means >= 0).all()), name


@pytest.mark.parametrize("name", ["L0.resid_pre", "L1.attn_z", "L1.transcoder", "L2.resid_post"])
def test_top_examples_reproduce_on_the_model(toy_model: HookedTransformer, toy_saes: dict[str, SAE], name: str) -> None:
    """Recompute the top example's activation from its held-out window: it must match what was shipped."""
    sae = toy_saes[name]
    data = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    windows = consecutive_windows(held_out, toy_model.cfg.n_ctx, toy_model.tokenizer.bos_token_id)
    feature = int(data["density"].argmax())
    index = int(data["top_index"][feature, 0])
    body = toy_model.cfg.n_ctx - 1
    window, position = index // body, index % body + 1
    hooks = [h for h in (sae.cfg.metadata.hook_name, sae.cfg.metadata.hook_name_out) if h]
    _, cache = toy_model.run_with_cache(windows[window : window + 1], names_filter=hooks)
    acts, _ = reconstruct(sae, cache)
    assert acts[0, position, feature].item() == pytest.approx(float(data["top_activation"][feature, 0]), rel=1e-4)
    assert bool((data["top_activation"][feature][:-1] >= data["top_activation"][feature][1:]).all())


def test_feature_card_of_a_builtin_feature(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    sae = toy_saes["L1.resid_pre"]
    feature = int(load_file(str(paths.SAES_DIR / "L1.resid_pre" / "feature_data.safetensors"))["density"].argmax())
    card = feature_card(toy_model, sae, feature)
    assert card.label and card.density and card.density > 0
    assert len(card.examples) == 10 and card.examples[0].activation >= card.examples[-1].activation
    assert len(card.boosted) == 8 and card.boosted[0][1] >= card.boosted[-1][1]
    assert card.suppressed[0][1] <= card.suppressed[-1][1]


def test_feature_card_of_an_sae_without_shipped_data(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    sae = toy_saes["L0.mlp_out"]
    bare = type(sae)(
        sae.cfg.__class__.from_dict({**sae.cfg.to_dict(), "metadata": {"hook_name": "blocks.0.hook_mlp_out"}})
    )
    bare.load_state_dict(sae.state_dict())
    card = feature_card(toy_model, bare, 3)
    assert card.density is None and not card.examples and len(card.boosted) == 8
    with pytest.raises(FeatureLensError, match="'mean' baseline"):
        mean_activations(bare)
    with pytest.raises(FeatureLensError, match="out of range"):
        feature_card(toy_model, bare, sae.cfg.d_sae)


def test_logit_effects_match_a_direct_computation(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    sae = toy_saes["L0.attn_z"]
    effects = logit_effects(toy_model, sae, 5)
    w_dec = sae.W_dec[7].reshape(toy_model.cfg.n_heads, toy_model.cfg.d_head)
    direction = sum(w_dec[h] @ toy_model.W_O[0, h] for h in range(toy_model.cfg.n_heads))
    logits = (direction - direction.mean()) @ toy_model.W_U
    assert torch.equal(effects.boosted[7], logits.topk(5).indices)


def test_auto_label_shapes() -> None:
    assert auto_label([], [], []) == "never fires on held-out text"
    assert auto_label([" thou"] * 6 + [" thee"] * 4, [","] * 8 + ["."] * 2, []) == '" thou"/" thee" after ","'
    assert auto_label(["a", "b", "c"], ["x", "y", "z"], [" lord"]) == '"a" → " lord"'
    assert auto_label(["a", "b", "c"], ["x", "y", "z"], ["\ufffd", " ", " lord"]) == '"a" → " lord"'
    assert auto_label(["\n"] * 5, [","] * 5, []) == '"⏎" after ","'
