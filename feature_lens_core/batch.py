"""Rankings over many prompts: which connections of a feature hold across them, and how strongly.

Each prompt is one independent task (`rank_prompt`): find the feature's occurrences on it (the
positions where `FeatureSpec` says to look), rank every occurrence with `ranking.rank`, and reduce
the result to one row per edge. Tasks go through an executor's `map(fn, items)` (the built-in
serial map by default; a `concurrent.futures` executor or `RayExecutor` run the same tasks
elsewhere), and `rank_many` adds the per-prompt rows up:

- an edge is a source (or, downstream, a target) SAE feature, or an SAE's error node, regardless
  of position: its score on one occurrence is the sum of its nodes' scores over positions (as
  Sparse Feature Circuits sums node effects over positions);
- mean_score = the sum of those scores / the number of occurrences (an edge absent from an
  occurrence counts 0 there);
- an edge is present on an occurrence when one of its nodes has |score| > min_score and is among
  the occurrence's top_k nodes (if top_k is given); frequency = the share of the prompts on which
  the feature occurs where the edge is present at least once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer

from feature_lens_core import feature_data, untrusted_files, validation
from feature_lens_core.errors import FeatureLensError
from feature_lens_core.files import write_atomically
from feature_lens_core.options import DIRECTIONS, METHODS, BaselineKind, Direction, Method
from feature_lens_core.ranking import activations, rank
from feature_lens_core.targets import FeatureRef
from feature_lens_core.validation import prompt_tokens
from feature_lens_core.zoo import paths
from feature_lens_core.zoo.tokenizer import load_tokenizer

AT = ("last", "active")
EDGE = ["sae", "hook", "layer", "kind", "feature"]
PER_PROMPT_COLUMNS = ["prompt", "anchor_feature", *EDGE, "occurrences", "score", "present"]
EDGE_COLUMNS = [
    "anchor_feature",
    *EDGE,
    "label",
    "mean_score",
    "frequency",
    "prompts",
    "occurrences",
    "anchor_prompts",
    "anchor_occurrences",
]
OCCURRENCE_COLUMNS = ["prompt", "position", "token", "feature", "activation"]

Progress = Callable[[int, int], None]
RAY_TIMEOUT_S = 3.0  # how long a Ray address has to answer a TCP connection


class Executor(Protocol):
    """Anything with `map(fn, items)` yielding fn(item) in order: the serial default, a concurrent.futures
    executor, or `RayExecutor`."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterable[Any]: ...


class SerialExecutor:
    """Runs the tasks one after another in this process."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterator[Any]:
        return map(fn, items)


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _check_reachable(address: str) -> None:
    """Refuse a Ray address that nothing answers at, before `ray.init` retries it for a minute, logging each try."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FeatureLensError(f"Ray address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_TIMEOUT_S).close()
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FeatureLensError(
            f"No Ray cluster answers at {address!r} ({reason}). Start one (`ray start --head`), give its address, "
            "or run the batch serially."
        ) from exc


class RayExecutor:
    """Runs each task as a Ray task. The task function (the model and SAEs included) is put in Ray's object
    store once and shared by all tasks on a node.

    `address` is passed to `ray.init` when Ray is not initialised yet: None starts a local Ray, "auto"
    joins the cluster this machine belongs to, "ray://host:10001" a remote one. `num_cpus` is what each
    task asks of the scheduler.
    """

    def __init__(self, address: str | None = None, num_cpus: float = 1, **init_kwargs: Any) -> None:
        self.address, self.num_cpus, self.init_kwargs = address, num_cpus, init_kwargs

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterator[Any]:
        try:
            import ray
        except ImportError as exc:
            raise FeatureLensError("Ray is not installed: `pip install ray`, or run the batch serially.") from exc
        if not ray.is_initialized():
            if self.address not in (None, "auto", "local"):
                _check_reachable(self.address)
            try:
                ray.init(address=self.address, **self.init_kwargs)
            except Exception as exc:  # ConnectionError, or any of Ray's own errors: none is a bug of the batch
                raise FeatureLensError(
                    f"Could not start or join Ray (address {self.address!r}): {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]} Start a cluster (`ray start --head`) or run the batch "
                    "serially."
                ) from exc
        remote = ray.remote(num_cpus=self.num_cpus)(_call)
        shared = ray.put(fn)
        refs = [remote.remote(shared, item) for item in items]
        for ref in refs:
            yield ray.get(ref)


@dataclass(frozen=True)
class FeatureSpec:
    """Where a batch run ranks on each prompt: feature `feature` of SAE `sae` (every feature of it when None),
    at the last token (`at="last"`) or at every position where it is active (`"active"`); at most the
    `max_per_prompt` strongest occurrences per prompt if given."""

    sae: str
    feature: int | None = None
    at: str = "last"
    max_per_prompt: int | None = None


