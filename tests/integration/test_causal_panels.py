"""`corpus_edges.causal_panels` (what the zoo stage and the Feature page's button both call): each feature's
panel equals `CorpusEdges.top` of the aggregate built directly; the shipped residual panels load; a set too
large for its sums is refused before any work; a text is cut into bounded prompts."""

from __future__ import annotations

import pytest
import torch

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


def test_a_set_too_large_is_refused_with_its_cost() -> None:
    sae = flc.load_sae("toy", "L1.mlp_out")
    saes = {f"copy{i}": sae for i in range(12)}  # 12,288 features: 2.25 GB of sums
    assert corpus_edges.cost(saes) == 16 * 12288**2
    with pytest.raises(flc.FeatureLensError, match=r"12,288 features.*2\.2 GB"):
        CorpusEdges.empty(saes, list(saes))


def test_a_text_is_cut_into_bounded_prompts() -> None:
    model = flc.load_model("toy")
    text = " ".join(flc.held_out_prompts(8, 32))
    prompts = text_prompts(model, text, n=3, length=16)
    assert len(prompts) == 3
    assert all(len(model.to_tokens(p, prepend_bos=False)[0]) <= 18 for p in prompts)  # decode/encode may merge
    with pytest.raises(flc.FeatureLensError, match="no tokens"):
        text_prompts(model, "   ", n=3, length=16)
