"""QK attribution: the query-term x key-term products rebuild the model's own pre-softmax score, and removing one
term from one side's residual stream (ln1's scale held, the model's own forward pass) lowers the score by
exactly that term's marginal, the score being bilinear."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.qk import check_attention, qk_attribution
from tests.helpers import PROMPT, cache_of

pytestmark = pytest.mark.unit
SETS = [
    ["L2.resid_pre"],  # one residual SAE stands for the whole stream
    ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.mlp_out"],  # every block split by an SAE
    ["L1.resid_mid_missing_so_none"],  # no usable SAE: the embeddings and whole block outputs
    ["L1.resid_pre", "L1.transcoder"],  # a residual SAE, then L1's attention whole and its MLP by a transcoder
]


def _chosen(saes, names):
    chosen = {n: saes[n] for n in names if n in saes}
    return chosen or {"L2.attn_z": saes["L2.attn_z"]}  # an SAE reading after the layer: unused


def score_without(model, prompt, layer, head, q, s, position, vector) -> float:
    """The model's own pre-softmax score with `vector` taken out of the residual stream entering `layer` at
    `position`, ln1's scale held at its clean value: one forward pass with plain TransformerLens hooks."""
    clean = cache_of(model, prompt)
    seen = {}

    def remove(act, hook):
        act = act.clone()
        act[:, position] -= vector
        return act

    hooks = [
        (f"blocks.{layer}.hook_resid_pre", remove),
        (f"blocks.{layer}.ln1.hook_scale", lambda act, hook: clean[hook.name]),
        (f"blocks.{layer}.attn.hook_attn_scores", lambda act, hook: seen.setdefault("x", act)),
    ]
    with torch.no_grad():
        model.run_with_hooks(model.to_tokens(prompt), return_type=None, fwd_hooks=hooks)
    return float(seen["x"][0, head, q, s])


def feature_vector(model, sae, cache, position: int, feature: int) -> torch.Tensor:
    """What feature `feature` of `sae` adds to the residual stream at `position` (through W_O for hook_z)."""
    read = cache[sae.cfg.metadata.hook_name][0, position]
    written = sae.encode(read)[feature] * sae.W_dec[feature]
    if sae.cfg.metadata.hook_name.endswith("hook_z"):
        layer = int(sae.cfg.metadata.hook_name.split(".")[1])
        written = torch.einsum("hd,hdm->m", written.reshape(model.cfg.n_heads, -1), model.blocks[layer].attn.W_O)
    return written.detach()


@pytest.mark.parametrize("names", SETS)
@pytest.mark.parametrize(("layer", "head", "q", "s"), [(2, 1, 10, 4), (1, 3, 12, 12), (2, 0, 7, 0)])
def test_terms_rebuild_the_pre_softmax_score(model, saes, names, layer, head, q, s):
    result = qk_attribution(
        model, _chosen(saes, names), PROMPT, layer=layer, head=head, query_position=q, key_position=s, top_pairs=None
    )
    expected = float(cache_of(model, PROMPT)[f"blocks.{layer}.attn.hook_attn_scores"][0, head, q, s])
    assert result.score == pytest.approx(expected, rel=1e-12)
    for total in (result.queries.score.sum(), result.keys.score.sum(), result.pairs.score.sum()):
        assert total == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert len(result.pairs) == len(result.queries) * len(result.keys)
    assert result.pairs.score.abs().is_monotonic_decreasing
    assert (result.queries.kind == "qk bias").sum() == 1


@pytest.mark.parametrize("side", ["key", "query"])
def test_removing_a_feature_lowers_the_score_by_its_marginal(model, saes, side):
    layer, head, q, s = 2, 1, 10, 4
    names = ["L0.resid_pre", "L0.attn_z", "L0.transcoder", "L1.attn_z", "L1.mlp_out"]
    result = qk_attribution(
        model, _chosen(saes, names), PROMPT, layer=layer, head=head, query_position=q, key_position=s
    )
    terms = result.keys if side == "key" else result.queries
    position = s if side == "key" else q
    cache = cache_of(model, PROMPT)
    features = terms[terms.kind == "feature"]
    checked = 0
    for row in features.groupby("sae").head(1).itertuples():
        vector = feature_vector(model, saes[row.sae], cache, position, row.feature)
        change = result.score - score_without(model, PROMPT, layer, head, q, s, position, vector)
        assert change == pytest.approx(row.score, rel=1e-6, abs=1e-10)
        checked += 1
    assert checked == len(names)


