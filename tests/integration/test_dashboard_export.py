"""Dashboard export: feature-lens's JSON layout holds what the dashboards show, Neuronpedia's layout has exactly
SAEDashboard's fields (and loads into its `NeuronpediaDashboardBatch` when SAEDashboard is installed beside)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import feature_lens_core as flc
from feature_lens_core import dashboard
from feature_lens_core.cli import main
from feature_lens_core.dashboard_export import export_dashboards
from feature_lens_core.feature_data import causal_panel

TEXT = "O Romeo, Romeo, wherefore art thou Romeo? Art thou not, fatal vision, sensible to feeling as to sight?\n" * 8
FEATURES = [924, 78, 3]
SD_PYTHON = Path("/tmp/sdvenv/bin/python")
# NeuronpediaDashboardFeature.to_dict() and NeuronpediaDashboardActivation.to_dict() in SAEDashboard 0.8.0.
NEURONPEDIA_FEATURE = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
    "correlated_features_l1", "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist",
    "activations", "vector",
}  # fmt: skip
NEURONPEDIA_ACTIVATION = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}


@pytest.fixture(scope="module")
def toy():
    return flc.load_model("toy"), flc.load_sae("toy", "L1.mlp_out")


def test_the_feature_lens_layout_holds_each_dashboard(toy, tmp_path) -> None:
    model, sae = toy
    out = tmp_path / "dash.json"
    data = export_dashboards(model, sae, name="L1.mlp_out", out=out, text=TEXT, features=FEATURES)
    assert json.loads(out.read_text(encoding="utf-8")) == data
    assert (data["format"], data["version"], data["sae"], data["d_sae"]) == (
        "feature-lens-dashboards",
        1,
        "L1.mlp_out",
        1024,
    )
    acts = dashboard.corpus_activations(model, sae, dashboard.text_corpus(model, TEXT))
    assert data["n_text_tokens"] == acts.corpus.n_text
    for record in data["features"]:
        board = dashboard.feature_dashboard(model, sae, acts, record["feature"], name="L1.mlp_out")
        assert record["n_active"] == board.n_active == sum(record["activation_histogram"]["counts"])
        assert record["density"] == board.density and record["label"] == board.label
        assert sum(record["logit_histogram"]["counts"]) == model.cfg.d_vocab
        assert [e["token"] for e in record["promoted"]] == [e.token for e in board.promoted]
        assert [g["title"] for g in record["example_groups"]] == [g.title for g in board.groups]
        for group in record["example_groups"]:
            for example in group["examples"]:
                assert len(example["tokens"]) == len(example["activations"])
                assert group["low"] - 1e-4 <= example["activations"][example["peak"]] <= group["high"] + 1e-4
        panel = causal_panel(sae, record["feature"])
        assert panel is not None
        assert [(e["sae"], e["feature"]) for e in record["causal_panel"]["upstream"]] == [
            (e.sae, e.feature) for e in panel.upstream
        ]
    assert data["features"][0]["n_active"] > 0  # the worked example's feature fires on its own line


def test_the_neuronpedia_layout_has_sae_dashboards_fields(toy, tmp_path) -> None:
    model, sae = toy
    out = tmp_path / "np.json"
    data = export_dashboards(model, sae, name="L1.mlp_out", out=out, layout="neuronpedia", text=TEXT, features=[924])
    assert (data["model_id"], data["layer"], data["sae_set"]) == ("shakespeare-3l", 1, "mlp_out")
    (feature,) = data["features"]
    assert set(feature) == NEURONPEDIA_FEATURE
    assert feature["activations"] and all(set(a) == NEURONPEDIA_ACTIVATION for a in feature["activations"])
    top = [a for a in feature["activations"] if a["bin_min"] == -1]
    assert top and top[0]["values"][top[0]["qualifying_token_index"]] == top[0]["bin_max"]
    assert sum(feature["freq_hist_data_bar_heights"]) > 0 and len(feature["logits_hist_data_bar_values"]) == 40
    if not SD_PYTHON.exists():
        pytest.skip("SAEDashboard is not installed beside the project (docs/model-zoo.md says how)")
    script = (
        "import json, sys; from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch; "
        "d = json.load(open(sys.argv[1])); b = NeuronpediaDashboardBatch(**d); "
        "assert b.to_dict() == d, 'round trip differs'; print(len(b.features))"
    )
    done = subprocess.run([str(SD_PYTHON), "-c", script, str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr[-2000:]


def test_the_cli_refuses_a_bad_request_in_one_line(tmp_path, capsys) -> None:
    assert (
        main(["dashboard-export", "--model", "toy", "--sae", "L1.mlp_out", "--out", str(tmp_path / "x" / "d.json")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["dashboard-export", "--model", "toy", "--sae", "L1.mlp_out", "--out", "d.json", "--features", "a"]) == 2
    )
    assert "--features" in capsys.readouterr().err
