"""Tiny in-memory models for the core's tests: a real HookedTransformer and SAE-Lens SAEs, random weights.

The model is 3 layers of a GPT-2-style transformer (LayerNorm, GELU, learned positions) with a byte-level
BPE tokenizer trained on a few sentences, so prompts stay strings everywhere. Every SAE kind the core
supports exists at every layer; encoder biases are calibrated so that about a quarter of the features
fire on a typical token. Everything is float64 so that exactness tests can be tight.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig

from feature_lens_core.zoo.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

DTYPE = torch.float64
D_SAE = 48
FIRING = 0.25  # share of (token, feature) pairs that fire on the calibration text
TEXTS = [
    "To be, or not to be, that is the question.",
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles, and by opposing end them.",
    "All the world's a stage, and all the men and women merely players.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
]
PROMPT = "To be, or not to be: that is the question of the stage."
CORRUPT = "To be, or not to be: this is the question of the stage."  # same token length as PROMPT
OTHER_LENGTH = "All the world is a stage, and men and women are the players."
PROMPTS = [TEXTS[0], TEXTS[3], PROMPT]  # a small prompt set for the runs over many prompts


def tiny_model(n_layers: int = 3, seed: int = 0) -> HookedTransformer:
    """A random GPT-2-style model with a real (tiny) tokenizer, in eval mode, float64."""
    folder = Path(tempfile.mkdtemp(prefix="tiny_tokenizer_"))
    save_tokenizer(train_tokenizer(TEXTS * 4, vocab_size=320), folder)
    tokenizer = load_tokenizer(folder)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=40,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        d_vocab=len(tokenizer),
        default_prepend_bos=True,
        seed=seed,
        dtype=DTYPE,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    # The default init leaves LayerNorm at identity and biases at zero; random ones exercise the
    # frozen-LayerNorm maths and the bias terms of the decomposition identity.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if name.endswith(("ln1.w", "ln2.w", "ln_final.w")):
                param.copy_(1 + 0.3 * noise)
            elif name.endswith(("ln1.b", "ln2.b", "b_O", "b_in", "b_out", "b_V")):
                param.copy_(0.1 * noise)
    return model.eval()


def _metadata(hook: str, hook_out: str | None = None) -> SAEMetadata:
    extra = {"hook_name_out": hook_out} if hook_out else {}
    return SAEMetadata(hook_name=hook, model_name="tiny", prepend_bos=True, **extra)


def _randomise(sae: SAE, generator: torch.Generator, decoder_norm: float) -> None:
    with torch.no_grad():
        for param in (sae.W_enc, sae.W_dec, sae.b_dec):
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
        sae.W_enc /= sae.W_enc.shape[0] ** 0.5
        sae.W_dec *= decoder_norm / sae.W_dec.norm(dim=-1, keepdim=True)
        sae.b_dec *= 0.05


def make_saes(model: HookedTransformer, seed: int = 1, decoder_norm: float = 0.3) -> dict[str, SAE]:
    """Every SAE kind at every layer, named like the built-in zoo: L0.resid_pre, L0.attn_z, L0.mlp_out, ..."""
    generator = torch.Generator().manual_seed(seed)
    d_model, z_width = model.cfg.d_model, model.cfg.n_heads * model.cfg.d_head
    dtype = str(DTYPE).removeprefix("torch.")
    saes: dict[str, SAE] = {}
    for layer in range(model.cfg.n_layers):
        prefix = f"blocks.{layer}"
        saes[f"L{layer}.resid_pre"] = StandardSAE(
            StandardSAEConfig(d_in=d_model, d_sae=D_SAE, dtype=dtype, metadata=_metadata(f"{prefix}.hook_resid_pre"))
        )
        saes[f"L{layer}.attn_z"] = StandardSAE(
            StandardSAEConfig(
                d_in=z_width,
                d_sae=D_SAE,
                dtype=dtype,
                reshape_activations="hook_z",
                metadata=_metadata(f"{prefix}.attn.hook_z"),
            )
        )
        saes[f"L{layer}.mlp_out"] = StandardSAE(
            StandardSAEConfig(d_in=d_model, d_sae=D_SAE, dtype=dtype, metadata=_metadata(f"{prefix}.hook_mlp_out"))
        )
        saes[f"L{layer}.transcoder"] = Transcoder(
            TranscoderConfig(
                d_in=d_model,
                d_sae=D_SAE,
                d_out=d_model,
                dtype=dtype,
                apply_b_dec_to_input=False,
                metadata=_metadata(f"{prefix}.ln2.hook_normalized", f"{prefix}.hook_mlp_out"),
            )
        )
    last = model.cfg.n_layers - 1
    saes[f"L{last}.resid_post"] = StandardSAE(
        StandardSAEConfig(d_in=d_model, d_sae=D_SAE, dtype=dtype, metadata=_metadata(f"blocks.{last}.hook_resid_post"))
    )
    return _calibrated(model, saes, generator, decoder_norm, FIRING, TEXTS)


def random_transcoders(
    model: HookedTransformer, *, d_sae: int, firing: float, seed: int = 1, texts: list[str] = TEXTS
) -> dict[str, SAE]:
    """A random transcoder at every layer (`L{layer}.transcoder`, reading ln2's output, writing the MLP's), in
    the model's dtype, each feature firing on about `firing` of the tokens of `texts`."""
    dtype = str(model.cfg.dtype).removeprefix("torch.")
    saes: dict[str, SAE] = {
        f"L{layer}.transcoder": Transcoder(
            TranscoderConfig(
                d_in=model.cfg.d_model,
                d_sae=d_sae,
                d_out=model.cfg.d_model,
                dtype=dtype,
                apply_b_dec_to_input=False,
                metadata=_metadata(f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"),
            )
        )
        for layer in range(model.cfg.n_layers)
    }
    return _calibrated(model, saes, torch.Generator().manual_seed(seed), 0.3, firing, texts)


def _calibrated(
    model: HookedTransformer,
    saes: dict[str, SAE],
    generator: torch.Generator,
    decoder_norm: float,
    firing: float,
    texts: list[str],
) -> dict[str, SAE]:
    """`saes` with random weights, each encoder bias set so that its feature fires on `firing` of the tokens of
    `texts`; in eval mode."""
    reads = [sae.cfg.metadata.hook_name for sae in saes.values()]
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(texts), names_filter=reads)
        for sae in saes.values():
            _randomise(sae, generator, decoder_norm)
            read = cache[sae.cfg.metadata.hook_name].flatten(0, 1).to(sae.W_enc.dtype)
            sae.b_enc.zero_()
            pre = sae.process_sae_in(read) @ sae.W_enc
            sae.b_enc.copy_(-pre.quantile(1 - firing, dim=0))
    return {name: sae.eval() for name, sae in saes.items()}


