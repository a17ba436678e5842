"""The command line: `python -m feature_lens_core saes|activations|rank|graph|batch|qk|dashboard-export ...`.

Results go to stdout as JSON (a list of row objects), CSV or a plain table. Any bad input exits
with status 2 and one line on stderr saying what to change; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sae_lens import SAE
from tqdm import tqdm
from transformer_lens import HookedTransformer

from feature_lens_core import batch, connectome, hooks, loading, qk
from feature_lens_core.attribution_graph import attribution_graph
from feature_lens_core.dashboard_export import LAYOUTS, export_dashboards
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.files import write_atomically
from feature_lens_core.options import BASELINES, DIRECTIONS, GRAPH_DIRECTIONS, METHODS
from feature_lens_core.ranking import activations, rank
from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef, Target

FORMATS = ("json", "csv", "table")
GRAPH_FORMATS = ("json", "table", "circuit-tracer")  # a graph is two tables, or circuit-tracer's graph file
QK_TABLES = ("pairs", "query", "key")  # query-term x key-term products, or one side's terms
SAE_COLUMNS = ["name", "hook", "hook_out", "layer", "kind", "d_sae"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are `FeatureLensError`s (one line, status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FeatureLensError(f"{message} (run with --help for usage)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _feature(text: str) -> FeatureRef:
    try:
        return FeatureRef.parse(text)
    except FeatureLensError:
        raise argparse.ArgumentTypeError(
            f"expected NAME:FEATURE@POSITION such as L2.resid_pre:12@5, got {text!r}"
        ) from None


def parser() -> argparse.ArgumentParser:
    """The `feature_lens_core` argument parser with its three commands."""
    main = _Parser(prog="python -m feature_lens_core", description="Rank SAE features that cause each other.")
    commands = main.add_subparsers(
        dest="command", required=True, metavar="{saes,activations,rank,graph,batch,qk,dashboard-export}"
    )

    def command(name: str, help: str, formats: tuple[str, ...] = FORMATS) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--model", required=True, help="'toy' (built-in) or a TransformerLens model name")
        sub.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
        return sub

    command("saes", "List the model's SAEs: name, hook, hook_out, layer, kind, d_sae.")
    acts = command("activations", "Which features of one SAE fire where on a prompt.")
    acts.add_argument("--sae", required=True, help="SAE name (see the saes command)")
    acts.add_argument("--prompt", required=True)
    acts.add_argument("--top-k", type=_positive, help="keep the N strongest features at each position")

    ranked = command("rank", "Rank the features upstream or downstream of one feature, or upstream of a logit.")
    ranked.add_argument("--prompt", required=True)
    _target_arguments(ranked)
    ranked.add_argument("--saes", required=True, help="comma-separated SAE names to rank (NAME[,NAME...])")
    ranked.add_argument("--direction", required=True, choices=DIRECTIONS)
    ranked.add_argument("--method", required=True, choices=METHODS)
    ranked.add_argument("--baseline", choices=BASELINES, default="zero")
    ranked.add_argument("--corrupt-prompt", help="same token length as --prompt (for --baseline corrupt)")
    ranked.add_argument(
        "--candidates", type=_positive, help="activation patching: patch only the K best by attribution"
    )
    ranked.add_argument("--top-k", type=_positive, help="keep the N highest-ranked rows")

    graph = command(
        "graph",
        "Build the graph around one feature or logit, hop by hop, with its faithfulness; `--format circuit-tracer` "
        "writes circuit-tracer's graph-file JSON (its frontend and Neuronpedia's graph viewer read it).",
        GRAPH_FORMATS,
    )
    graph.add_argument("--prompt", required=True)
    _target_arguments(graph, prediction=True)
    graph.add_argument("--saes", required=True, help="comma-separated SAE names to expand through (NAME[,NAME...])")
    graph.add_argument("--direction", choices=GRAPH_DIRECTIONS, default="upstream")
    graph.add_argument("--method", choices=METHODS, default="attribution")
    graph.add_argument("--hops", type=_positive, default=2, help="expansion steps (default 2)")
    graph.add_argument("--node-budget", type=_positive, default=30, help="most nodes besides the target (default 30)")
    graph.add_argument("--threshold", type=_non_negative, help="keep only edges with |score| at least this")
    graph.add_argument("--baseline", choices=BASELINES, default="zero")
    graph.add_argument("--corrupt-prompt", help="same token length as --prompt (for --baseline corrupt)")
    graph.add_argument(
        "--node-threshold", type=float, default=0.8, help="with --prediction: share of influence nodes keep (0.8)"
    )
    graph.add_argument(
        "--edge-threshold", type=float, default=0.98, help="with --prediction: share of influence edges keep (0.98)"
    )

    many = command("batch", "Rank one feature's connections on many prompts, aggregated per edge, into Parquet.")
    prompts = many.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompts", help="UTF-8 text file, one prompt per line")
    prompts.add_argument("--held-out", type=_positive, metavar="N", help="N prompts from the built-in held-out plays")
    many.add_argument("--length", type=_positive, default=32, help="tokens per --held-out prompt (default 32)")
    many.add_argument("--feature", required=True, type=_sae_feature, help="NAME:FEATURE, or NAME for all its features")
    many.add_argument("--at", choices=batch.AT, default="last", help="the last token, or wherever it is active")
    many.add_argument("--max-per-prompt", type=_positive, help="rank at most the N strongest occurrences per prompt")
    many.add_argument("--saes", required=True, help="comma-separated SAE names to rank (NAME[,NAME...])")
    many.add_argument("--direction", required=True, choices=DIRECTIONS)
    many.add_argument("--method", required=True, choices=METHODS)
    many.add_argument("--baseline", choices=[b for b in BASELINES if b != "corrupt"], default="zero")
    many.add_argument("--top-k", type=_positive, help="an edge is present where it is among the top K nodes")
    many.add_argument("--out", required=True, help="Parquet file for the aggregated edges")
    many.add_argument("--per-prompt", help="Parquet file for the per-prompt edge rows too")
    many.add_argument("--executor", choices=("serial", "ray"), default="serial", help="where the prompts run")
    many.add_argument("--ray-address", help="ray.init address: 'auto' joins this machine's cluster (--executor ray)")
    many.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: the prompts it finished (kept in OUT.parts/) are not run again",
    )

    scores = command(
        "qk", "Why one head attends from a query position to a key position: its pre-softmax score in features."
    )
    scores.add_argument("--prompt", required=True)
    scores.add_argument("--layer", required=True, type=int, help="the attention layer")
    scores.add_argument("--head", required=True, type=int)
    scores.add_argument("--query-pos", required=True, type=int, help="the position that attends (0 is BOS)")
    scores.add_argument("--key-pos", required=True, type=int, help="the position attended to (at most --query-pos)")
    scores.add_argument("--saes", required=True, help="comma-separated SAE names to write the residual streams in")
    scores.add_argument("--show", choices=QK_TABLES, default="pairs", help="which table (default: pairs)")
    scores.add_argument("--top-k", type=_positive, default=20, help="keep the N largest rows (default 20)")

    export_help = "Write every feature's dashboard of one SAE to a JSON file (layouts: docs/dashboards.md)."
    export = commands.add_parser("dashboard-export", help=export_help, description=export_help)
    export.add_argument("--model", required=True, help="'toy' (built-in) or a TransformerLens model name")
    export.add_argument("--sae", required=True, help="SAE name (see the saes command)")
    export.add_argument("--out", required=True, help="the JSON file to write")
    export.add_argument(
        "--layout", choices=LAYOUTS, default="feature-lens", help="feature-lens's own, or Neuronpedia's feature data"
    )
    export.add_argument("--text", help="UTF-8 text file to read (default: the built-in held-out plays)")
    export.add_argument("--features", help="comma-separated feature numbers (default: all)")
    return main


def _target_arguments(command: argparse.ArgumentParser, *, prediction: bool = False) -> None:
    """--feature, or --logit TOKEN [--logit-other TOKEN] --position P (or, with `prediction`, --prediction)."""
    which = command.add_mutually_exclusive_group(required=True)
    which.add_argument("--feature", type=_feature, help="NAME:FEATURE@POSITION (position 0 is BOS)")
    if prediction:
        which.add_argument(
            "--prediction",
            action="store_true",
            help="the whole prompt's attribution graph of the next-token prediction (circuit-tracer's graph), "
            "pruned by influence",
        )
    which.add_argument("--logit", metavar="TOKEN", help="the next-token logit of TOKEN (one token; mind its space)")
    command.add_argument("--logit-other", metavar="TOKEN", help="with --logit: rank logit(TOKEN) - logit(OTHER)")
    command.add_argument("--position", type=int, help="with --logit: the position whose next token it predicts")


def _target(args: argparse.Namespace) -> Target:
    """The target the flags name (argparse has checked that exactly one of --feature and --logit is given)."""
    if args.feature is not None:
        if args.logit_other is not None or args.position is not None:
            raise FeatureLensError("--logit-other and --position go with --logit; --feature has its own position.")
        return args.feature
    if args.position is None:
        raise FeatureLensError("--logit needs --position P: the position whose next token the logit predicts.")
    if args.logit_other is not None:
        return LogitDiffRef(args.logit, args.logit_other, args.position)
    return LogitRef(args.logit, args.position)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def _sae_feature(text: str) -> tuple[str, int | None]:
    """NAME:FEATURE, or NAME alone (every feature of the SAE)."""
    name, colon, feature = text.rpartition(":")
    if colon and feature.lstrip("-").isdigit():
        return name, int(feature)
    return text, None


def _printable(value: object) -> object:
    """A table cell for the terminal: control and format characters of a prompt's tokens (escape sequences,
    bidi overrides) are written as escapes, so the prompt cannot restyle or reorder what the terminal shows."""
    if not isinstance(value, str):
        return value
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in value)


def _write(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(str(frame.to_json(orient="records", force_ascii=False)) + "\n")
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        sys.stdout.write(frame.map(_printable).to_string(index=False) + "\n")


def _saes_table(model_name: str) -> pd.DataFrame:
    names = loading.list_saes(model_name)
    if not names:
        raise FeatureLensError(
            f"No SAEs are known for model '{model_name}'. Use 'toy' (built-in) or a model SAE-Lens has "
            "releases for, such as 'gpt2-small'."
        )
    rows = []
    for name in names:
        sae = loading.load_sae(model_name, name)
        where = hooks.site(sae)
        rows.append([name, where.read, where.write, where.layer, where.kind, sae.cfg.d_sae])
    return pd.DataFrame(rows, columns=SAE_COLUMNS)


def _run(args: argparse.Namespace) -> None:
    if args.command == "saes":
        _write(_saes_table(args.model), args.format)
        return
    model = loading.load_model(args.model)
    if args.command == "activations":
        frame = activations(model, loading.load_sae(args.model, args.sae), args.prompt)
        if args.top_k:
            frame = frame.groupby("position", sort=False).head(args.top_k).reset_index(drop=True)
        _write(frame, args.format)
        return
    if args.command == "graph":
        _graph(model, args)
        return
    if args.command == "batch":
        _batch(model, args)
        return
    if args.command == "dashboard-export":
        _dashboard_export(model, args)
        return
    if args.command == "qk":
        _qk(model, args)
        return
    frame = rank(
        *_request(model, args), direction=args.direction, **_shared(args), candidates=args.candidates, top_k=args.top_k
    )
    _write(frame, args.format)
    if frame.attrs.get("note"):
        sys.stderr.write(f"note: {frame.attrs['note']}\n")


def _request(
    model: HookedTransformer, args: argparse.Namespace
) -> tuple[HookedTransformer, dict[str, SAE], str, Target]:
    """What `rank` and `build_graph` take positionally, from the flags: model, SAEs, prompt and target."""
    target = _target(args)
    return model, _load_saes(args.model, args.saes, target), args.prompt, target


def _shared(args: argparse.Namespace) -> dict[str, Any]:
    """The options `rank` and `build_graph` share, from the flags."""
    return {"method": args.method, "baseline": args.baseline, "corrupt_prompt": args.corrupt_prompt}


def _load_saes(model_name: str, names_text: str, target: Target | str | None) -> dict[str, SAE]:
    """The SAEs named in a comma-separated list, plus the target feature's own (an SAE name or a target), if any."""
    names = [n.strip() for n in names_text.split(",") if n.strip()]
    own = target if isinstance(target, str) else target.sae if isinstance(target, FeatureRef) else None
    names += [own] if own is not None and own not in names else []
    return {name: loading.load_sae(model_name, name) for name in names}


