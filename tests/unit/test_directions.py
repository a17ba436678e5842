"""Linear directions as features: a steering vector ranks exactly like a one-feature SAE built by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import save_file

from feature_lens_core.connectome import build_graph
from feature_lens_core.directions import direction_sae, load_direction, steering_vector
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.ranking import FeatureRef, activations, rank
from tests.helpers import PROMPT, TEXTS, brute_force, cache_of

pytestmark = pytest.mark.unit
HOOK = "blocks.1.hook_resid_pre"
METHODS = ("activation", "attribution", "direct", "integrated")
A, B = [TEXTS[0], TEXTS[2]], [TEXTS[3], TEXTS[4]]  # TEXTS[1] is longer than the tiny model's context


def by_hand(vector: torch.Tensor, hook: str, hook_z: bool = False) -> JumpReLUSAE:
    """A JumpReLU SAE with threshold 0 (so ReLU) whose one feature reads and writes vector / |vector|."""
    unit = vector / vector.norm()
    cfg = JumpReLUSAEConfig(
        d_in=len(unit),
        d_sae=1,
        dtype="float64",
        apply_b_dec_to_input=False,
        reshape_activations="hook_z" if hook_z else "none",
        metadata=SAEMetadata(hook_name=hook),
    )
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(unit[:, None])
        sae.W_dec.copy_(unit[None])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.zero_()
    return sae.eval()


@pytest.fixture(scope="module")
def vector(model) -> torch.Tensor:
    return steering_vector(model, HOOK, A, B)


def test_steering_vector_is_the_difference_of_mean_activations(model, vector):
    def mean(prompts):
        rows = [cache_of(model, p)[HOOK][0, 1:] for p in prompts]  # BOS left out
        return torch.cat(rows).mean(0)

    torch.testing.assert_close(vector, mean(A) - mean(B), rtol=1e-12, atol=1e-12)
    last = steering_vector(model, HOOK, A, B, positions="last")
    ends = [torch.stack([cache_of(model, p)[HOOK][0, -1] for p in ps]).mean(0) for ps in (A, B)]
    torch.testing.assert_close(last, ends[0] - ends[1], rtol=1e-12, atol=1e-12)


def test_a_direction_is_its_relu_projection(model, vector):
    sae = direction_sae(model, HOOK, vector, name="to be")
    x = cache_of(model, PROMPT)[HOOK][0]
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x)[:, 0], torch.relu(x @ vector / vector.norm()))
    assert sae.cfg.d_sae == 1 and sae.cfg.metadata.sae_id == "to be"


@pytest.mark.parametrize("method", METHODS)
def test_scores_equal_a_one_feature_sae_built_by_hand(model, saes, vector, method):
    acts = activations(model, direction_sae(model, HOOK, vector), PROMPT)
    position = int(acts.position.iloc[-1])
    others = {n: saes[n] for n in ("L0.attn_z", "L1.attn_z", "L2.resid_pre")}
    for direction in ("upstream", "downstream"):
        frames = [
            rank(
                model, others | {"dir": sae}, PROMPT, FeatureRef("dir", 0, position), direction=direction, method=method
            )
            for sae in (direction_sae(model, HOOK, vector), by_hand(vector, HOOK))
        ]
        assert len(frames[0]) > 0
        pd.testing.assert_frame_equal(frames[0], frames[1], rtol=1e-9, atol=1e-12)
    source = FeatureRef("L0.attn_z", int(activations(model, saes["L0.attn_z"], PROMPT).feature.iloc[-1]), position)
    as_target = [
        rank(model, others | {"dir": sae}, PROMPT, source, direction="downstream", method=method)
        for sae in (direction_sae(model, HOOK, vector), by_hand(vector, HOOK))
    ]
    pd.testing.assert_frame_equal(as_target[0], as_target[1], rtol=1e-9, atol=1e-12)
    assert "dir" in set(as_target[0].sae)


def test_as_a_target_activation_patching_is_the_brute_force_ablation(model, saes, vector):
    sae = direction_sae(model, HOOK, vector)
    acts = activations(model, sae, PROMPT)
    position = int(acts.position.iloc[-1])
    frame = rank(
        model,
        {"L0.attn_z": saes["L0.attn_z"], "dir": sae},
        PROMPT,
        FeatureRef("dir", 0, position),
        direction="upstream",
        method="activation",
    )
    for row in frame.head(6).itertuples():
        expected = brute_force(model, PROMPT, saes["L0.attn_z"], row.position, row.feature, sae, position, 0)
        assert row.score == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_an_attention_output_direction_works_everywhere(model, saes, strongest):
    hook = "blocks.1.attn.hook_z"
    vector = steering_vector(model, hook, A, B)
    assert vector.shape == (model.cfg.n_heads * model.cfg.d_head,)
    picked = {n: saes[n] for n in ("L0.resid_pre", "L2.resid_pre")}
    acts = activations(model, direction_sae(model, hook, vector), PROMPT)
    target = FeatureRef("dir", 0, int(acts.position.iloc[-1]))
    for method in METHODS:
        ours = rank(
            model,
            picked | {"dir": direction_sae(model, hook, vector)},
            PROMPT,
            target,
            direction="upstream",
            method=method,
        )
        hand = rank(
            model,
            picked | {"dir": by_hand(vector, hook, hook_z=True)},
            PROMPT,
            target,
            direction="upstream",
            method=method,
        )
        pd.testing.assert_frame_equal(ours, hand, rtol=1e-9, atol=1e-12)
    graph = build_graph(
        model,
        picked | {"dir": direction_sae(model, hook, vector)},
        PROMPT,
        target,
        direction="both",
        hops=1,
        node_budget=6,
    )
    assert graph.target == f"dir:0@{target.position}" and graph.faithfulness is not None


def test_load_direction_reads_npy_and_safetensors(tmp_path, vector):
    np.save(tmp_path / "v.npy", vector.numpy())
    torch.testing.assert_close(load_direction(tmp_path / "v.npy"), vector)
    torch.testing.assert_close(load_direction((tmp_path / "v.npy").read_bytes(), fmt="npy"), vector)
    save_file({"v": vector.contiguous()}, tmp_path / "one.safetensors")
    torch.testing.assert_close(load_direction(tmp_path / "one.safetensors"), vector)
    save_file({"a": vector.contiguous(), "b": -vector.contiguous()}, tmp_path / "two.safetensors")
    torch.testing.assert_close(load_direction(tmp_path / "two.safetensors", key="b"), -vector)
    with pytest.raises(FeatureLensError, match="name the one to use"):
        load_direction(tmp_path / "two.safetensors")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FeatureLensError, match="holds object values"):
        load_direction(tmp_path / "objects.npy")
    (tmp_path / "v.pt").write_bytes(b"x")
    with pytest.raises(FeatureLensError, match=r"\.npy or \.safetensors"):
        load_direction(tmp_path / "v.pt")
    with pytest.raises(FeatureLensError, match="does not exist"):
        load_direction(tmp_path / "missing.npy")


@pytest.mark.parametrize(
    ("hook", "values", "message"),
    [
        ("blocks.1.ln2.hook_normalized", None, "read and written"),
        ("blocks.7.hook_resid_pre", None, "read and written"),
        (HOOK, torch.zeros(32), "not all zeros"),
        (HOOK, torch.full((32,), float("nan")), "finite"),
        (HOOK, torch.ones(31), "size 32"),
        ("blocks.0.attn.hook_z", torch.ones(32, 2), "n_heads \\* d_head"),
    ],
)
def test_bad_directions_are_refused(model, hook, values, message):
    with pytest.raises(FeatureLensError, match=message):
        direction_sae(model, hook, torch.ones(32, dtype=torch.float64) if values is None else values)


def test_steering_vector_refuses_empty_sets(model):
    with pytest.raises(FeatureLensError, match="at least one prompt"):
        steering_vector(model, HOOK, [], B)
    with pytest.raises(FeatureLensError, match="same mean activation"):
        steering_vector(model, HOOK, B, B)