@dataclass(frozen=True)
class Settings:
    """How each occurrence is ranked, and when an edge counts as present on it."""

    direction: Direction
    method: Method
    baseline: BaselineKind = "zero"
    top_k: int | None = None
    min_score: float = 0.0


@dataclass(frozen=True)
class PromptResult:
    """One prompt's task output: its occurrences and one row per edge (PER_PROMPT_COLUMNS)."""

    occurrences: pd.DataFrame
    edges: pd.DataFrame


@dataclass(frozen=True)
class BatchResult:
    """`edges` (EDGE_COLUMNS, by anchor feature then |mean_score|), `per_prompt` (PER_PROMPT_COLUMNS),
    `occurrences` (OCCURRENCE_COLUMNS), the number of prompts and how many of them were resumed."""

    edges: pd.DataFrame
    per_prompt: pd.DataFrame
    occurrences: pd.DataFrame
    n_prompts: int
    resumed: int = 0  # how many prompts came from an interrupted run's PartFolder


def occurrences(model: HookedTransformer, saes: Mapping[str, SAE], prompt: str, spec: FeatureSpec) -> pd.DataFrame:
    """The (position, feature) pairs of `spec` on `prompt`: position, token, feature, activation."""
    acts = activations(model, saes[spec.sae], prompt)
    if spec.feature is not None:
        acts = acts.loc[acts.feature == spec.feature]
    if spec.at == "last":
        acts = acts.loc[acts.position == len(model.to_str_tokens(prompt)) - 1]
    if spec.max_per_prompt is not None:
        acts = acts.sort_values("activation", ascending=False, kind="stable").head(spec.max_per_prompt)
    return acts.reset_index(drop=True)


