"""`corpus_edges.causal_panels` (what the zoo stage and the Feature page's button both call): each feature's
panel equals `CorpusEdges.top` of the aggregate built directly; the shipped residual panels load; a set of
more than 11,600 features gives panels (the sums are sparse) and sums over their bound are refused; a text is cut
into bounded prompts."""

from __future__ import annotations

import copy

import pytest
import torch
from sae_lens import SAE

import feature_lens_core as flc
from feature_lens_core import corpus_edges, feature_data
from feature_lens_core.corpus_edges import CorpusEdges, causal_panels, text_prompts

RESIDUAL = ("L0.resid_pre", "L1.resid_pre", "L2.resid_pre", "L2.resid_post")


def test_panels_equal_the_aggregate_computed_directly() -> None:
    model = flc.load_model("toy")
    names = ("L1.resid_pre", "L1.attn_z", "L2.mlp_out")  # no shipped set: a mixed one
    saes = {name: flc.load_sae("toy", name) for name in names}
    prompts = flc.held_out_prompts(2, 12)
    steps: list[tuple[int, int]] = []
    panels = causal_panels(model, saes, prompts, progress=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 2), (2, 2)]
    edges = CorpusEdges.empty(saes, list(panels.saes))
    for prompt in prompts:
        edges.add(flc.adjacency(model, saes, prompt))
    compared = 0
    for name in names:
        top = edges.top(name, k=corpus_edges.K)
        for key, value in top.items():
            assert torch.equal(panels.top[name][key], value), (name, key)
        for feature in top["occurrences"].nonzero().flatten().tolist()[:20]:
            panel = panels.panel(name, feature)
            assert panel.occurrences == int(top["occurrences"][feature]) and panel.n_prompts == 2
            ups = [(e.sae, e.feature) for e in panel.upstream]
            assert ups == [
                (panels.saes[int(s)], int(f))
                for s, f in zip(top["upstream_sae"][feature], top["upstream_feature"][feature], strict=True)
                if s >= 0
            ]
            compared += len(ups)
    assert compared > 0


def test_residual_saes_ship_panels() -> None:
    for name in RESIDUAL:
        sae = flc.load_sae("toy", name)
        active = [f for f in range(sae.cfg.d_sae) if (p := feature_data.causal_panel(sae, f)) and p.occurrences]
        assert active, name
        panel = feature_data.causal_panel(sae, active[0])
        assert panel is not None and panel.saes == RESIDUAL and panel.n_prompts == 12
        if name != "L0.resid_pre":
            assert any(feature_data.causal_panel(sae, f).upstream for f in active)  # type: ignore[union-attr]


def _widened(sae: SAE, d_sae: int) -> SAE:
    """`sae` with `d_sae - sae.cfg.d_sae` more features that never fire (zero encoder, negative bias) and write
    random unit directions: a wide SAE whose active features are `sae`'s."""
    wide = copy.deepcopy(sae)
    extra = d_sae - sae.cfg.d_sae
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(extra, sae.W_dec.shape[1], generator=generator)
    weights = sae.state_dict()
    with torch.no_grad():
        wide.W_enc = torch.nn.Parameter(torch.cat([weights["W_enc"], torch.zeros(len(weights["W_enc"]), extra)], dim=1))
        wide.b_enc = torch.nn.Parameter(torch.cat([weights["b_enc"], -torch.ones(extra)]))
        wide.W_dec = torch.nn.Parameter(
            torch.cat([weights["W_dec"], directions / directions.norm(dim=1, keepdim=True)])
        )
    wide.cfg.d_sae = d_sae
    wide.cfg.metadata.local_folder = None  # the shipped folder's labels and data are the narrow SAE's
    return wide


def test_a_set_of_more_than_11600_features_gives_panels() -> None:
    # The dense sums refused any set over 11,585 features (2 GB); the sparse ones grow with the edges seen.
    model = flc.load_model("toy")
    narrow = {name: flc.load_sae("toy", name) for name in ("L0.mlp_out", "L1.mlp_out")}
    wide = {"L0.mlp_out": narrow["L0.mlp_out"], "wide": _widened(narrow["L1.mlp_out"], 12288)}
    prompts = flc.held_out_prompts(2, 12)
    panels = causal_panels(model, wide, prompts)
    assert sum(int(sae.cfg.d_sae) for sae in wide.values()) == 13312
    assert panels.top["wide"]["upstream_sae"].shape == (12288, corpus_edges.K)
    assert int(panels.top["wide"]["occurrences"][1024:].sum()) == 0  # the added features never fire
    # Its active features are L1.mlp_out's, at the same global indices: the same panels, to float32 precision.
    expected = causal_panels(model, narrow, prompts)
    for name, other in (("L0.mlp_out", "L0.mlp_out"), ("wide", "L1.mlp_out")):
        for key, value in expected.top[other].items():
            got = panels.top[name][key][:1024]
            if value.is_floating_point():
                torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-6)
            else:
                assert torch.equal(got, value), (name, key)
    assert panels.panel("wide", int(panels.top["wide"]["occurrences"].argmax())).upstream


def test_sums_over_their_bound_are_refused_with_their_size(monkeypatch) -> None:
    model = flc.load_model("toy")
    saes = {name: flc.load_sae("toy", name) for name in ("L0.mlp_out", "L1.mlp_out")}
    edges = CorpusEdges.empty(saes, list(saes))
    graph = flc.adjacency(model, saes, flc.held_out_prompts(1, 12)[0])
    monkeypatch.setattr(corpus_edges, "MAX_EDGE_BYTES", 1000)  # a bound any prompt's edges exceed
    with pytest.raises(
        flc.FeatureLensError, match=r"met [\d,]+ pairs of features: .* MB \(at most 0 MB\)\. Use fewer or shorter"
    ):
        edges.add(graph)


def test_a_text_is_cut_into_bounded_prompts() -> None:
    model = flc.load_model("toy")
    text = " ".join(flc.held_out_prompts(8, 32))
    prompts = text_prompts(model, text, n=3, length=16)
    assert len(prompts) == 3
    assert all(len(model.to_tokens(p, prepend_bos=False)[0]) <= 18 for p in prompts)  # decode/encode may merge
    with pytest.raises(flc.FeatureLensError, match="no tokens"):
        text_prompts(model, "   ", n=3, length=16)
