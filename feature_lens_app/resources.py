"""Cached access to the core, the app's one caching layer: heavy objects (models, SAEs, directions) in
`st.cache_resource`, results in `st.cache_data`.

Every function takes strings and numbers only, so Streamlit hashes cheap keys and never a
tensor or a module. `st.cache_resource` objects are shared by every session: the core leaves
no hooks attached and serialises its hooked passes on the shared model, so concurrent visitors cannot
interleave them. Exceptions are not cached, so a failed load is retried on the next run (e.g. once the
network is back).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

import feature_lens_core as flc
from feature_lens_app import direction_links, hosting, state
from feature_lens_core import catalog
from feature_lens_core.exclusive import Preempted, exclusive, foreground, preemptible
from feature_lens_core.options import BaselineKind, Direction, Method

# The core's modules that import torch, TransformerLens and SAE-Lens are reached as `flc.<module>` when first used,
# not imported here: the landing page draws its shipped results while they load (`loading.model_loading`).
if TYPE_CHECKING:  # the app never touches a model's tensors; these name what the loaders return
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from feature_lens_core import feature_data
    from feature_lens_core.batch import Executor

_ENTRIES = hosting.limits().cache_entries


@st.cache_resource(max_entries=2, show_spinner=False)
def _model(name: str) -> HookedTransformer:
    return flc.load_model(name)


def model(name: str) -> HookedTransformer:
    """The model, loaded once per process (hub models fail fast, with a message, when offline).

    The hosted limits are checked here, where every load passes, as well as on the URL: no widget
    or callback can then make a hosted server load a model it cannot hold.
    """
    limits = hosting.limits()
    if not hosting.model_allowed(name, limits):
        raise flc.FeatureLensError(
            f"Model '{name}' is not available on this hosted app; use the built-in model or one of: "
            f"{', '.join(limits.hub_models or ())}."
        )
    return _model(name)


@st.cache_resource(max_entries=hosting.limits().sae_entries, show_spinner=False)
def _sae(model_name: str, name: str) -> SAE:
    return flc.load_sae(model_name, name)


DIRECTION_PREFIX = "direction:"
MAX_DIRECTIONS = 256  # directions this server keeps (each is one vector), oldest dropped first


@st.cache_resource(show_spinner=False)
def _made_directions() -> dict[str, tuple[str, str, tuple[float, ...]]]:
    """Every direction made on this server, {name: (model, hook, vector)}: a link to one works in any session
    until the server restarts (after that, `direction_links` rebuilds those made from prompts)."""
    return {}


@st.cache_resource(max_entries=64, show_spinner=False)
def _direction(model_name: str, hook: str, vector: tuple[float, ...], name: str) -> SAE:
    return flc.direction_sae(model(model_name), hook, np.asarray(vector, dtype=np.float64), name)


def direction_sites() -> tuple[str, ...]:
    """Where in a block a direction can be read."""
    return tuple(flc.directions.DIRECTION_HOOKS)


def direction_from_prompts(
    model_name: str, hook: str, prompts_a: Sequence[str], prompts_b: Sequence[str], title: str
) -> str:
    """A steering vector (the difference of the two sets' mean activations at `hook`), added as a direction
    whose link can rebuild it from the prompts."""
    vector = flc.steering_vector(model(model_name), hook, list(prompts_a), list(prompts_b))
    name = add_direction(model_name, hook, vector.tolist(), title)
    state.add_link_recipe(direction_links.Recipe(name, hook, tuple(prompts_a), tuple(prompts_b)))
    return name


def direction_from_file(model_name: str, hook: str, data: bytes, fmt: str, title: str) -> str:
    """A direction uploaded as a .npy or .safetensors file, added as a direction whose link names it."""
    name = add_direction(model_name, hook, flc.load_direction(data, fmt=fmt).tolist(), title)
    state.add_link_recipe(direction_links.Recipe(name, hook))
    return name


def layer_count(model_name: str) -> int:
    """How many blocks the model has."""
    return int(model(model_name).cfg.n_layers)


def add_direction(model_name: str, hook: str, vector: Sequence[float], title: str) -> str:
    """Register a linear direction at `hook` as a one-feature SAE; returns the name to select it by.

    The name carries a digest of the hook and vector, so equal names always mean equal directions, and
    cached rankings keyed by SAE names stay correct across sessions. The recipe is kept by the server, the
    one-feature SAE in the resource cache, so every page of every session can use it.
    """
    values = tuple(float(v) for v in vector)
    digest = hashlib.sha256(f"{hook}|{np.asarray(values, dtype=np.float64).tobytes().hex()}".encode()).hexdigest()
    name = f"{DIRECTION_PREFIX}{title.strip() or 'direction'}#{digest[:8]}"
    _direction(model_name, hook, values, name)  # fails here, on the Directions page, if the hook is wrong
    made = _made_directions()
    made.pop(name, None)
    made[name] = (model_name, hook, values)
    while len(made) > MAX_DIRECTIONS:
        made.pop(next(iter(made)))
    return name


def _rebuilt_direction(model_name: str, name: str) -> None:
    """Make a direction this server does not have from the recipe its link carried, or say why it cannot."""
    recipe = state.link_recipes().get(name)
    if recipe is None:
        raise flc.FeatureLensError(
            f"Direction '{name}' is not on this server (it was made before a restart, and its link did not carry "
            "how it was made). Make it again on the Directions page."
        )
    if recipe.from_file:
        raise flc.FeatureLensError(direction_links.missing_file_message(recipe))
    vector = flc.steering_vector(model(model_name), recipe.hook, list(recipe.a), list(recipe.b))
    rebuilt = add_direction(model_name, recipe.hook, vector.tolist(), recipe.title)
    made = _made_directions()
    made[name] = made[rebuilt]  # the link's name stays the view's name, whatever the last bits of the rebuild


def sae(model_name: str, name: str) -> SAE:
    """One SAE of `model_name`, loaded once per process; in hosted mode never from a local path (see `model`)."""
    if name.startswith(DIRECTION_PREFIX):
        if name not in _made_directions():
            _rebuilt_direction(model_name, name)
        made_for, hook, vector = _made_directions()[name]
        if made_for != model_name:
            raise flc.FeatureLensError(
                f"Direction '{name}' was made for model '{made_for}', not this one. Make it again on the "
                "Directions page with this model."
            )
        return _direction(model_name, hook, vector, name)
    if not hosting.sae_allowed(name, hosting.limits()):
        raise flc.FeatureLensError(f"SAE '{name}' cannot be loaded: {hosting.NO_LOCAL}.")
    return _sae(model_name, name)


def saes(model_name: str, names: tuple[str, ...]) -> dict[str, SAE]:
    """All SAEs of a view, in the user's order."""
    if not names:
        raise flc.FeatureLensError("No SAEs are selected. Pick at least one SAE in the sidebar.")
    return {name: sae(model_name, name) for name in names}


def executor() -> Executor | None:
    """Where the long corpus runs (across prompts, causes and effects over a text) go: the Ray cluster
    `FEATURE_LENS_RAY_ADDRESS` names (`hosting.ray_address`), or None for this process."""
    address = hosting.ray_address()
    return None if address is None else flc.batch.RayExecutor(address=address)


@st.cache_data(max_entries=8, show_spinner=False)
def sae_options(model_name: str) -> list[str]:
    """Names offered in the SAE picker for a model (the built-in SAEs, or SAE-Lens's directory)."""
    return flc.list_saes(model_name)


def model_options() -> list[str]:
    """Models offered in the picker: the built-in one first, then every hub model with SAE releases (offline,
    only those the local Hugging Face cache holds: nobody is offered a model that cannot load). Not cached
    itself: the directory is parsed once per process, and the cache's contents are re-read each minute."""
    allowed = hosting.limits().hub_models
    hub = [m for m in catalog.hub_models() if allowed is None or m in allowed]
    if catalog.offline_mode():
        hub = [m for m in hub if m in cached_models()]
    return [catalog.BUILTIN_MODEL, *hub]


@st.cache_data(ttl=60, show_spinner=False)
def cached_models() -> dict[str, int]:
    """Hub models the local Hugging Face cache holds whole, and their bytes on disk (read again each minute)."""
    return catalog.cached_models()


def device() -> str:
    """Where models load: FEATURE_LENS_DEVICE if set, else CUDA, else MPS, else the CPU."""
    return str(flc.loading.default_device())


@st.cache_data(ttl=60, show_spinner=False)
def online() -> bool:
    """Whether the hub answers (checked with a short timeout, remembered for a minute)."""
    return flc.loading.hub_reachable()


@dataclass(frozen=True)
class Timed:
    """A result and the seconds it took to compute (when it was computed, not when read from cache)."""

    frame: pd.DataFrame
    seconds: float
    note: str = ""  # the core's remark on how it ranked (e.g. activation patching limited to candidates)


@st.cache_data(max_entries=_ENTRIES, show_spinner=False)
def ranking(
    model_name: str,
    sae_names: tuple[str, ...],
    prompt: str,
    target: str,
    direction: Direction,
    method: Method,
    baseline: BaselineKind,
    corrupt: str,
    candidates: int | None,
    top_k: int | None,
) -> Timed:
    """The core's ranking for one view, with its compute time."""
    loaded_model, loaded = model(model_name), saes(model_name, sae_names)
    with exclusive():  # held across the whole ranking, so its time is not time spent waiting for another thread
        start = time.perf_counter()
        frame = flc.rank(
            loaded_model,
            loaded,
            prompt,
            flc.parse_target(target),
            direction=direction,
            method=method,
            baseline=baseline,
            corrupt_prompt=corrupt if baseline == "corrupt" else None,
            candidates=candidates,
            top_k=top_k,
        )
        seconds = time.perf_counter() - start
    return Timed(frame.reset_index(drop=True), seconds, str(frame.attrs.get("note", "")))


def ranked(
    view: state.ViewState, direction: Direction, method: Method | None = None, *, target: flc.Target | None = None
) -> Timed:
    """Every ranked node of a view in one direction (charts and tables slice the head), for the view's target
    feature or another `target` (the Explore page's logit)."""
    method = method or view.method
    candidates = hosting.limits().candidates if method == "activation" else None
    named = str(target if target is not None else state.target(view))
    return ranking(
        view.model, view.saes, view.prompt, named, direction, method, view.baseline, view.corrupt, candidates, None
    )


@st.cache_data(max_entries=_ENTRIES, show_spinner=False)
def tokens(model_name: str, prompt: str) -> list[str]:
    """The prompt's tokens as the core indexes positions; the core's checks (empty, too long) apply."""
    loaded_model = model(model_name)
    return [str(t) for t in loaded_model.to_str_tokens(flc.validation.prompt_tokens(loaded_model, prompt)[0])]


def context_length(model_name: str) -> int:
    """How many tokens the model reads at most (its start-of-text token included)."""
    return int(model(model_name).cfg.n_ctx)


@st.cache_data(max_entries=_ENTRIES, show_spinner=False)
def corrupt_proposal(model_name: str, prompt: str) -> str:
    """A corrupt prompt for the corrupt baseline: held-out text, or else the prompt's tokens reversed, with as
    many tokens as `prompt` (the baseline's one requirement)."""
    length = len(tokens(model_name, prompt))
    body = tokens(model_name, prompt)[1:]  # without the start-of-text token
    candidates = [*flc.held_out_prompts(8, length=max(1, len(body))), "".join(reversed(body))]
    for text in candidates:
        try:
            if len(tokens(model_name, text)) == length:
                return text
        except flc.FeatureLensError:
            continue
    raise flc.FeatureLensError("No corrupt prompt of the prompt's token length was found; type one.")


@st.cache_data(max_entries=_ENTRIES, show_spinner=False)
def activations(model_name: str, sae_name: str, prompt: str) -> pd.DataFrame:
    """Which features of one SAE fire where on the prompt: (position, token, feature, activation)."""
    return flc.activations(model(model_name), sae(model_name, sae_name), prompt)


@st.cache_resource(max_entries=32, show_spinner=False)
def labels(model_name: str, sae_name: str) -> tuple[str, ...]:
    """Every feature's short label ("" where none is known); shared, not copied, as it never changes."""
    return tuple(flc.feature_data.feature_labels(sae(model_name, sae_name)))


def label(model_name: str, sae_name: str, feature: int) -> str:
    """One feature's label, or "" (never raises: labels are decoration)."""
    return labeller(model_name)(sae_name, feature)


def labeller(model_name: str) -> Callable[[str, int], str]:
    """`label` for many features of `model_name`: each SAE's labels are read from the cache once, not once a
    feature (every read hashes its arguments: about a millisecond a row of a ranking)."""
    read: dict[str, tuple[str, ...]] = {}

    def label_of(sae_name: str, feature: int) -> str:
        if sae_name not in read:
            try:
                read[sae_name] = labels(model_name, sae_name)
            except flc.FeatureLensError:
                read[sae_name] = ()
        names = read[sae_name]
        return names[feature] if 0 <= feature < len(names) else ""

    return label_of


@st.cache_data(max_entries=_ENTRIES, show_spinner=False)
def card(model_name: str, sae_name: str, feature: int) -> feature_data.FeatureCard:
    """One feature's dashboard data (shipped for the built-in SAEs, logit effects for any SAE)."""
    return flc.feature_data.feature_card(model(model_name), sae(model_name, sae_name), feature)


@st.cache_data(max_entries=64, show_spinner=False)
def neuronpedia_id(model_name: str, sae_name: str) -> str | None:
    """The SAE's Neuronpedia id from SAE-Lens's directory, without loading the SAE."""
    entry = catalog.hub_saes().get(sae_name) if model_name != catalog.BUILTIN_MODEL else None
    return entry.neuronpedia_id if entry else None


def d_sae(model_name: str, sae_name: str) -> int:
    """How many features the SAE has."""
    return int(sae(model_name, sae_name).cfg.d_sae)


_scripts_running = 0
_scripts_done = threading.Condition()


@contextlib.contextmanager
def visible_work() -> Iterator[None]:
    """Mark a session's script run. Background prefetching waits until no script is running, so that a
    click never queues behind work nobody asked for, and the page being drawn has the CPU to itself; the run is
    a foreground request for the compute lock, which graph builds wait for (`exclusive.foreground`). The
    prefetcher waits outside the lock, before it asks for a cached result, since a script asking for the
    result it computes waits for it (a background thread of the lock must not hold such a thing)."""
    global _scripts_running
    with _scripts_done:
        _scripts_running += 1
    try:
        with foreground():
            yield
    finally:
        with _scripts_done:
            _scripts_running -= 1
            _scripts_done.notify_all()


LOWEST_PRIORITY = 19  # the nice value of the prefetcher's thread


def lowest_cpu_priority() -> None:
    """Give the calling thread the lowest CPU priority (nice 19), on Linux; elsewhere do nothing.

    Linux keeps a nice value per thread, and a thread starts with its creator's, so the compute threads that
    torch's OpenMP starts for this thread's first parallel operation get it too. Elsewhere the call would lower
    the whole process. The thread's work then takes only the CPU that the browser drawing a page and the
    visitors' scripts leave: on the project's 2 cores, a click's redraw shared them with the prefetch of the
    view before (benchmarks/RESULTS.md). Raising a nice value needs no privilege; the call is not undone.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # a sandbox that refuses it leaves the thread as it was, working
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


class _Prefetcher:
    """One background thread that fills the result cache for the methods the user has not picked yet.

    Switching the method is then a cache hit. Only the latest view's jobs are kept (a user clicking
    through targets makes older ones useless). A job starts only while no session's script is running
    (`visible_work`), and its ranking is preemptible work for the core's compute lock (`exclusive.preemptible`):
    once a script starts, the job in flight gives up at its next pass instead of finishing (a ranking by
    activation patching takes a second or more, which a click waited for, or shared the CPU with), and goes back
    to the front of the line, unless a newer view's jobs replaced it meanwhile. The thread runs at the lowest CPU
    priority (`lowest_cpu_priority`), so that it uses only CPU time nothing else wants. Off in hosted mode,
    where CPU is shared by every visitor.
    """

    def __init__(self) -> None:
        self._jobs: deque = deque()
        self._submitted = 0  # how many times the jobs were replaced: a preempted job goes back only if they were not
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # A daemon thread still inside torch when the interpreter exits aborts the process, so the
        # current job is allowed to finish first.
        atexit.register(self.stop)

    def submit(self, jobs: list) -> None:
        with self._lock:
            self._jobs.clear()
            self._jobs.extend(jobs)
            self._submitted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="feature-lens-prefetch", daemon=True)
                self._thread.start()
        self._wake.set()

    def _work(self) -> None:
        lowest_cpu_priority()
        with preemptible():
            while not self._stopping:
                self._wake.wait()
                with _scripts_done:  # the queue may change meanwhile: a job is taken only once scripts are done
                    _scripts_done.wait_for(lambda: _scripts_running == 0 or self._stopping)
                with self._lock:
                    job = self._jobs.popleft() if self._jobs and not self._stopping else None
                    submitted = self._submitted
                    if job is None:
                        self._wake.clear()
                if job is None:
                    continue
                try:
                    job()
                except Preempted:  # a script started: the job is done again once scripts are done
                    with self._lock:
                        if self._submitted == submitted and not self._stopping:
                            self._jobs.appendleft(job)
                except Exception:  # a failure here is shown when the user asks for it
                    pass

    def stop(self) -> None:
        """Drop the queued jobs and wait for the running one to end."""
        with self._lock:
            self._stopping = True
            self._jobs.clear()
            thread = self._thread
        self._wake.set()
        with _scripts_done:
            _scripts_done.notify_all()
        if thread is not None:
            thread.join(timeout=60)


_prefetcher = _Prefetcher()


def prefetch_other_methods(
    view: state.ViewState, directions: Sequence[Direction] | None = None, *, target: flc.Target | None = None
) -> None:
    """Rank the current view (or `target`) with the other methods in the background (see `_Prefetcher`)."""
    if hosting.limits().hosted:
        return
    jobs = [
        functools.partial(ranked, view, direction, method, target=target)
        for method in state.METHODS
        if method != view.method
        for direction in (directions if directions is not None else view.directions)
    ]
    _prefetcher.submit(jobs)