def test_every_term_of_a_side_is_what_removing_it_takes_away(model, saes):
    """Error, bias and whole-block terms too: each is a vector in the stream, and the score is linear in it."""
    layer, head, q, s = 2, 2, 11, 5
    names = ["L1.resid_pre", "L1.transcoder"]
    result = qk_attribution(
        model, _chosen(saes, names), PROMPT, layer=layer, head=head, query_position=q, key_position=s
    )
    cache = cache_of(model, PROMPT)
    error_row = result.keys[(result.keys.sae == "L1.resid_pre") & (result.keys.kind == "error")].iloc[0]
    sae = saes["L1.resid_pre"]
    read = cache["blocks.1.hook_resid_pre"][0, s]
    error = (read - sae.decode(sae.encode(read))).detach()
    change = result.score - score_without(model, PROMPT, layer, head, q, s, s, error)
    assert change == pytest.approx(float(error_row.score), rel=1e-6)
    attention = result.keys[result.keys.kind == "attention"].iloc[0]  # L1's attention output, whole
    change = result.score - score_without(model, PROMPT, layer, head, q, s, s, cache["blocks.1.hook_attn_out"][0, s])
    assert change == pytest.approx(float(attention.score), rel=1e-6)


def test_qk_attribution_refuses_bad_requests(model, saes):
    chosen = {"L1.resid_pre": saes["L1.resid_pre"]}
    with pytest.raises(FeatureLensError, match="after query position"):
        qk_attribution(model, chosen, PROMPT, layer=2, head=0, query_position=3, key_position=5)
    with pytest.raises(FeatureLensError, match="Layer 7 is out of range"):
        qk_attribution(model, chosen, PROMPT, layer=7, head=0, query_position=3, key_position=1)
    with pytest.raises(FeatureLensError, match="Head 9 is out of range"):
        qk_attribution(model, chosen, PROMPT, layer=1, head=9, query_position=3, key_position=1)
    with pytest.raises(FeatureLensError, match="Position 99 is out of range"):
        qk_attribution(model, chosen, PROMPT, layer=1, head=0, query_position=99, key_position=1)


def test_rotary_attention_is_refused_with_a_reason():
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=10, act_fn="gelu",
        positional_embedding_type="rotary", rotary_dim=8, dtype=torch.float64,
    )  # fmt: skip
    with pytest.raises(FeatureLensError, match="rotary positional embeddings"):
        check_attention(HookedTransformer(cfg))


QK = [
    "qk",
    "--model",
    "tiny",
    "--prompt",
    PROMPT,
    "--layer",
    "2",
    "--head",
    "1",
    "--saes",
    "L1.resid_pre,L1.transcoder",
]


@pytest.mark.parametrize("show", ["pairs", "query", "key"])
def test_the_qk_command_prints_the_tables(tiny_cli, capsys, model, saes, show):
    import json

    args = [*QK, "--query-pos", "10", "--key-pos", "4", "--show", show, "--top-k", "5", "--format", "json"]
    assert tiny_cli(args) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    chosen = {n: saes[n] for n in ["L1.resid_pre", "L1.transcoder"]}
    result = qk_attribution(model, chosen, PROMPT, layer=2, head=1, query_position=10, key_position=4)
    table = {"pairs": result.pairs, "query": result.queries, "key": result.keys}[show]
    assert [row["score"] for row in rows] == pytest.approx(
        table.score.head(5).tolist(), rel=1e-8
    )  # JSON keeps 10 digits
    assert "pre-softmax score" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--query-pos", "3", "--key-pos", "5"], "after query position"),
        (["--query-pos", "3", "--key-pos", "x"], "invalid int value"),
        (["--query-pos", "3"], "required"),
    ],
)
def test_the_qk_command_refuses_bad_input_in_one_line(tiny_cli, capsys, extra, message):
    assert tiny_cli([*QK, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
