"""The view state: what the user looks at, kept in the URL so every view is a shareable link.

`parse` turns query parameters into a typed `ViewState` and a list of problems; a malformed
value falls back to its default while every valid parameter is kept. `to_params` is the
inverse. In a session, the widgets own the values (`st.session_state[KEY]`); the URL is read
when a session starts or when it changes by itself (Back, Forward), and rewritten after every run.

Only the *shape* of values is checked here (a number is a number, a method is one of three);
whether an SAE fits the model or a feature is in range is the core's call, so its messages
are the ones a user sees and the offending input stays visible for them to fix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import streamlit as st

from feature_lens_app import direction_links, hosting
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES, LANDING_TOKEN
from feature_lens_core import FeatureLensError, FeatureRef, LogitDiffRef, LogitRef, Target, catalog
from feature_lens_core.options import BaselineKind, Direction, GraphDirection, Method

# The core's choices, each with the words the sidebar shows for it (a test checks every choice has them).
METHODS: dict[Method, str] = {
    "activation": "Activation patching (exact)",
    "attribution": "Attribution patching (fast estimate)",
    "direct": "Direct attribution (direct paths only)",
    "integrated": "Integrated gradients (10 steps)",
}
BASELINES: dict[BaselineKind, str] = {
    "zero": "Zero (switch the feature off)",
    "mean": "Mean (its average activation)",
    "corrupt": "Corrupt prompt (its value on another prompt)",
}
# A view ranks one side of the target or both, as a graph grows (`GraphDirection`).
DIRECTIONS: dict[GraphDirection, str] = {
    "both": "Both",
    "upstream": "Upstream (what drives it)",
    "downstream": "Downstream (what it drives)",
}
# What the Explore page ranks the causes of: the sidebar's feature, or the model's prediction at the position.
TargetKind = Literal["feature", "logit", "diff"]
TARGET_KINDS: dict[TargetKind, str] = {
    "feature": "A feature",
    "logit": "A next-token logit",
    "diff": "A logit difference",
}
KEYS = (
    "model",
    "saes",
    "prompt",
    "sae",
    "feature",
    "pos",
    "method",
    "baseline",
    "direction",
    "corrupt",
    "kind",
    "token",
    "other",
)
MAX_NAME_CHARS = 300


@dataclass(frozen=True)
class ViewState:
    """Everything that defines a view; field names are the query parameter names."""

    model: str = catalog.BUILTIN_MODEL
    saes: tuple[str, ...] = DEFAULT_SAES
    prompt: str = EXAMPLES[0].prompt
    sae: str = EXAMPLES[0].sae
    feature: int = EXAMPLES[0].feature
    pos: int = EXAMPLES[0].position
    method: Method = "attribution"
    baseline: BaselineKind = "zero"
    direction: GraphDirection = "both"
    corrupt: str = ""
    kind: TargetKind = "logit"  # the landing view: why the model predicts its top next token
    token: str = LANDING_TOKEN  # a logit target's token, exactly one token of the tokenizer (its leading space kept)
    other: str = ""  # a logit difference's second token
    recipes: str = ""  # how the view's directions were made (`direction_links`); only in the URL when there are any
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def directions(self) -> list[Direction]:
        return ["upstream", "downstream"] if self.direction == "both" else [self.direction]


DEFAULT = ViewState()


def target(view: ViewState) -> FeatureRef:
    """The view's target feature as the core names it (the sidebar's target, whatever the Explore page ranks)."""
    return FeatureRef(view.sae, view.feature, view.pos)


def explored(view: ViewState) -> Target:
    """What the Explore page ranks the causes of: the target feature, or a logit (difference) at its position."""
    if view.kind == "logit":
        return LogitRef(view.token, view.pos)
    if view.kind == "diff":
        return LogitDiffRef(view.token, view.other, view.pos)
    return target(view)


def default_saes(model: str, list_saes: Callable[[str], list[str]] | None = None) -> tuple[str, ...]:
    """SAEs to start from for `model`: the worked example's set, or the first two of its main residual release."""
    if model == catalog.BUILTIN_MODEL:
        return DEFAULT_SAES
    releases: dict[str, list[str]] = {}
    for name in (list_saes or _hub_saes_of)(model):
        releases.setdefault(name.split("/", 1)[0], []).append(name)
    if not releases:
        return ()
    # The shortest residual release name is usually the canonical one (gpt2-small-res-jb, not its variants).
    release = min(releases, key=lambda r: ("res" not in r, len(r), r))
    return tuple(sorted(releases[release], key=_natural)[:2])


