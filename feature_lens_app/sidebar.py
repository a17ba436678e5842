"""The controls every page shares, in the sidebar: model, prompt, SAEs, target, method; the recent targets;
the view's link. Values live in `st.session_state` under the query-parameter names (see `state`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse

import streamlit as st

import feature_lens_core as flc
from feature_lens_app import hosting, resources, state, warmup
from feature_lens_app.charts import display_token
from feature_lens_app.examples import DEFAULT_SAES, EXAMPLES
from feature_lens_app.markup import plain
from feature_lens_core import catalog

Choice = TypeVar("Choice", bound=str)


def model_title(model: str) -> str:
    """The model's name as the app shows it."""
    return catalog.BUILTIN_MODEL_TITLE if model == catalog.BUILTIN_MODEL else model


def _picker_title(model: str) -> str:
    """A model as the picker lists it: hub models in the local cache say so, with their size."""
    size = resources.cached_models().get(model)
    if size is None:
        return model_title(model)
    shown = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{max(size / 1e6, 0.1):.1f} MB"
    return f"{model_title(model)} (in the local cache, {shown})"


def _model_changed() -> None:
    """A new model keeps the prompt; SAEs start from the model's defaults and the target moves onto them."""
    ss = st.session_state
    model = ss["model"]
    names: tuple[str, ...] = ()
    with contextlib.suppress(flc.FeatureLensError):
        names = DEFAULT_SAES if model == catalog.BUILTIN_MODEL else state.default_saes(model, resources.sae_options)
    ss["saes"] = list(names)
    ss["sae"] = names[-1] if names else ""
    ss["feature"], ss["pos"] = 0, 0
    example = next((e for e in EXAMPLES if e.prompt == ss.get("prompt")), None)
    if example is not None and model == catalog.BUILTIN_MODEL:
        state.set_target(example.sae, example.feature, example.position, explore=False)
    elif names:
        _retarget(quiet=True)


def use_builtin_model() -> None:
    """Switch to the built-in model, keeping the prompt (a callback)."""
    st.session_state["model"] = catalog.BUILTIN_MODEL
    _model_changed()


def _retarget(*, quiet: bool = False) -> None:
    """Keep the target if it fires on the prompt; otherwise move it to the strongest feature of its SAE on the
    prompt's last token. Positions mean nothing across prompts, so an unchanged target would usually just fail
    with "not active"."""
    ss = st.session_state
    try:
        acts = resources.activations(ss["model"], ss["sae"], ss["prompt"])
    except Exception:  # an unusable prompt is reported by the page itself
        return
    fires = acts.loc[(acts["position"] == ss["pos"]) & (acts["feature"] == ss["feature"])]
    last = acts.loc[acts["position"] == acts["position"].max()] if len(acts) else acts
    if len(fires) or last.empty:
        return
    best = last.sort_values("activation", ascending=False).iloc[0]
    state.set_target(ss["sae"], int(best["feature"]), int(best["position"]), explore=False)
    if not quiet:
        st.toast(
            f"Feature #{ss['feature']} is the new target: the strongest on the prompt's last token "
            f"({plain(display_token(str(best['token'])))}); the old one does not fire there.",
            icon=":material/my_location:",
        )


def _prompt_changed() -> None:
    """A prompt over the hosted cap is cut with a notice (never dropped); then the target follows the prompt."""
    ss = st.session_state
    cap = hosting.limits().max_prompt_chars
    if cap is not None and len(ss["prompt"]) > cap:
        state.add_notice(
            f"The prompt was {len(ss['prompt'])} characters long; this app takes at most {cap}, "
            f"so only the first {cap} are kept."
        )
        ss["prompt"] = ss["prompt"][:cap]
    _retarget()


def _saes_changed() -> None:
    ss = st.session_state
    if ss.get("sae") not in ss["saes"]:
        ss["sae"] = ss["saes"][-1] if ss["saes"] else ""


def _example_chosen() -> None:
    title = st.session_state.get("_example")
    if title:
        state.apply_example(title)
    st.session_state["_example"] = None


def _baseline_changed() -> None:
    """The corrupt baseline needs a second prompt: propose one of the same length instead of failing."""
    ss = st.session_state
    if ss["baseline"] == "corrupt" and not str(ss.get("corrupt") or "").strip():
        with contextlib.suppress(flc.FeatureLensError):
            ss["corrupt"] = resources.corrupt_proposal(ss["model"], ss["prompt"])


def _with(options: Sequence[str], *current: str) -> list[str]:
    """Options that always include the current values, so a widget shows what the URL asked for."""
    return list(dict.fromkeys([*options, *(c for c in current if c)]))


def _sizes(model: str, sae: str, prompt: str) -> tuple[int | None, int | None, int | None]:
    """The SAE's feature count, the prompt's token count and the model's context, where they can be read."""
    features = tokens = context = None
    with contextlib.suppress(Exception):
        features = resources.d_sae(model, sae)
    with contextlib.suppress(Exception):
        tokens = len(resources.tokens(model, prompt))
    with contextlib.suppress(Exception):
        context = resources.context_length(model)
    return features, tokens, context


def _index_input(label: str, key: str, size: int | None, help: str) -> None:
    """A whole number from 0 to `size` - 1 (unbounded when the size cannot be read).

    Never bounded below the current value: a link may ask for more, and the page then says what is
    wrong, where a bound under the value would stop the widget from drawing at all.
    """
    top = max(size - 1, int(st.session_state[key])) if size else None
    st.number_input(label, min_value=0, max_value=top, step=1, key=key, help=help)