def edge_scores(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One occurrence's `rank` frame reduced to one row per edge: score summed over positions, and present."""
    present = frame.score.abs() > settings.min_score
    if settings.top_k is not None:
        present &= np.arange(len(frame)) < settings.top_k  # rank sorts by |score|
    grouped = frame.assign(present=present).groupby(EDGE, sort=False)
    return grouped.agg(score=("score", "sum"), present=("present", "any")).reset_index()


def rank_prompt(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    spec: FeatureSpec,
    settings: Settings,
    task: tuple[int, str],
) -> PromptResult:
    """The task for prompt number `task[0]`: rank each occurrence, add up its edges over the occurrences."""
    index, prompt = task
    found = occurrences(model, saes, prompt, spec)
    parts = []
    for feature, position in zip(found.feature.tolist(), found.position.tolist(), strict=True):
        ref = FeatureRef(spec.sae, feature, position)
        frame = rank(
            model, saes, prompt, ref, direction=settings.direction, method=settings.method, baseline=settings.baseline
        )
        parts.append(edge_scores(frame, settings).assign(anchor_feature=feature))
    edges = pd.DataFrame(columns=PER_PROMPT_COLUMNS)
    if parts:
        counts = found.feature.value_counts()
        summed = pd.concat(parts).groupby(["anchor_feature", *EDGE], sort=False)
        edges = summed.agg(score=("score", "sum"), present=("present", "sum")).reset_index()
        edges = edges.assign(prompt=index, occurrences=edges.anchor_feature.map(counts).to_numpy())
        edges = edges.loc[:, PER_PROMPT_COLUMNS]
    return PromptResult(found.assign(prompt=index).loc[:, OCCURRENCE_COLUMNS], edges)


def aggregate(per_prompt: pd.DataFrame, found: pd.DataFrame, saes: Mapping[str, SAE]) -> pd.DataFrame:
    """Per-prompt edge rows added up across prompts (EDGE_COLUMNS; see the module docstring)."""
    if per_prompt.empty:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    anchors = found.groupby("feature").agg(anchor_prompts=("prompt", "nunique"), anchor_occurrences=("prompt", "size"))
    edges = (
        per_prompt.assign(on_prompt=per_prompt.present > 0)
        .groupby(["anchor_feature", *EDGE], sort=False)
        .agg(total=("score", "sum"), occurrences=("present", "sum"), prompts=("on_prompt", "sum"))
        .reset_index()
        .join(anchors, on="anchor_feature")
    )
    edges["mean_score"] = edges.total / edges.anchor_occurrences
    edges["frequency"] = edges.prompts / edges.anchor_prompts
    labels = {name: feature_data.feature_labels(saes[name]) for name in set(edges.sae)}
    edges["label"] = [
        "error" if f < 0 else labels[s][f] or f"#{f}" for s, f in zip(edges.sae, edges.feature, strict=True)
    ]
    order = np.lexsort((-edges.mean_score.abs().to_numpy(), edges.anchor_feature.to_numpy()))
    return edges.iloc[order][EDGE_COLUMNS].reset_index(drop=True)


def _check(model: HookedTransformer, saes: Mapping[str, SAE], spec: object, settings: Settings) -> FeatureSpec:
    validation.sae_set(model, saes)
    if not isinstance(spec, FeatureSpec):
        raise FeatureLensError(f"Say where to rank with FeatureSpec(sae, feature, at, ...), not {spec!r:.60}.")
    validation.choice(settings.direction, DIRECTIONS, "direction")
    validation.choice(settings.method, METHODS, "method")
    validation.choice(spec.at, AT, "position rule (at)")
    if settings.baseline not in ("zero", "mean"):
        raise FeatureLensError(
            f"Baseline {settings.baseline!r} cannot be used across prompts: use 'zero' or 'mean' (a corrupt "
            "prompt belongs to one prompt)."
        )
    if spec.sae not in saes:
        raise FeatureLensError(f"SAE '{spec.sae}' is not among the SAEs given ({', '.join(saes)}). Add it.")
    if spec.feature is not None:
        validation.index(spec.feature, "Feature", saes[spec.sae].cfg.d_sae, f"'{spec.sae}'")
    validation.count(spec.max_per_prompt, "max_per_prompt", optional=True)
    validation.count(settings.top_k, "top_k", optional=True)
    validation.non_negative(settings.min_score, "min_score", optional=False)
    return spec


class PartFolder:
    """The finished prompts of one batch run, two Parquet files per prompt in `folder`, so a run that is
    interrupted (Ctrl-C, a kill, a crash) keeps them and a rerun with `resume=True` continues from them.

    Each file is written whole or not at all, the edges file last, so a prompt counts as finished only once
    both are complete. `run.json` records what the run is (`run`: model, SAEs, settings, a digest of the
    prompts); a folder of another run is refused rather than mixed in.
    """

    RUN = "run.json"

    def __init__(self, folder: str | Path, run: Mapping[str, object], *, resume: bool) -> None:
        self.folder = Path(folder)
        self.run = json.loads(json.dumps(run, sort_keys=True, default=str))
        self.started = False
        try:
            recorded = self.folder / self.RUN
            if not recorded.exists() or not finished_count(self.folder):
                return  # nothing kept: the folder is (re)started when the first prompt finishes
            if not resume:
                raise FeatureLensError(
                    f"'{self.folder}' holds the finished prompts of an earlier run that was interrupted. Resume it "
                    "(--resume, or resume=True), or delete the folder to start again."
                )
            before = untrusted_files.read_json(recorded, what=f"'{recorded}'", max_bytes=2**20)
            if before != self.run:
                before = before if isinstance(before, dict) else {}
                differ = sorted(k for k in {*before, *self.run} if before.get(k) != self.run.get(k))
                raise FeatureLensError(
                    f"'{self.folder}' holds an interrupted run with other settings ({', '.join(differ)} differ), so "
                    "it cannot be resumed: give the same settings, or delete the folder to start again."
                )
            for leftover in self.folder.glob(".*.partial"):  # a write cut off by a kill
                leftover.unlink()
            self.started = True
        except OSError as exc:
            raise FeatureLensError(f"Cannot keep finished prompts in '{self.folder}': {exc.strerror or exc}.") from exc

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.folder / f"{index:06d}.occurrences.parquet", self.folder / f"{index:06d}.edges.parquet"

    def finished(self, n_prompts: int) -> dict[int, PromptResult]:
        """The results of the prompts (of the first `n_prompts`) that a previous run finished."""
        done = {}
        for index in range(n_prompts):
            found, edges = self._paths(index)
            if not edges.exists():
                continue
            try:
                done[index] = PromptResult(pd.read_parquet(found), pd.read_parquet(edges))
            except (OSError, ValueError) as exc:  # pyarrow's errors are OSErrors and ValueErrors
                raise FeatureLensError(
                    f"'{edges}' could not be read ({type(exc).__name__}). Delete it and resume to run it again."
                ) from exc
        return done

    def save(self, index: int, result: PromptResult) -> None:
        """Keep prompt `index`'s result; a failure (a full disk) leaves the prompts kept before intact."""
        try:
            if not self.started:
                self.folder.mkdir(exist_ok=True)
                write_atomically(self.folder / self.RUN, lambda path: path.write_text(json.dumps(self.run, indent=1)))
                self.started = True
            for table, path in zip((result.occurrences, result.edges), self._paths(index), strict=True):
                write_atomically(path, lambda temporary, table=table: table.to_parquet(temporary, index=False))
        except OSError as exc:
            raise FeatureLensError(
                f"Cannot keep prompt {index}'s result in '{self.folder}': {exc.strerror or exc}. The prompts kept "
                "before it are intact: free some space, then resume."
            ) from exc


def finished_count(folder: str | Path) -> int:
    """How many prompts a `PartFolder` at `folder` holds."""
    return len(list(Path(folder).glob("*.edges.parquet")))


def run_record(
    model: HookedTransformer, saes: Mapping[str, SAE], texts: list[str], spec: FeatureSpec, settings: Settings
) -> dict[str, object]:
    """What identifies a batch run, for `PartFolder`: the model, each SAE's name and hook, the settings and a
    digest of the prompts."""
    return {
        "model": model.cfg.model_name,
        "saes": {name: [sae.cfg.metadata.hook_name, sae.cfg.d_sae] for name, sae in saes.items()},
        "spec": vars(spec),
        "settings": vars(settings),
        "prompts": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
        "prompt_count": len(texts),
    }


def rank_many(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    prompts: Iterable[str],
    spec: FeatureSpec,
    *,
    direction: Direction,
    method: Method,
    baseline: BaselineKind = "zero",
    top_k: int | None = None,
    min_score: float = 0.0,
    executor: Executor | None = None,
    progress: Progress | None = None,
    parts: str | Path | None = None,
    resume: bool = False,
) -> BatchResult:
    """Rank the connections of `spec`'s feature on every prompt and aggregate them per edge.

    Every prompt is a task for `executor.map` (serial by default); `progress(done, total)` is called
    after each prompt's result arrives. See the module docstring for the aggregation. With `parts`, a
    folder, each prompt's result is kept there as it arrives (`PartFolder`); `resume=True` then takes the
    prompts an interrupted run finished from it instead of running them again.
    """
    settings = Settings(direction, method, baseline, top_k, min_score)
    spec = _check(model, saes, spec, settings)
    if isinstance(prompts, str) or not isinstance(prompts, Iterable):
        raise FeatureLensError("Give the prompts as a list of strings, not a single string.")
    texts = list(prompts)  # a generator is read once, here
    if not texts:
        raise FeatureLensError("Give at least one prompt (a list of strings).")
    for number, prompt in enumerate(texts, start=1):
        prompt_tokens(model, prompt, what=f"prompt {number}")
    kept = None if parts is None else PartFolder(parts, run_record(model, saes, texts, spec, settings), resume=resume)
    results = kept.finished(len(texts)) if kept else {}
    resumed = len(results)
    if progress is not None and resumed:
        progress(resumed, len(texts))
    todo = [(index, text) for index, text in enumerate(texts) if index not in results]
    task = functools.partial(rank_prompt, model, dict(saes), spec, settings)
    for (index, _), result in zip(todo, (executor or SerialExecutor()).map(task, todo), strict=True):
        if kept is not None:
            kept.save(index, result)
        results[index] = result
        if progress is not None:
            progress(len(results), len(texts))
    ordered = [results[index] for index in range(len(texts))]
    found = pd.concat([r.occurrences for r in ordered], ignore_index=True)
    edge_parts = [r.edges for r in ordered if not r.edges.empty]
    per_prompt = pd.concat(edge_parts, ignore_index=True) if edge_parts else pd.DataFrame(columns=PER_PROMPT_COLUMNS)
    return BatchResult(aggregate(per_prompt, found, saes), per_prompt, found, len(texts), resumed)


def held_out_prompts(n: int, length: int = 32) -> list[str]:
    """`n` prompts of `length` tokens from the built-in model's held-out plays, spread evenly over them."""
    validation.count(n, "n")
    validation.count(length, "length")
    tokens = load_file(str(paths.HELD_OUT_TOKENS))["tokens"]
    if n * length > len(tokens):
        raise FeatureLensError(f"The held-out text has {len(tokens)} tokens: ask for fewer than {n} x {length}.")
    tokenizer = load_tokenizer(paths.TOKENIZER_DIR)
    starts = torch.linspace(0, len(tokens) - length, n).long().tolist()
    return [str(tokenizer.decode(tokens[s : s + length].tolist(), skip_special_tokens=True)).strip() for s in starts]


def read_prompts(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, one prompt each."""
    file = Path(path)
    if not file.is_file():
        raise FeatureLensError(f"Prompt file '{file}' does not exist. Give a text file with one prompt per line.")
    try:
        prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise FeatureLensError(f"Prompt file '{file}' is not UTF-8 text.") from exc
    if not prompts:
        raise FeatureLensError(f"Prompt file '{file}' has no prompts (every line is blank).")
    return prompts