def _graph(model: HookedTransformer, args: argparse.Namespace) -> None:
    if args.prediction:
        if args.logit_other is not None or args.position is not None:
            raise FeatureLensError("--logit-other and --position go with --logit; --prediction is the last token's.")
        found = attribution_graph(
            model,
            _load_saes(args.model, args.saes, None),
            args.prompt,
            node_threshold=args.node_threshold,
            edge_threshold=args.edge_threshold,
        )
    else:
        found = connectome.build_graph(
            *_request(model, args),
            direction=args.direction,
            **_shared(args),
            hops=args.hops,
            threshold=args.threshold,
            node_budget=args.node_budget,
        )
    if args.format == "circuit-tracer":
        sys.stdout.write(found.to_circuit_tracer_json() + "\n")
        return
    faith = found.faithfulness
    if args.format == "json":
        score = None if faith is None or math.isnan(faith.score) else faith.score
        records = {
            "target": found.target,
            "faithfulness": None if faith is None else {**vars(faith), "score": score},
            "scores": None if found.scores is None else vars(found.scores),
            "pruned_scores": None if found.pruned_scores is None else vars(found.pruned_scores),
            "nodes": json.loads(found.nodes.to_json(orient="records", force_ascii=False) or "[]"),
            "edges": json.loads(found.edges.to_json(orient="records", force_ascii=False) or "[]"),
        }
        sys.stdout.write(json.dumps(records, ensure_ascii=False, allow_nan=False) + "\n")
        return
    _write(found.nodes, "table")
    _write(found.edges, "table")
    if faith is not None:
        sys.stdout.write(
            f"faithfulness {faith.score:.4g} (target {faith.full:.4g} clean, {faith.empty:.4g} with every node "
            f"ablated, {faith.kept:.4g} with only the graph's nodes kept)\n"
        )
    if found.scores is not None and found.pruned_scores is not None:
        full, pruned = found.scores, found.pruned_scores
        sys.stdout.write(
            f"replacement {pruned.replacement:.4g} (full graph {full.replacement:.4g}), completeness "
            f"{pruned.completeness:.4g} (full graph {full.completeness:.4g})\n"
        )