def choice_radio(label: str, choices: Mapping[Choice, str], key: str, help: str, **options: Any) -> None:
    """A radio over `choices` (value -> the words shown for it) whose value lives under `key`."""
    st.radio(label, list(choices), key=key, format_func=choices.__getitem__, help=help, **options)


def sidebar() -> None:
    """The controls every page shares."""
    limits = hosting.limits()
    ss = st.session_state
    # While the built-in model loads in the background, nothing here waits for it: sizes and the SAE list are
    # read on the run after it has loaded (the page reruns then).
    loading = warmup.model_loading(ss["model"])
    if loading:
        warmup.rerun_when_loaded()
    with st.sidebar:
        st.selectbox(
            "Model",
            _with(resources.model_options(), ss["model"]),
            key="model",
            on_change=_model_changed,
            format_func=_picker_title,
            help="The language model under study. The built-in one is a small GPT-2-style model (3 layers) trained "
            "on Shakespeare; it runs anywhere, offline. Hub models are downloaded on first use; those already in "
            "this machine's Hugging Face cache say so (offline, only they are listed).",
        )
        st.caption("Loading the model…" if loading else f"Runs on: {resources.device()}")
        if ss["model"] == catalog.BUILTIN_MODEL:
            st.selectbox(
                "Examples",
                [e.title for e in EXAMPLES],
                index=None,
                key="_example",
                placeholder="Load a worked example…",
                on_change=_example_chosen,
                help="A prompt and a target feature that fires on it, checked on the built-in model.",
            )
        features, n_tokens, context = (None, None, None) if loading else _sizes(ss["model"], ss["sae"], ss["prompt"])
        st.text_area(
            "Prompt",
            key="prompt",
            height=100,
            on_change=_prompt_changed,
            help="The text the model reads. Positions count its tokens from 0, the start-of-text token."
            + (f" This model reads at most {context} tokens." if context else "")
            + (f" At most {limits.max_prompt_chars} characters here." if limits.hosted else ""),
        )
        if n_tokens is not None and context is not None:
            st.caption(f"{n_tokens} of {context} tokens")
        try:
            options = [] if loading else resources.sae_options(ss["model"])
        except flc.FeatureLensError:
            options = []
        st.multiselect(
            "SAEs",
            _with(options, *ss["saes"]),
            key="saes",
            on_change=_saes_changed,
            max_selections=limits.max_saes,
            accept_new_options=limits.allow_local_paths,
            help="Sparse autoencoders that translate one place in the model into features; the features of these "
            "SAEs are ranked."
            + (" To add a local SAE folder, type its path and press Enter." if limits.allow_local_paths else ""),
        )
        st.markdown("**Target feature**")
        st.selectbox(
            "Target SAE",
            _with(ss["saes"], ss["sae"]),
            key="sae",
            help="The SAE the target feature belongs to.",
        )
        left, right = st.columns(2)
        with left:
            _index_input(
                "Feature",
                "feature",
                features,
                "The target feature's number in its SAE" + (f" (0 to {features - 1})." if features else "."),
            )
        with right:
            _index_input(
                "Token position",
                "pos",
                n_tokens,
                "Where in the prompt the target is read: 0 is the start-of-text token"
                + (f", {n_tokens - 1} the last token." if n_tokens else "."),
            )
        choice_radio(
            "Method",
            state.METHODS,
            "method",
            "How a feature's effect on the target is measured. Activation patching is exact and slowest; the "
            "others estimate it quickly. How it works explains each; Compare methods checks them against each other.",
        )
        choice_radio(
            "Baseline",
            state.BASELINES,
            "baseline",
            "What a feature is set to when it is switched off: zero, its average activation, or its value on "
            "a second prompt of the same length.",
            on_change=_baseline_changed,
        )
        # Always drawn (disabled when unused) so the text survives switching baselines.
        st.text_input(
            "Corrupt prompt",
            key="corrupt",
            disabled=ss["baseline"] != "corrupt",
            help="For the corrupt baseline: a prompt with as many tokens as the prompt, differing where it matters.",
        )
        choice_radio(
            "Direction",
            state.DIRECTIONS,
            "direction",
            "Upstream ranks the features that drive the target; downstream, the features it drives (a logit, the "
            "model's output, has nothing downstream).",
        )
        if limits.hosted:
            st.caption(
                f"Hosted mode: prompts up to {limits.max_prompt_chars} characters, at most {limits.max_saes} SAEs, "
                f"activation patching over the top {limits.candidates} candidates."
            )


def trail(view: state.ViewState) -> None:
    """The last targets visited, newest first; clicking one makes it the target again."""
    earlier = [ref for ref in state.trail() if ref != (view.sae, view.feature, view.pos)]
    if not earlier:
        return
    with st.sidebar.expander("Recent targets", expanded=True):
        for index, (sae, feature, pos) in enumerate(earlier):
            label = resources.label(view.model, sae, feature)
            st.button(
                f"{sae} #{feature} @{pos}" + (f" · {label}" if label else ""),
                key=f"trail_{index}",
                on_click=state.set_target,
                args=(sae, feature, pos),
                icon=":material/history:",
                width="stretch",
                help="Make this earlier target the target again (the browser's Back button works too).",
            )


def share_link(view: state.ViewState) -> None:
    """The view's link, with a copy button."""
    try:
        base = str(st.context.url or "").split("?", 1)[0]
        base = base if urlparse(base).path else base + "/"
    except Exception:  # no browser context, e.g. in AppTest
        base = ""
    with st.sidebar.expander("Share this view"):
        st.code(f"{base}?{urlencode(state.to_params(view))}", language=None, wrap_lines=True)
        st.caption("Anyone opening this link sees the same model, SAEs, prompt, target and method.")