# ------------------------------------------------------------ brute force, written independently of the core


def write_hook(sae: SAE) -> str:
    """Where a feature's change goes: a transcoder's output hook, else the hook it reads."""
    return sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name


def node_change(
    sae: SAE, cache: ActivationCache, position: int, feature: int, baseline: float = 0.0, error_baseline=None
) -> torch.Tensor:
    """The change an ablation adds at the write hook, at one position, shaped like that activation there.

    A feature (index >= 0) goes from its activation a to `baseline`; an error node (-1) goes from the
    SAE's reconstruction error to `error_baseline` (zero if None).
    """
    read = cache[sae.cfg.metadata.hook_name][0, position]
    out = cache[write_hook(sae)][0, position]
    if feature >= 0:
        a = sae.encode(read)[feature]
        return ((baseline - a) * sae.W_dec[feature]).reshape(out.shape)
    error = out - sae.decode(sae.encode(read)).reshape(out.shape)
    return (0 if error_baseline is None else error_baseline) - error


def _run_changed(
    model: HookedTransformer, prompt: str, hook: str, position: int, change: torch.Tensor, read: str | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A full run with `change` added at `hook`, at `position`: the activation at `read` and the logits."""
    seen = {}

    def add(act, hook):
        act = act.clone()
        act[:, position] += change
        return act

    def grab(act, hook):
        seen["x"] = act

    logits = model.run_with_hooks(
        model.to_tokens(prompt),
        fwd_hooks=[(hook, add)] + ([(read, grab)] if read else []),
    )
    return seen.get("x"), logits


def target_after(
    model: HookedTransformer,
    prompt: str,
    hook: str,
    position: int,
    change: torch.Tensor,
    target: SAE,
    q: int,
    g: int,
) -> float:
    """Feature g of `target` at position q, in a full run with `change` added at `hook`, at `position`."""
    read, _ = _run_changed(model, prompt, hook, position, change, target.cfg.metadata.hook_name)
    return float(target.encode(read[0, q])[g])


def centred_logit(logits: torch.Tensor, q: int, token: int, other: int | None = None) -> float:
    """logit(token) at q minus the mean logit over the vocabulary, or minus logit(other)."""
    row = logits[0, q].double()
    return float(row[token] - (row.mean() if other is None else row[other]))


def brute_force_logit(
    model: HookedTransformer,
    prompt: str,
    source: SAE,
    position: int,
    feature: int,
    q: int,
    token: int,
    other: int | None = None,
) -> float:
    """The logit target (clean) minus the logit target with one node ablated, from two full forward passes."""
    with torch.no_grad():
        cache = cache_of(model, prompt)
        clean = centred_logit(model(model.to_tokens(prompt)), q, token, other)
        change = node_change(source, cache, position, feature, 0.0, None)
        _, logits = _run_changed(model, prompt, write_hook(source), position, change, None)
        return clean - centred_logit(logits, q, token, other)


def cache_of(model: HookedTransformer, prompt: str) -> ActivationCache:
    with torch.no_grad():
        return model.run_with_cache(model.to_tokens(prompt), return_type=None)[1]


def brute_force(
    model: HookedTransformer,
    prompt: str,
    source: SAE,
    position: int,
    feature: int,
    target: SAE,
    q: int,
    g: int,
    baseline: float = 0.0,
    error_baseline=None,
) -> float:
    """g(clean) - g(ablated), with one full forward pass per call and nothing spliced in but the change."""
    with torch.no_grad():
        cache = cache_of(model, prompt)
        clean = float(target.encode(cache[target.cfg.metadata.hook_name][0, q])[g])
        change = node_change(source, cache, position, feature, baseline, error_baseline)
        return clean - target_after(model, prompt, write_hook(source), position, change, target, q, g)


def frozen_derivative(
    model: HookedTransformer,
    prompt: str,
    source: SAE,
    position: int,
    feature: int,
    target: SAE,
    q: int,
    g: int,
    covered: set[str],
    eps: float = 1e-5,
) -> float:
    """Direct attribution written out independently: -d/dt g(run with t * change), by central differences, in
    runs whose attention patterns and LayerNorm scales are replaced by their clean values and whose `covered`
    hooks (block outputs a chosen SAE covers) are replaced by their clean values, the source's own change
    added after that. Everything else, the MLPs included, is the model's own computation."""
    clean = cache_of(model, prompt)
    change = node_change(source, clean, position, feature)
    return frozen_change(
        model,
        prompt,
        write_hook(source),
        position,
        change,
        target.cfg.metadata.hook_name,
        lambda x: float(target.encode(x[0, q])[g]),
        covered,
        eps,
    )


def frozen_change(
    model: HookedTransformer,
    prompt: str,
    write: str,
    position: int,
    change: torch.Tensor,
    read: str,
    readout,
    covered: set[str],
    eps: float = 1e-5,
) -> float:
    """-d/dt readout(activation at `read`) when t * `change` is added at `write`, `position`, in the frozen runs
    `frozen_derivative` describes (any write hook, `hook_embed` included; any readout)."""
    clean = cache_of(model, prompt)
    frozen = [name for name in clean if name.endswith(("hook_pattern", "hook_scale"))] + sorted(covered)

    def value(t: float) -> float:
        def replace(act, hook):
            act = clean[hook.name].clone()
            if hook.name == write:
                act[:, position] += t * change
            return act

        def add(act, hook):
            act = act.clone()
            act[:, position] += t * change
            return act

        seen = {}
        fwd = [(name, replace) for name in frozen]
        fwd += [] if write in frozen else [(write, add)]
        fwd += [(read, lambda act, hook: seen.setdefault("x", act))]
        with torch.no_grad():
            model.run_with_hooks(model.to_tokens(prompt), return_type=None, fwd_hooks=fwd)
            return float(readout(seen["x"]))

    return -(value(eps) - value(-eps)) / (2 * eps)


def leftover(model, saes, names: list[str]) -> torch.Tensor:
    """The residual-stream part no feature or error node carries: decoder biases and attention b_O."""
    total = torch.zeros(model.cfg.d_model, dtype=torch.float64)
    for name in names:
        sae, layer = saes[name], int(name[1])
        if name.endswith("attn_z"):
            per_head = sae.b_dec.reshape(model.cfg.n_heads, model.cfg.d_head)
            total += torch.einsum("hd,hdm->m", per_head, model.blocks[layer].attn.W_O) + model.blocks[layer].attn.b_O
        else:
            total += sae.b_dec
    return total.detach()


@contextmanager
def head_held(model: HookedTransformer, prompt: str, layer: int, head: int) -> Iterator[None]:
    """Inside the block, head `head` of layer `layer` outputs its clean `hook_z` whatever its input: a permanent
    hook, so that `frozen_derivative` run inside it measures the paths that avoid that head."""
    hook = f"blocks.{layer}.attn.hook_z"
    clean = cache_of(model, prompt)[hook]

    def hold(act, hook):
        act = act.clone()
        act[:, :, head] = clean[:, : act.shape[1], head]
        return act

    model.add_hook(hook, hold, is_permanent=True)
    try:
        yield
    finally:
        model.reset_hooks(including_permanent=True)
