"""Causes and effects computed on the Feature page for an SAE that ships none (a local SAE folder, weights only):
clicking the button shows the panel, and its entries equal `corpus_edges`' aggregate computed directly."""

from __future__ import annotations

import shutil

import pytest

import feature_lens_core as flc
from feature_lens_core.corpus_edges import CorpusEdges
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.causal_panels import N_PROMPTS, PROMPT_TOKENS

from .helpers import errors

pytestmark = [pytest.mark.app, pytest.mark.slow]

BUTTON = "Compute causes and effects over a text"


def test_button_computes_the_panel_of_an_sae_without_shipped_ones(open_app, tmp_path) -> None:
    folder = tmp_path / "my_mlp_out"
    folder.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors"):  # no causal_panels.safetensors, no dashboard data
        shutil.copy(paths.SAES_DIR / "L1.mlp_out" / name, folder / name)
    names = ("L0.mlp_out", str(folder))
    model = flc.load_model("toy")
    saes = {name: flc.load_sae("toy", name) for name in names}
    edges = CorpusEdges.empty(saes, list(names))
    prompts = flc.held_out_prompts(N_PROMPTS, PROMPT_TOKENS)
    graphs = [flc.adjacency(model, saes, prompt) for prompt in prompts]
    for graph in graphs:
        edges.add(graph)
    top = edges.top(str(folder))
    # The page opens on the first prompt at a position where the feature is active (its on-prompt sections need
    # that): of the folder's features active there, the most frequent one over the prompts.
    nodes = graphs[0].nodes.iloc[: graphs[0].n_features]
    here = nodes.loc[(nodes["sae"] == str(folder)) & (nodes["position"] > 0)]
    row = here.iloc[int(top["occurrences"][here["feature"].to_numpy()].argmax())]
    feature, position = int(row["feature"]), int(row["position"])
    expected = [
        f"L0.mlp_out #{int(f)} "
        for s, f in zip(top["upstream_sae"][feature], top["upstream_feature"][feature], strict=True)
        if s >= 0
    ]
    assert expected

    at = open_app(
        "feature",
        model="toy",
        sae=str(folder),
        saes=",".join(names),
        feature=str(feature),
        prompt=prompts[0],
        pos=str(position),
    )
    assert not errors(at), errors(at)
    assert "ships none" in " ".join(c.value for c in at.caption)
    assert not [link for link in at.get("page_link") if "· mean" in link.proto.label]
    next(b for b in at.button if b.label == BUTTON).click().run(timeout=900)
    assert not errors(at), errors(at)
    shown = [link.proto.label for link in at.get("page_link") if "· mean" in link.proto.label]
    causes = [label for label in shown if label.startswith("L0.mlp_out")]
    assert len(causes) == len(expected)
    for label, start, score, frequency in zip(
        causes, expected, top["upstream_score"][feature], top["upstream_frequency"][feature], strict=False
    ):
        assert label.startswith(start), (label, start)
        assert label.endswith(f"· mean {float(score):+.3f} · in {float(frequency):.0%}"), label
    assert f"({int(top['occurrences'][feature])} tokens)" in " ".join(c.value for c in at.caption)


def test_an_unreachable_ray_cluster_is_one_error_and_the_page_stays(open_app, tmp_path, monkeypatch) -> None:
    """With `FEATURE_LENS_RAY_ADDRESS` set, the prompts go to that cluster; when nothing answers there, the
    click says so once, and the page (its other sections, the button) is still drawn."""
    folder = tmp_path / "my_mlp_out"
    folder.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(paths.SAES_DIR / "L1.mlp_out" / name, folder / name)
    monkeypatch.setenv("FEATURE_LENS_RAY_ADDRESS", "127.0.0.1:1")
    at = open_app("feature", model="toy", sae=str(folder), saes=f"L0.mlp_out,{folder}", feature="70")
    assert not errors(at), errors(at)
    assert "run on the Ray cluster `127.0.0.1:1`" in " ".join(c.value for c in at.caption)
    next(b for b in at.button if b.label == BUTTON).click().run(timeout=120)
    assert len(errors(at)) == 1, errors(at)
    # errors(at) holds the message as markdown source, so ':' and backticks come escaped.
    assert "No Ray cluster answers at" in errors(at)[0] and "127.0.0.1" in errors(at)[0], errors(at)
    assert not at.exception
    assert any(b.label == BUTTON for b in at.button)