def _batch(model: HookedTransformer, args: argparse.Namespace) -> None:
    outputs = [Path(p) for p in (args.out, args.per_prompt) if p]
    for path in outputs:
        if not path.parent.is_dir():
            raise FeatureLensError(f"Cannot write '{path}': folder '{path.parent}' does not exist.")
        if path.is_dir():  # refused now, not after every prompt has run
            raise FeatureLensError(f"Cannot write '{path}': it is a folder. Give a file name such as edges.parquet.")
    if args.ray_address and args.executor != "ray":
        raise FeatureLensError("--ray-address needs --executor ray.")
    prompts = batch.read_prompts(args.prompts) if args.prompts else batch.held_out_prompts(args.held_out, args.length)
    sae_name, feature = args.feature
    executor = batch.RayExecutor(address=args.ray_address) if args.executor == "ray" else None
    parts = outputs[0].with_name(f"{outputs[0].name}.parts")  # each finished prompt, until the outputs are written
    with tqdm(total=len(prompts), desc="prompts", unit="prompt", file=sys.stderr, disable=None) as bar:

        def advance(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        try:
            result = batch.rank_many(
                model,
                _load_saes(args.model, args.saes, sae_name),
                prompts,
                batch.FeatureSpec(sae_name, feature, args.at, args.max_per_prompt),
                direction=args.direction,
                method=args.method,
                baseline=args.baseline,
                top_k=args.top_k,
                executor=executor,
                progress=advance,
                parts=parts,
                resume=args.resume,
            )
        except KeyboardInterrupt:
            kept = batch.finished_count(parts)
            raise KeyboardInterrupt(
                f"{kept} of {len(prompts)} prompts are kept in '{parts}'; rerun the same command with --resume to go on"
            ) from None
    settings = {k: v for k, v in vars(args).items() if k not in ("format", "command") and v is not None}
    tables = [result.edges, result.per_prompt][: len(outputs)]
    for table, path in zip(tables, outputs, strict=True):
        table.attrs = {**settings, "feature": args.feature[0], "anchor_feature": feature, "prompt_count": len(prompts)}
        try:
            write_atomically(path, lambda temporary, table=table: table.to_parquet(temporary, index=False))
        except OSError as exc:
            raise FeatureLensError(f"Cannot write '{path}': {exc.strerror or exc}.") from exc
    shutil.rmtree(parts, ignore_errors=True)
    _write(result.edges.head(20), args.format)
    resumed = f", {result.resumed} of them resumed" if result.resumed else ""
    sys.stderr.write(
        f"wrote {len(result.edges)} edges from {len(prompts)} prompts{resumed} ({len(result.occurrences)} "
        f"occurrences of the feature) to {args.out}\n"
    )


def _qk(model: HookedTransformer, args: argparse.Namespace) -> None:
    found = qk.qk_attribution(
        model,
        _load_saes(args.model, args.saes, None),
        args.prompt,
        layer=args.layer,
        head=args.head,
        query_position=args.query_pos,
        key_position=args.key_pos,
        top_pairs=args.top_k,
    )
    tables = {"pairs": found.pairs, "query": found.queries, "key": found.keys}
    _write(tables[args.show].head(args.top_k), args.format)
    sys.stderr.write(
        f"layer {found.layer} head {found.head}, query {found.query_position} -> key {found.key_position}: "
        f"pre-softmax score {found.score:.6g}, attention weight {found.pattern:.4g}\n"
    )


def _dashboard_export(model: HookedTransformer, args: argparse.Namespace) -> None:
    text = None
    if args.text:
        source = Path(args.text)
        if not source.is_file():
            raise FeatureLensError(f"Text file '{source}' does not exist. Give a UTF-8 text file.")
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise FeatureLensError(f"Text file '{source}' is not UTF-8 text.") from exc
    features = None
    if args.features:
        parts = [p.strip() for p in args.features.split(",")]
        if not all(p.isdigit() for p in parts):
            raise FeatureLensError(f"--features must be whole numbers separated by commas, not {args.features!r}.")
        features = [int(p) for p in parts]
    sae = loading.load_sae(args.model, args.sae)
    with tqdm(total=len(features or range(sae.cfg.d_sae)), desc="features", file=sys.stderr, disable=None) as bar:

        def advance(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        data = export_dashboards(
            model, sae, name=args.sae, out=args.out, layout=args.layout, text=text, features=features, progress=advance
        )
    sys.stderr.write(f"wrote {len(data['features'])} features' dashboards ({args.layout} layout) to {args.out}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with one line on stderr)."""
    try:
        _run(parser().parse_args(argv))
    except FeatureLensError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (what was kept, for a batch), the status a shell expects
        sys.stderr.write(f"interrupted{': ' if str(exc) else ''}{exc}\n")
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, unless debugging
        if os.environ.get("FEATURE_LENS_DEBUG"):
            raise
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(a bug in feature-lens; set FEATURE_LENS_DEBUG=1 for the traceback and please report it)\n"
        )
        return 1
    return 0