def _natural(name: str) -> list[Any]:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _hub_saes_of(model: str) -> list[str]:
    return sorted(name for name, entry in catalog.hub_saes().items() if entry.model == model)


def _last(params: Mapping[str, Any], key: str) -> str | None:
    """The last value of a parameter (a repeated key keeps the last, as browsers do)."""
    value = params.get(key)
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else None
    return None if value is None else str(value)


def _all(params: Mapping[str, Any], key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def parse(
    params: Mapping[str, Any],
    limits: hosting.Limits | None = None,
    list_saes: Callable[[str], list[str]] | None = None,
) -> ViewState:
    """A `ViewState` from query parameters; `problems` says, in plain words, what was ignored and why.

    `params` maps names to a string or a list of strings (`st.query_params` with `get_all`).
    Missing parameters take their defaults; with none at all this is the worked example.
    """
    limits = limits or hosting.limits()
    problems: list[str] = []
    values: dict[str, Any] = {}

    model = _last(params, "model")
    if model is not None:
        model = model.strip()
        if not model or len(model) > MAX_NAME_CHARS:
            problems.append(f"model={_shown(model)} is not a model name, so the built-in model is shown.")
        elif not hosting.model_allowed(model, limits):
            problems.append(
                f"model={_shown(model)} is not available on this hosted app (it would not fit in memory); "
                f"use the built-in model or one of: {', '.join(limits.hub_models or ())}."
            )
        else:
            values["model"] = model
    model = values.get("model", DEFAULT.model)

    names = [n.strip() for raw in _all(params, "saes") for n in raw.split(",") if n.strip()]
    names = list(dict.fromkeys(n for n in names if len(n) <= MAX_NAME_CHARS))
    target = (_last(params, "sae") or "").strip()
    # Hosted: a name must come from the catalog, so nothing can make the server read its own disk.
    unknown = [n for n in dict.fromkeys([*names, target]) if n and not hosting.sae_allowed(n, limits)]
    if unknown:
        problems.append(f"SAE {', '.join(_shown(n) for n in unknown)} left out: {hosting.NO_LOCAL}.")
        names = [n for n in names if n not in unknown]
        target = "" if target in unknown else target
    if "saes" in params:
        values["saes"] = tuple(names)
    elif model != DEFAULT.model:
        values["saes"] = default_saes(model, list_saes)

    for key in ("prompt", "corrupt"):
        text = _last(params, key)
        if text is None:
            continue
        if limits.max_prompt_chars is not None and len(text) > limits.max_prompt_chars:
            problems.append(
                f"{key} was {len(text)} characters long; it was cut to the first {limits.max_prompt_chars}."
            )
            text = text[: limits.max_prompt_chars]
        values[key] = text

    if target and len(target) <= MAX_NAME_CHARS:
        values["sae"] = target
    elif model != DEFAULT.model:
        values["sae"] = values["saes"][-1] if values.get("saes") else ""

    for key, what in (("feature", "feature index"), ("pos", "token position")):
        raw = _last(params, key)
        if raw is None:
            if model != DEFAULT.model:
                values[key] = 0
            continue
        try:
            number = int(raw.strip())
        except ValueError:
            number = -1
        if number < 0:
            problems.append(f"{key}={_shown(raw)} is not a valid {what} (a whole number, 0 or more).")
        else:
            values[key] = number

    for key in ("token", "other"):  # kept exactly as written: a token's leading space is part of it
        token = _last(params, key)
        if token is not None and len(token) <= MAX_NAME_CHARS:
            values[key] = token
        elif token is not None:
            problems.append(f"{key}={_shown(token)} is too long to be one token.")

    for key, options in (
        ("method", METHODS),
        ("baseline", BASELINES),
        ("direction", DIRECTIONS),
        ("kind", TARGET_KINDS),
    ):
        raw = _last(params, key)
        if raw is None:
            continue
        if raw.strip().lower() in options:
            values[key] = raw.strip().lower()
        else:
            problems.append(f"{key}={_shown(raw)} is unknown; use one of: {', '.join(options)}.")

    recipes = _last(params, "recipes")
    if recipes:
        try:
            direction_links.decode(recipes)
            values["recipes"] = recipes
        except FeatureLensError as error:
            problems.append(str(error))

    view = replace(DEFAULT, **values)
    saes = view.saes
    if view.sae and view.sae not in saes:
        saes = (*saes, view.sae)  # the target always takes part in the ranking
    if limits.max_saes is not None and len(saes) > limits.max_saes:
        problems.append(f"{len(saes)} SAEs were asked for; this hosted app ranks at most {limits.max_saes} at once.")
        kept = [s for s in saes if s != view.sae][: limits.max_saes - 1]
        saes = tuple([*kept, view.sae] if view.sae else kept[: limits.max_saes])
    return replace(view, saes=tuple(saes), problems=tuple(problems))


def fingerprint(view: ViewState, *extra: object) -> str:
    """A short stable id of a view, for widget keys that must reset when the view changes."""
    text = repr((sorted(to_params(view).items()), extra))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def target_fingerprint(view: ViewState) -> str:
    """A short stable id of a view's prompt and target alone, for keys of what shows the target (the token strip,
    the features active at its token, the attention heat map): they reset when the target changes, not when only
    the method, the baseline or the SAEs do, since the browser draws an element whose key changed from scratch."""
    where = {
        name: getattr(view, name) for name in ("model", "prompt", "sae", "feature", "pos", "kind", "token", "other")
    }
    return fingerprint(replace(DEFAULT, **where))


def to_params(view: ViewState) -> dict[str, str]:
    """The query parameters of a view (all of them, so a link means the same after defaults change)."""
    out = {key: value for key, value in asdict(view).items() if key in KEYS}
    out["saes"] = ",".join(view.saes)
    return {key: str(out[key]) for key in KEYS} | ({"recipes": view.recipes} if view.recipes else {})


# ---------------------------------------------------------------- session side

_WRITTEN = "_fl_written"  # the query parameters this session last wrote to the address bar
_RESEND = "_fl_resend"  # runs left that send the widgets' values to the browser again (`resend_widgets`)
TRAIL_LENGTH = 8


def start_session() -> None:
    """Seed the widgets' values from the URL on a session's first run, and whenever the URL changed on its own.

    The widgets own the view during a session, and every run writes it to the URL. A run whose URL
    differs from the one last written was not caused by a widget: the browser went Back or Forward
    (Streamlit reruns with that entry's query string) or someone edited the address bar. Then the URL is
    the source of truth and the widgets follow it, so Back restores the previous view instead of being
    overwritten by the session's newer one.

    Later runs also restore any value Streamlit dropped: it clears a widget's value when a run does not
    draw it. `remember` keeps a copy outside the widgets for that. After `resend_widgets` they assign every
    value again, so that the browser is sent it.
    """
    ss = st.session_state
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    written = ss.get(_WRITTEN)
    resend = ss.get(_RESEND, 0) > 0
    if resend:
        ss[_RESEND] -= 1
    if written is not None and (not params or _flat(params) == written):
        for key, value in ss.get("_fl_view", {}).items():
            if key not in ss or resend:
                ss[key] = ss.get(key, value)
        return
    view = parse(params)
    apply_view(view)
    ss["_fl_problems"] = list(view.problems)


def apply_view(view: ViewState) -> None:
    """Give the widgets this view's values (also a callback: a link-like button that opens a whole view)."""
    ss = st.session_state
    for key in KEYS:
        value = getattr(view, key)
        ss[key] = list(value) if key == "saes" else value
    for recipe in direction_links.decode(view.recipes).values():
        add_link_recipe(recipe)


def resend_widgets(runs: int) -> None:
    """Send the widgets' values to the browser again in the session's next `runs` runs.

    For a session whose first run was the frame's fallback (`frame.view`): the browser, switching from the
    legacy page to the navigation's, forgets the sidebar widgets' values after the first full run and shows
    them empty (a blank prompt, feature 0), and would send those blanks back on the visitor's first click. A
    value assigned through `st.session_state` is sent with the widget again, so the browser shows it.
    """
    st.session_state[_RESEND] = runs


def _flat(params: Mapping[str, list[str]]) -> dict[str, str]:
    return {key: values[-1] for key, values in params.items() if values}


def current() -> ViewState:
    """The view as the widgets hold it now."""
    ss = st.session_state
    return ViewState(
        model=str(ss.get("model", DEFAULT.model)),
        saes=tuple(ss.get("saes", DEFAULT.saes)),
        prompt=str(ss.get("prompt", DEFAULT.prompt)),
        sae=str(ss.get("sae") or ""),
        feature=int(ss.get("feature", DEFAULT.feature)),
        pos=int(ss.get("pos", DEFAULT.pos)),
        method=ss.get("method", DEFAULT.method),
        baseline=ss.get("baseline", DEFAULT.baseline),
        direction=ss.get("direction", DEFAULT.direction),
        corrupt=str(ss.get("corrupt") or ""),
        kind=ss.get("kind", DEFAULT.kind),
        token=str(ss.get("token") or ""),
        other=str(ss.get("other") or ""),
        recipes=_recipes_of(tuple(ss.get("saes", DEFAULT.saes))),
    )


_LINK_RECIPES = "_fl_link_recipes"  # {name: Recipe} of the directions this session made or was linked to


def add_link_recipe(recipe: direction_links.Recipe) -> None:
    """Remember how a direction was made, so links to views that use it carry the recipe."""
    st.session_state.setdefault(_LINK_RECIPES, {})[recipe.name] = recipe


def link_recipes() -> dict[str, direction_links.Recipe]:
    """The recipes this session knows; none outside a session's script (the background prefetcher)."""
    try:
        return dict(st.session_state.get(_LINK_RECIPES, {}))
    except Exception:  # no script run context: background work only uses directions the server already has
        return {}


def _recipes_of(saes: tuple[str, ...]) -> str:
    known = link_recipes()
    return direction_links.encode(known[name] for name in saes if name in known)


def remember(view: ViewState) -> None:
    """Keep a copy of the view outside the widgets (see `start_session`), and its target in the trail."""
    ss = st.session_state
    ss["_fl_view"] = {key: list(view.saes) if key == "saes" else getattr(view, key) for key in KEYS}
    here = (view.sae, view.feature, view.pos)
    ss["_fl_trail"] = [here, *[t for t in ss.get("_fl_trail", []) if t != here]][:TRAIL_LENGTH]


def trail() -> list[tuple[str, int, int]]:
    """The targets this session looked at, newest first (the current one included)."""
    return list(st.session_state.get("_fl_trail", []))


def add_notice(text: str) -> None:
    """A message for the next run to show once (for widget callbacks, which cannot draw)."""
    st.session_state.setdefault("_fl_notices", []).append(text)


def take_notices() -> list[str]:
    """Messages left by callbacks; each is shown once."""
    return st.session_state.pop("_fl_notices", [])


def take_problems() -> list[str]:
    """Problems found in the URL this session started with; each is shown once."""
    return st.session_state.pop("_fl_problems", [])


def write_url(view: ViewState) -> None:
    """Rewrite the address bar so a copied URL reopens this exact view.

    A changed URL is one new browser history entry (Streamlit pushes it; during a Back or Forward it
    replaces the entry instead), so each change of view is one step of Back.
    """
    params = to_params(view)
    st.session_state[_WRITTEN] = params
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def set_target(sae: str, feature: int, pos: int, *, explore: bool = True) -> None:
    """Make (sae, feature, pos) the target; for widget callbacks, which run before the widgets.

    With `explore` (a click on a feature), the Explore page ranks that feature next, whatever it ranked before.
    """
    ss = st.session_state
    if sae not in ss.get("saes", []):
        ss["saes"] = [*ss.get("saes", []), sae]
    ss["sae"], ss["feature"], ss["pos"] = sae, int(feature), int(pos)
    if explore:
        ss["kind"] = "feature"


def apply_example(title: str, examples: Sequence[Any] = EXAMPLES) -> None:
    """Load one worked example: its prompt and target, on the built-in model."""
    for example in examples:
        if example.title == title:
            st.session_state["prompt"] = example.prompt
            set_target(example.sae, example.feature, example.position)
