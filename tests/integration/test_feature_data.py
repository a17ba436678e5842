"""Shipped dashboard data agrees with the model: top examples really activate, labels exist for every feature."""

from __future__ import annotations

import copy

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.feature_data import feature_card, feature_labels, mean_activations
from feature_lens_core.logit_effects import decoder_in_residual, logit_effects
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import hooks_of, reconstruct

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
    logits = (direction - direction.mean()) @ torch.diag(toy_model.ln_final.w) @ toy_model.W_U
    assert torch.equal(effects.boosted[7], logits.topk(5).indices)


@pytest.mark.parametrize("name", ["L0.resid_pre", "L1.attn_z", "L1.transcoder", "L2.resid_post"])
def test_shipped_logit_effects_equal_the_formula(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE], name: str
) -> None:
    """Shipped boosted and suppressed tokens are the top of `centred(W_dec) · diag(ln_final.w) · W_U`."""
    sae = toy_saes[name]
    data = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))
    directions = decoder_in_residual(toy_model, sae)
    with torch.no_grad():
        logits = (directions - directions.mean(-1, keepdim=True)) @ torch.diag(toy_model.ln_final.w) @ toy_model.W_U
    k = data["boosted"].shape[1]
    # Compare values, and the logits at the shipped ids: robust to float ties, exact about which tokens they are.
    torch.testing.assert_close(data["boosted_value"], logits.topk(k).values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(data["suppressed_value"], -(-logits).topk(k).values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits.gather(1, data["boosted"].long()), data["boosted_value"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        logits.gather(1, data["suppressed"].long()), data["suppressed_value"], rtol=1e-4, atol=1e-5
    )


def test_logit_effects_are_the_same_with_layer_norms_folded(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE]
) -> None:
    """A model whose final LayerNorm weight is folded into W_U (as hub models load) gives the same effects."""
    folded = copy.deepcopy(toy_model)
    folded.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    assert getattr(folded.ln_final, "w", None) is None
    for name in ("L1.attn_z", "L2.resid_post"):
        plain, on_folded = logit_effects(toy_model, toy_saes[name], 8), logit_effects(folded, toy_saes[name], 8)
        torch.testing.assert_close(on_folded.boosted_value, plain.boosted_value, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(on_folded.suppressed_value, plain.suppressed_value, rtol=1e-4, atol=1e-5)


def test_no_special_token_among_the_top_examples(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    """Neither BOS nor the `<|endoftext|>` between the two held-out plays (the same id) is ever an example."""
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    special = torch.tensor(toy_model.tokenizer.all_special_ids)  # type: ignore[union-attr]
    assert torch.isin(held_out, special).any()  # the separator is there to be left out
    for name in toy_saes:
        index = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))["top_index"].long()
        assert not torch.isin(held_out[index[index >= 0]], special).any(), name


def test_examples_sit_in_the_window_the_model_read(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    """`top_position` is the position in the held-out window the activation was read at, for every example."""
    body = toy_model.cfg.n_ctx - 1
    for name in toy_saes:
        data = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))
        index, position = data["top_index"].long(), data["top_position"].long()
        assert torch.equal(index >= 0, position >= 1), name
        assert torch.equal(position[index >= 0], index[index >= 0] % body + 1), name


def test_example_context_is_all_the_model_saw(toy_model: HookedTransformer, toy_saes: dict[str, SAE]) -> None:
    """Near a window's start the card shows no text from before the window, and BOS plus the shown text alone
    reproduce the activation; at position 1 the context is BOS only, and the example says so."""
    name = "L0.resid_pre"
    sae = toy_saes[name]
    data = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    bos = toy_model.tokenizer.bos_token_id  # type: ignore[union-attr]
    position = data["top_position"]
    near_start = ((position >= 1) & (position <= 10)).any(1).nonzero().flatten()
    checked = 0
    for feature in near_start[:12].tolist():
        shown = [i for i in data["top_index"][feature].tolist() if i >= 0]
        for example, index in zip(feature_card(toy_model, sae, feature).examples, shown, strict=True):
            if example.position > 10:
                continue
            start = index - example.position + 1
            assert example.before == toy_model.tokenizer.decode(held_out[start:index].tolist())  # type: ignore[union-attr]
            assert (
                example.only_bos_before == (example.position == 1) and (example.before == "") == example.only_bos_before
            )
            seen = torch.cat([torch.tensor([bos]), held_out[start : index + 1]])[None]
            _, cache = toy_model.run_with_cache(seen, names_filter=hooks_of(sae))
            acts, _ = reconstruct(sae, cache)
            assert acts[0, -1, feature].item() == pytest.approx(example.activation, rel=1e-4, abs=1e-6)
            checked += 1
    assert checked >= 12
