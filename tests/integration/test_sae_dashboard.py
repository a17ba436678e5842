"""SAEDashboard, run on the shipped SAEs and held-out windows, finds the same top examples as the shipped data.

SAEDashboard 0.8.0 pins TransformerLens 2 and numpy 1, which clash with this project's pins, so it
is not a dependency: this test runs where it is installed beside them (docs/model-zoo.md says how).
Its layout is aligned with the zoo's: no buffer around examples (the zoo takes any position) and
BOS ignored (the zoo leaves out BOS and the separator, the same token).
"""

from __future__ import annotations

import copy

import pytest
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core.zoo import paths
from feature_lens_core.zoo.model import consecutive_windows

pytest.importorskip(
    "sae_dashboard", reason="SAEDashboard is not installed (its pins clash with this project's; see docs/model-zoo.md)"
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = list(range(0, 1024, 32))


@pytest.mark.parametrize("name", ["L1.resid_pre", "L2.attn_z", "L1.transcoder"])
def test_sae_dashboard_top_examples_match_the_shipped_ones(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE], name: str
) -> None:
    from sae_dashboard.components_config import (
        ActsHistogramConfig,
        FeatureTablesConfig,
        LogitsHistogramConfig,
        LogitsTableConfig,
        SequencesConfig,
    )
    from sae_dashboard.layout import Column, SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    sae = copy.deepcopy(toy_saes[name])  # the runner folds decoder norms in place (a no-op on unit-norm decoders)
    data = load_file(str(paths.SAES_DIR / name / "feature_data.safetensors"))
    held_out = load_file(str(paths.HELD_OUT_TOKENS))["tokens"].long()
    bos = toy_model.tokenizer.bos_token_id  # type: ignore[union-attr]
    windows = consecutive_windows(held_out, toy_model.cfg.n_ctx, bos)
    k = data["top_index"].shape[1]
    layout = SaeVisLayoutConfig(
        columns=[
            Column(FeatureTablesConfig()),
            Column(ActsHistogramConfig(), LogitsTableConfig(), LogitsHistogramConfig()),
            Column(SequencesConfig(buffer=None, top_acts_group_size=k, n_quantiles=0)),
        ]
    )
    cfg = SaeVisConfig(
        hook_point=sae.cfg.metadata.hook_name,
        features=FEATURES,
        ignore_tokens={bos},
        feature_centric_layout=layout,
        minibatch_size_tokens=64,
        verbose=False,
    )
    vis = SaeVisRunner(cfg).run(encoder=sae, model=toy_model, tokens=windows)  # type: ignore[arg-type]

    shared, total = 0, 0
    for feature in FEATURES:
        # With no buffer a sequence's tokens and activations start at position 1 (the window after its BOS).
        theirs = {
            (seq.original_index, seq.qualifying_token_index): seq.feat_acts[seq.qualifying_token_index - 1]
            for seq in vis.feature_data_dict[feature].sequence_data.seq_group_data[0].seq_data
            if seq.feat_acts[seq.qualifying_token_index - 1] > 0
        }
        index, position = data["top_index"][feature], data["top_position"][feature]
        ours = {
            (int(i) // (toy_model.cfg.n_ctx - 1), int(p)): float(a)
            for i, p, a in zip(index, position, data["top_activation"][feature], strict=True)
            if i >= 0
        }
        shared += len(ours.keys() & theirs.keys())
        total += len(ours)
        for key in ours.keys() & theirs.keys():
            assert theirs[key] == pytest.approx(ours[key], abs=1e-4, rel=1e-4)  # SAEDashboard rounds to 4 places
    assert shared >= 0.99 * total, (shared, total)  # float ties could swap an example; measured: all agree
