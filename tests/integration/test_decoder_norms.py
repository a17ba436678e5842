"""Every shipped decoder row has unit norm, and the zoo build's fold into that form leaves reconstructions unchanged."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows
from feature_lens_core.zoo.sae_io import hooks_of, reconstruct, sae_input
from feature_lens_core.zoo.sae_specs import zoo_specs
from feature_lens_core.zoo.train_saes import _Trainee, to_sae_lens

pytestmark = pytest.mark.integration


def test_every_shipped_decoder_row_has_unit_norm(toy_saes: dict[str, SAE]) -> None:
    for name, sae in toy_saes.items():
        norms = sae.W_dec.detach().norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (name, float(norms.min()), float(norms.max()))


def _trainee_behind(sae: SAE, norms: torch.Tensor, scale_in: float, scale_out: float) -> _Trainee:
    """Parameters in training units that `sae` folds from: decoder rows of norm `norms * scale_out`."""
    d_in, d_out = sae.W_enc.shape[0], sae.W_dec.shape[1]
    trainee = _Trainee(d_in, d_out, sae.cfg.d_sae, sae.cfg.apply_b_dec_to_input, torch.Generator())
    with torch.no_grad():
        trainee.W_enc.copy_(sae.W_enc / (norms * scale_in))
        trainee.b_enc.copy_(sae.b_enc / norms)
        trainee.W_dec.copy_(sae.W_dec * norms[:, None] * scale_out)
        trainee.b_dec.copy_(sae.b_dec * scale_out)
    return trainee


@pytest.mark.parametrize("name", ["L1.resid_pre", "L1.attn_z", "L1.transcoder"])
def test_the_build_gives_the_shipped_weights_and_keeps_the_reconstruction(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE], name: str
) -> None:
    """Trained parameters with uneven decoder norms, as the trainer leaves them, fold back into the shipped SAE.

    The reconstruction the trained parameters make (on scaled activations, scaled back) equals the
    folded SAE's on raw activations: folding moves each decoder norm into the encoder and changes nothing else.
    """
    sae = toy_saes[name]
    spec = next(s for s in zoo_specs(toy_model.cfg.n_layers) if s.name == name)
    norms = 0.1 + 2 * torch.rand(sae.cfg.d_sae, generator=torch.Generator().manual_seed(0))
    scale_in, scale_out = (0.6, 1.7) if spec.is_transcoder else (0.6, 0.6)
    trainee = _trainee_behind(sae, norms, scale_in, scale_out)
    rebuilt = to_sae_lens(spec, trainee, scale_in, scale_out, toy_model.cfg.model_name)

    for key, shipped in sae.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], shipped, rtol=1e-5, atol=1e-6, msg=key)
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()[:2000]
    windows = consecutive_windows(held_out, toy_model.cfg.n_ctx, toy_model.tokenizer.bos_token_id)  # type: ignore[union-attr]
    _, cache = toy_model.run_with_cache(windows, names_filter=hooks_of(sae))
    x = sae_input(sae, cache)
    with torch.no_grad():
        trained_acts, trained_out = trainee(x.flatten(-2) * scale_in if spec.is_hook_z else x * scale_in)
    acts, recon = reconstruct(rebuilt, cache)
    torch.testing.assert_close(recon, trained_out / scale_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts, trained_acts * norms, rtol=1e-4, atol=1e-5)
