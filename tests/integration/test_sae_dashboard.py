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


def test_sae_dashboard_histograms_densities_and_intervals_match_the_dashboard(
    toy_model: HookedTransformer, toy_saes: dict[str, SAE]
) -> None:
    """The dashboard's figures against SAEDashboard's on the same SAE and windows.

    Equal: the number of non-zero activations (its histogram's total), every interval's share of tokens and
    the activations of its interval examples. Different by definition, and checked to be only that: its density
    divides by every position (BOS included), ours by text positions; its logit tables are `W_dec @ W_U`, ours
    go through the final LayerNorm (centred, times its weight) as the model does.
    """
    import torch
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

    from feature_lens_core import dashboard

    name, features = "L1.resid_pre", FEATURES[::4]
    sae = copy.deepcopy(toy_saes[name])
    corpus = dashboard.held_out_corpus(toy_model)
    acts = dashboard.corpus_activations(toy_model, sae, corpus)
    quantiles = 5
    layout = SaeVisLayoutConfig(
        columns=[
            Column(FeatureTablesConfig()),  # the runner needs every component
            Column(ActsHistogramConfig(), LogitsTableConfig(), LogitsHistogramConfig()),
            Column(SequencesConfig(buffer=None, top_acts_group_size=10, n_quantiles=quantiles, quantile_group_size=5)),
        ]
    )
    cfg = SaeVisConfig(
        hook_point=sae.cfg.metadata.hook_name,
        features=features,
        ignore_tokens={toy_model.tokenizer.bos_token_id},  # type: ignore[union-attr]
        feature_centric_layout=layout,
        minibatch_size_tokens=64,
        verbose=False,
    )
    with torch.no_grad():
        raw_logits = sae.W_dec @ toy_model.W_U  # before the runner turns the weights into inference tensors
    vis = SaeVisRunner(cfg).run(encoder=sae, model=toy_model, tokens=corpus.windows)  # type: ignore[arg-type]
    positions = corpus.windows.numel()
    for feature in features:
        theirs = vis.feature_data_dict[feature]
        ours = dashboard.feature_dashboard(toy_model, sae, acts, feature, name=name)
        assert sum(theirs.acts_histogram_data.bar_heights) == ours.n_active
        density = float(theirs.acts_histogram_data.title.split("= ")[1].rstrip("%"))
        assert density == pytest.approx(100 * ours.n_active / positions, abs=5e-4)  # it prints 3 decimals
        assert ours.density == pytest.approx(ours.n_active / corpus.n_text)
        top = {
            (seq.original_index, seq.qualifying_token_index) for seq in theirs.sequence_data.seq_group_data[0].seq_data
        }
        assert top == {(e.window, e.position) for e in ours.groups[0].examples}
        values = acts.of_feature(feature)[1]
        dense = acts.dense(feature)
        for group in theirs.sequence_data.seq_group_data[1:]:
            head, share = group.title.split("<br>")
            low, high = (float(x) for x in head.split()[1::2])
            inside = int(((values >= low) & (values <= high)).sum()) + (positions - len(values) if low == 0 else 0)
            # Shares of every position (silent ones, BOS and the separator in the lowest interval), printed to 3
            # decimals, with edges printed to 3 decimals: a token on an edge may move.
            assert float(share.split()[1].rstrip("%")) == pytest.approx(
                100 * inside / positions, abs=5e-4 + 100 * 2 / positions
            )
            for seq in group.seq_data:
                activation = seq.feat_acts[seq.qualifying_token_index - 1]
                if activation > 0:
                    assert activation == pytest.approx(
                        float(dense[seq.original_index, seq.qualifying_token_index]), abs=1e-4, rel=1e-4
                    )
        assert sum(theirs.logits_histogram_data.bar_heights) == sum(ours.logits.counts) == toy_model.cfg.d_vocab
        table = theirs.logits_table_data
        top = raw_logits[feature].topk(len(table.top_logits))
        assert table.top_logits == pytest.approx(top.values.tolist(), abs=1e-4, rel=1e-4)
        ours_top = [e.value for e in ours.promoted]
        centred = dashboard.feature_logits(toy_model, sae, feature).topk(len(ours_top)).values.tolist()
        assert ours_top == pytest.approx(centred)
        assert not torch.equal(raw_logits[feature], dashboard.feature_logits(toy_model, sae, feature))
