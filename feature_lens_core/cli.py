"""The command line: `python -m feature_lens_core saes|activations|rank ...`.

Results go to stdout as JSON (a list of row objects), CSV or a plain table. Any bad input exits
with status 2 and one line on stderr saying what to change; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

import pandas as pd

from feature_lens_core import hooks, loading
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.methods import BASELINES
from feature_lens_core.ranking import DIRECTIONS, METHODS, FeatureRef, activations, rank

FORMATS = ("json", "csv", "table")
FEATURE = re.compile(r"^(?P<sae>.+):(?P<feature>\d+)@(?P<position>\d+)$")
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
    match = FEATURE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected NAME:FEATURE@POSITION such as L2.resid_pre:12@5, got {text!r}")
    return FeatureRef(match["sae"], int(match["feature"]), int(match["position"]))


def parser() -> argparse.ArgumentParser:
    """The `feature_lens_core` argument parser with its three commands."""
    main = _Parser(prog="python -m feature_lens_core", description="Rank SAE features that cause each other.")
    commands = main.add_subparsers(dest="command", required=True, metavar="{saes,activations,rank}")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--model", required=True, help="'toy' (built-in) or a TransformerLens model name")
        sub.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
        return sub

    command("saes", "List the model's SAEs: name, hook, hook_out, layer, kind, d_sae.")
    acts = command("activations", "Which features of one SAE fire where on a prompt.")
    acts.add_argument("--sae", required=True, help="SAE name (see the saes command)")
    acts.add_argument("--prompt", required=True)
    acts.add_argument("--top-k", type=_positive, help="keep the N strongest features at each position")

    ranked = command("rank", "Rank the features upstream or downstream of one feature.")
    ranked.add_argument("--prompt", required=True)
    ranked.add_argument("--feature", required=True, type=_feature, help="NAME:FEATURE@POSITION (position 0 is BOS)")
    ranked.add_argument("--saes", required=True, help="comma-separated SAE names to rank (NAME[,NAME...])")
    ranked.add_argument("--direction", required=True, choices=DIRECTIONS)
    ranked.add_argument("--method", required=True, choices=list(METHODS))
    ranked.add_argument("--baseline", choices=BASELINES, default="zero")
    ranked.add_argument("--corrupt-prompt", help="same token length as --prompt (for --baseline corrupt)")
    ranked.add_argument(
        "--candidates", type=_positive, help="activation patching: patch only the K best by attribution"
    )
    ranked.add_argument("--top-k", type=_positive, help="keep the N highest-ranked rows")
    return main


def _write(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", force_ascii=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        sys.stdout.write(frame.to_string(index=False) + "\n")


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
    names = [n.strip() for n in args.saes.split(",") if n.strip()]
    names += [args.feature.sae] if args.feature.sae not in names else []
    saes = {name: loading.load_sae(args.model, name) for name in names}
    frame = rank(
        model,
        saes,
        args.prompt,
        args.feature,
        direction=args.direction,
        method=args.method,
        baseline=args.baseline,
        corrupt_prompt=args.corrupt_prompt,
        candidates=args.candidates,
        top_k=args.top_k,
    )
    _write(frame, args.format)
    if frame.attrs.get("note"):
        sys.stderr.write(f"note: {frame.attrs['note']}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with one line on stderr)."""
    try:
        _run(parser().parse_args(argv))
    except FeatureLensError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except Exception as exc:  # a bug, not bad input: still one line, unless debugging
        if os.environ.get("FEATURE_LENS_DEBUG"):
            raise
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(a bug in feature-lens; set FEATURE_LENS_DEBUG=1 for the traceback and please report it)\n"
        )
        return 1
    return 0
