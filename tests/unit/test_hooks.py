"""hooks.py: where each SAE kind reads and writes, the order of hooks, and the write-space maps."""

from __future__ import annotations

import copy

import pytest
import torch

from feature_lens_core import hooks
from feature_lens_core.errors import FeatureLensError
from tests.helpers import PROMPT, cache_of

pytestmark = pytest.mark.unit

FORWARD_ORDER = [
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "blocks.1.hook_resid_pre",
    "blocks.1.attn.hook_z",
    "blocks.10.hook_resid_pre",
]


def test_order_follows_the_forward_pass(model):
    assert sorted(FORWARD_ORDER, key=hooks.order) == FORWARD_ORDER
    # The order the model's hooks actually fire in agrees (hooks of one stage may fire in any order).
    fired: list[str] = []
    known = [n for n in model.hook_dict if n.startswith("blocks.") and n.split(".", 2)[2] in hooks._STAGE]
    model.run_with_hooks(
        PROMPT, return_type=None, fwd_hooks=[(n, lambda a, hook: fired.append(hook.name)) for n in known]
    )
    assert [hooks.order(n) for n in fired] == sorted(hooks.order(n) for n in fired)
    assert len(set(fired)) > 30  # hook_result only fires with cfg.use_attn_result


def test_unknown_hooks_are_refused():
    with pytest.raises(FeatureLensError, match="not a TransformerLens block hook"):
        hooks.order("hook_embed")
    with pytest.raises(FeatureLensError, match="not a TransformerLens block hook"):
        hooks.order("blocks.0.attn.hook_rot_q")


@pytest.mark.parametrize(
    ("name", "read", "write", "kind"),
    [
        ("L1.resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre", "residual"),
        ("L2.resid_post", "blocks.2.hook_resid_post", "blocks.2.hook_resid_post", "residual"),
        ("L1.attn_z", "blocks.1.attn.hook_z", "blocks.1.attn.hook_z", "attn_z"),
        ("L1.mlp_out", "blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out", "mlp_out"),
        ("L1.transcoder", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", "transcoder"),
    ],
)
def test_site_of_each_kind(model, saes, name, read, write, kind):
    assert hooks.check_fits(model, name, saes[name]) == hooks.Site(read, write, 1 if "L1" in name else 2, kind)


def test_mismatched_widths_and_missing_hooks_are_refused(model, saes):
    missing = copy.deepcopy(saes["L1.resid_pre"])
    missing.cfg.metadata.hook_name = "blocks.7.hook_resid_pre"
    with pytest.raises(FeatureLensError, match="does not have"):
        hooks.check_fits(model, "missing", missing)
    narrow = copy.deepcopy(saes["L1.transcoder"])
    narrow.W_dec = torch.nn.Parameter(narrow.W_dec[:, :16])
    with pytest.raises(FeatureLensError, match="writes vectors of size 16"):
        hooks.check_fits(model, "narrow", narrow)
    unshaped = copy.deepcopy(saes["L1.attn_z"])
    unshaped.cfg.reshape_activations = "none"
    with pytest.raises(FeatureLensError, match="reshape_activations='hook_z'"):
        hooks.check_fits(model, "unshaped", unshaped)
    elsewhere = copy.deepcopy(saes["L1.resid_pre"])
    elsewhere.cfg.metadata.hook_name = "blocks.1.hook_attn_out"
    with pytest.raises(FeatureLensError, match="not supported"):
        hooks.check_fits(model, "elsewhere", elsewhere)


@pytest.mark.parametrize(
    ("write", "read", "crosses"),
    [
        ("blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre", False),
        ("blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", True),
        ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", True),
        ("blocks.0.attn.hook_z", "blocks.0.hook_resid_post", False),
        ("blocks.0.attn.hook_z", "blocks.1.attn.hook_z", True),
        ("blocks.0.hook_mlp_out", "blocks.1.ln2.hook_normalized", True),
        ("blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out", False),
    ],
)
def test_crosses_positions(write, read, crosses):
    assert hooks.crosses_positions(write, read) is crosses


def test_hook_z_encode_keeps_heads_apart(model, saes):
    """encode wants [.., n_heads, d_head]; flattening it ourselves is the classic position-merging bug."""
    sae = saes["L1.attn_z"]
    z = cache_of(model, PROMPT)["blocks.1.attn.hook_z"][0]  # [pos, n_heads, d_head]
    by_hand = torch.relu((z.flatten(-2) - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(hooks.encode(sae, z), by_hand)
    assert hooks.encode(sae, z).shape == (z.shape[0], sae.cfg.d_sae)


@pytest.mark.parametrize("name", ["L1.resid_pre", "L1.attn_z", "L1.mlp_out", "L1.transcoder", "L2.resid_post"])
def test_reconstruction_plus_error_is_the_activation(model, saes, name):
    sae, where = saes[name], hooks.site(saes[name])
    cache = cache_of(model, PROMPT)
    recon = hooks.reconstruction(sae, cache[where.read][0], where.write)
    assert recon.shape == hooks.flat(cache[where.write][0], where.write).shape
    manual = sae.decode(sae.encode(cache[where.read][0])).reshape(recon.shape)
    torch.testing.assert_close(recon, manual)


def test_residual_directions_match_what_a_hook_z_change_adds(model, saes):
    """A change at hook_z reaches the residual stream through W_O: check against hook_attn_out."""
    sae = saes["L1.attn_z"]
    vector = sae.W_dec[3].detach()
    tokens = model.to_tokens(PROMPT)
    _, clean = model.run_with_cache(tokens, names_filter=["blocks.1.hook_attn_out"])

    def add(act, hook):
        act = act.clone()
        act[:, 4] += hooks.unflat(model, vector, "blocks.1.attn.hook_z")
        return act

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", add)]):
        _, patched = model.run_with_cache(tokens, names_filter=["blocks.1.hook_attn_out"])
    change = (patched["blocks.1.hook_attn_out"] - clean["blocks.1.hook_attn_out"])[0, 4]
    torch.testing.assert_close(change, hooks.residual_directions(model, vector, "blocks.1.attn.hook_z"))


@pytest.mark.parametrize(
    ("write", "start", "at_input"),
    [
        ("blocks.1.hook_resid_pre", 1, True),
        ("blocks.1.attn.hook_z", 1, False),
        ("blocks.1.hook_resid_mid", 1, False),
        ("blocks.1.hook_mlp_out", 2, True),
        ("blocks.2.hook_resid_post", 3, True),
    ],
)
def test_where_a_patched_run_resumes(write, start, at_input):
    assert hooks.start_layer(write) == start
    assert hooks.writes_at_block_input(write) is at_input
    assert hooks.block_input(start) in (f"blocks.{start - 1}.hook_resid_post", "blocks.0.hook_resid_pre")


def test_reads_block_input():
    assert hooks.reads_block_input("blocks.2.hook_resid_pre") == 2
    assert hooks.reads_block_input("blocks.2.hook_resid_post") == 3
    assert hooks.reads_block_input("blocks.2.attn.hook_z") is None
