"""Direct attribution: contributions of all sources, error nodes and the remaining (bias) terms sum exactly
to the target's pre-activation, with LayerNorm scales and attention patterns frozen at the clean run.

The sources below partition the residual stream entering layer 2: the embeddings (L0.resid_pre SAE),
every attention output (hook_z SAEs, then W_O and b_O) and every MLP output (a transcoder, an MLP-out SAE).
Each SAE splits its activation into features + b_dec + error, so what is left over is a constant vector
made of decoder biases and b_O; the test builds it from the weights alone.
"""

from __future__ import annotations

import pytest
import torch

from feature_lens_core.ranking import FeatureRef, rank
from tests.helpers import PROMPT, cache_of, leftover, node_change

pytestmark = pytest.mark.unit
PARTITION = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.mlp_out"]


def direct_sum(model, saes, names: list[str], target: FeatureRef) -> float:
    frame = rank(
        model, {n: saes[n] for n in [*names, target.sae]}, PROMPT, target, direction="upstream", method="direct"
    )
    assert set(frame.sae) == set(names)
    return float(frame.score.sum())


def test_residual_target_decomposes_exactly(model, saes, strongest):
    target = FeatureRef("L2.resid_pre", strongest("L2.resid_pre", 13), 13)
    sae = saes[target.sae]
    encoder = sae.W_enc[:, target.feature].detach()
    with torch.no_grad():
        activation = float(sae.encode(cache_of(model, PROMPT)["blocks.2.hook_resid_pre"][0, 13])[target.feature])
    rest = (
        leftover(model, saes, PARTITION) @ encoder - sae.b_dec.detach() @ encoder + sae.b_enc[target.feature].detach()
    )
    assert direct_sum(model, saes, PARTITION, target) + float(rest) == pytest.approx(activation, rel=1e-10)


def test_transcoder_target_decomposes_exactly_through_frozen_ln2(model, saes, strongest):
    target = FeatureRef("L2.transcoder", strongest("L2.transcoder", 13), 13)
    names = [*PARTITION, "L2.attn_z"]
    sae = saes[target.sae]
    cache = cache_of(model, PROMPT)
    encoder = sae.W_enc[:, target.feature].detach()
    constant = leftover(model, saes, names)
    normalised = (constant - constant.mean()) / cache["blocks.2.ln2.hook_scale"][0, 13]
    with torch.no_grad():
        activation = float(sae.encode(cache["blocks.2.ln2.hook_normalized"][0, 13])[target.feature])
    rest = normalised @ encoder + sae.b_enc[target.feature].detach()
    assert direct_sum(model, saes, names, target) + float(rest) == pytest.approx(activation, rel=1e-10)


def test_hook_z_target_decomposes_exactly_through_frozen_patterns(model, saes, strongest):
    q = 13
    target = FeatureRef("L2.attn_z", strongest("L2.attn_z", q), q)
    sae, attn, ln1 = saes[target.sae], model.blocks[2].attn, model.blocks[2].ln1
    cache = cache_of(model, PROMPT)
    encoder = sae.W_enc[:, target.feature].detach().reshape(model.cfg.n_heads, model.cfg.d_head)
    pattern = cache["blocks.2.attn.hook_pattern"][0, :, q, : q + 1]  # [head, source]
    scale = cache["blocks.2.ln1.hook_scale"][0, : q + 1]  # [source, 1]
    constant = leftover(model, saes, PARTITION)
    with torch.no_grad():  # the parameters require grad; the identity needs values only
        through_ln1 = (constant - constant.mean()) / scale * ln1.w  # [source, d_model]
        values = torch.einsum("sm,hmd->shd", through_ln1, attn.W_V)
        rest = torch.einsum("hs,shd,hd->", pattern, values, encoder)
        rest += torch.einsum("hd,hd->", ln1.b @ attn.W_V + attn.b_V, encoder)  # attention weights sum to 1
        rest += -sae.b_dec @ sae.W_enc[:, target.feature] + sae.b_enc[target.feature]
        activation = float(sae.encode(cache["blocks.2.attn.hook_z"][0, q])[target.feature])
    assert direct_sum(model, saes, PARTITION, target) + float(rest) == pytest.approx(activation, rel=1e-10)


def test_mlp_out_target_is_the_mlp_slope_with_frozen_ln2(model, saes, strongest):
    """MLP-out SAEs read through the MLP: the direct path is its Jacobian at the clean input, ln2 frozen."""
    q = 12
    target = FeatureRef("L2.mlp_out", strongest("L2.mlp_out", q), q)
    frame = rank(model, saes, PROMPT, target, direction="upstream", method="direct")
    assert (frame[frame.position != q].score == 0).all()
    cache = cache_of(model, PROMPT)
    block, sae = model.blocks[2], saes[target.sae]
    scale = cache["blocks.2.ln2.hook_scale"][0, q]
    resid_mid = cache["blocks.2.hook_resid_mid"][0, q]

    def mlp_out(resid: torch.Tensor) -> torch.Tensor:
        frozen = (resid - resid.mean()) / scale * block.ln2.w + block.ln2.b
        return block.mlp(frozen[None, None])[0, 0]

    encoder = sae.W_enc[:, target.feature].detach()
    checked = 0
    for row in frame[
        (frame.position == q) & frame.sae.isin(["L1.transcoder", "L2.resid_pre", "L0.mlp_out"])
    ].itertuples():
        change = node_change(saes[row.sae], cache, q, row.feature).detach()
        _, slope = torch.func.jvp(mlp_out, (resid_mid,), (change,))
        assert row.score == pytest.approx(-float((slope @ encoder).detach()), rel=1e-9, abs=1e-12)
        checked += 1
    assert checked > 10


def test_load_forward_mode_leaves_nothing_for_the_first_downstream_pass_to_import() -> None:
    """In a fresh process: after `load_forward_mode`, a downstream forward-mode pass imports no module."""
    import subprocess
    import sys

    check = (
        "import sys, torch, torch.autograd.forward_ad as fwad\n"
        "from feature_lens_core.methods.linear import load_forward_mode\n"
        "load_forward_mode()\n"
        "before = set(sys.modules)\n"
        "with fwad.dual_level():\n"
        "    x = fwad.make_dual(torch.ones(3), torch.ones(3))\n"
        "    torch.nn.functional.gelu(torch.nn.functional.layer_norm(x, (3,)))\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"
