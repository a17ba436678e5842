"""Gemma Scope's JumpReLU SAEs and transcoders (`params.npz`), read offline from a synthesised cache by SAE-Lens.

SAE-Lens's `gemma_2` and `gemma_2_transcoder` loaders take the width from the repo (d_in 2304 for
gemma-2-2b) and the number of features from the folder name (width_16k: 16384), so the files have the real
shapes: about 300 MB each. TransformerLens hard-codes Gemma 2's config, so the model they run on is a
2-layer model of Gemma 2's architecture and width built here (see `gemma_shaped_model`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import try_to_load_from_cache
from transformer_lens import HookedTransformer

import feature_lens_core as flc
from feature_lens_core import catalog, hooks
from feature_lens_core.connectome import build_graph
from feature_lens_core.options import METHODS
from tests.fixtures.hub import GEMMA_SAES, point_at

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROMPT = "To be, or not to be."
RES, TRANSCODER = GEMMA_SAES


@pytest.fixture(scope="module")
def gemma_saes(gemma_files: Path) -> dict[str, object]:
    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        point_at(patch, gemma_files)
        loaded = {name: flc.load_sae("gemma-2-2b", name, device="cpu") for name in GEMMA_SAES}
    print(f"two Gemma Scope params.npz (2304 x 16384) from the cache: {time.perf_counter() - start:.2f} s")
    return loaded


def test_jumprelu_and_transcoder_load_with_their_real_layout(gemma_saes: dict, gemma_cache: Path) -> None:
    res, transcoder = gemma_saes[RES], gemma_saes[TRANSCODER]
    assert res.cfg.architecture() == "jumprelu" and (res.cfg.d_in, res.cfg.d_sae) == (2304, 16384)
    assert res.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    assert res.cfg.metadata.neuronpedia_id == "gemma-2-2b/0-gemmascope-res-16k"
    assert transcoder.cfg.architecture() == "jumprelu_transcoder"
    assert transcoder.cfg.metadata.hook_name == "blocks.1.ln2.hook_normalized"
    assert transcoder.cfg.metadata.hook_name_out == "blocks.1.hook_mlp_out"
    assert hooks.site(transcoder).kind == "transcoder" and hooks.site(res).kind == "residual"
    for name, sae in gemma_saes.items():
        entry = catalog.hub_sae(name)
        with np.load(try_to_load_from_cache(entry.repo_id, f"{entry.path}/params.npz")) as written:
            assert sorted(written.files) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]
            for key in written.files:
                assert torch.equal(getattr(sae, key).detach(), torch.from_numpy(written[key]))


def _target(model: HookedTransformer, saes: dict, name: str) -> flc.FeatureRef:
    acts = flc.activations(model, saes[name], PROMPT)
    last = int(acts.position.max())
    return flc.FeatureRef(name, int(acts[acts.position == last].iloc[0].feature), last)


@pytest.mark.parametrize("method", list(METHODS))
def test_rank_every_method_both_ways(gemma_shaped_model: HookedTransformer, gemma_saes: dict, method: str) -> None:
    up = flc.rank(gemma_shaped_model, gemma_saes, PROMPT, _target(gemma_shaped_model, gemma_saes, TRANSCODER),
                  direction="upstream", method=method, top_k=50)  # fmt: skip
    down = flc.rank(gemma_shaped_model, gemma_saes, PROMPT, _target(gemma_shaped_model, gemma_saes, RES),
                    direction="downstream", method=method, top_k=50)  # fmt: skip
    for frame, other in ((up, RES), (down, TRANSCODER)):
        assert len(frame) > 0 and frame.score.map(math.isfinite).all() and set(frame.sae) == {other}


def test_build_graph_on_gemma_scope(gemma_shaped_model: HookedTransformer, gemma_saes: dict) -> None:
    target = _target(gemma_shaped_model, gemma_saes, TRANSCODER)
    graph = build_graph(gemma_shaped_model, gemma_saes, PROMPT, target, method="attribution", hops=1, node_budget=10)
    assert len(graph.nodes) > 1 and len(graph.edges) > 0
    assert graph.faithfulness is not None and math.isfinite(graph.faithfulness.full)
