"""Reusable pieces of the screens: the shared sidebar, escaped token highlighting, charts that
set the target when clicked, result tables with downloads, and the error boundary.
"""

from __future__ import annotations

import html
import json
import logging
import re
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from feature_lens_app import hosting, resources, state
from feature_lens_app.examples import EXAMPLES
from feature_lens_core import catalog, charts
from feature_lens_core.errors import FeatureLensError

log = logging.getLogger("feature_lens_app")
T = TypeVar("T")
BUG_PREFIX = "Something went wrong"
# Markdown punctuation that turns user text into emphasis, code, links, HTML, math, strikethrough, tables, emoji
# or headings. Underscores are left alone: SAE and hook names are full of them, and intraword ones format nothing.
_MARKDOWN = re.compile(r"([\\`*\[\]<>$~|:#])")


# ------------------------------------------------------------------ text in markdown


def plain(text: str) -> str:
    """`text` escaped for Streamlit's markdown, so a prompt, token, name or URL value is shown exactly as typed."""
    return _MARKDOWN.sub(r"\\\1", text)


def code(text: str) -> str:
    """`text` as an inline code span that no backtick inside it can close early."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ------------------------------------------------------------------ errors


# Core messages that describe an empty result rather than a mistake: shown as information, not as errors
# (e.g. a target in the first layer has nothing upstream). Matched on the core's wording.
NOT_ERRORS = ("Nothing to rank",)


def show_failure(exc: Exception, what: str) -> None:
    """One message for a failure: the core's own words for bad input, an apology (not a traceback) for a bug."""
    if isinstance(exc, FeatureLensError):
        if str(exc).startswith(NOT_ERRORS):
            st.info(plain(str(exc)), icon=":material/info:")
        else:
            st.error(plain(str(exc)), icon=":material/error:")
        return
    st.error(
        f"{BUG_PREFIX} while {what} ({type(exc).__name__}). The rest of the page still works; "
        "try other inputs, and please report this with the page's link.",
        icon=":material/bug_report:",
    )


def attempt(compute: Callable[[], T], what: str) -> tuple[T | None, Exception | None]:
    """Run `compute`; return its result, or the exception to show (bugs are logged with their traceback).

    Streamlit's own rerun/stop signals derive from BaseException and pass straight through.
    """
    try:
        return compute(), None
    except FeatureLensError as exc:
        return None, exc
    except Exception as exc:  # noqa: BLE001 (the boundary that keeps tracebacks off the page)
        log.error("while %s:\n%s", what, traceback.format_exc())
        return None, exc


@contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Run a block; if it fails, say so in one message and let the rest of the page carry on."""
    try:
        yield
    except FeatureLensError as exc:
        show_failure(exc, what)
    except Exception as exc:  # noqa: BLE001 (the boundary that keeps tracebacks off the page)
        log.error("while %s:\n%s", what, traceback.format_exc())
        show_failure(exc, what)


def show_failures(failures: Sequence[tuple[Exception, str]]) -> None:
    """Several failures, each distinct message once (one bad input often fails every computation alike)."""
    seen: set[str] = set()
    for exc, what in failures:
        text = f"{type(exc).__name__}: {exc}"
        if text not in seen:
            seen.add(text)
            show_failure(exc, what)


def prompt_tokens(view: state.ViewState) -> list[str] | None:
    """Load the model and read the prompt, which every part of a page needs.

    On failure (hub offline, empty or too long prompt...) shows the one message, offers the built-in
    model when another one failed, and returns None: the page then draws nothing that needs them.
    """
    with st.spinner(loading_text(view.model), show_time=True):
        tokens, failure = attempt(lambda: resources.tokens(view.model, view.prompt), "reading the prompt")
    if failure is not None:
        show_failure(failure, "reading the prompt")
        if view.model != catalog.BUILTIN_MODEL:
            st.button("Use the built-in model instead", on_click=use_builtin_model, icon=":material/undo:")
        return None
    hub = [name for name in view.saes if name in catalog.hub_saes()] if view.model != catalog.BUILTIN_MODEL else []
    for name in hub:
        # One named spinner per download; a failure is left for the computations that need the SAE to show.
        with st.spinner(loading_text(view.model, name), show_time=True):
            attempt(lambda name=name: resources.sae(view.model, name), f"loading SAE {name}")
    return tokens


def loading_text(model: str, sae: str | None = None) -> str:
    """What the spinner says while a model or SAE loads (Streamlit shows it only if that takes over half a second).

    A hub model or SAE is downloaded on its first use on this server, which can take minutes, so the text
    says so and names it; Hugging Face's byte-level progress bars go to the server's terminal.
    """
    if sae is None and model == catalog.BUILTIN_MODEL:
        return "Loading the built-in model…"
    what = f"SAE {sae}" if sae is not None else f"model {model}"
    return f"Loading {plain(what)}: the first use on this server downloads it from the Hugging Face hub…"


# ------------------------------------------------------------------ token highlighting


def _visible(text: str) -> str:
    """Escape a token for HTML, making whitespace and control characters visible rather than active."""
    out = []
    for char in text:
        if char == "\n":
            out.append("⏎")
        elif char == "\t":
            out.append("⇥")
        elif unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return html.escape("".join(out), quote=True)


def highlighted_tokens(tokens: Sequence[str], values: Sequence[float], target: int | None = None) -> str:
    """HTML for a row of tokens shaded by activation; everything the user typed is escaped.

    The target position gets an outline; each token's tooltip shows its position and value.
    """
    peak = max([v for v in values if v > 0], default=0.0)
    spans = []
    for position, (token, value) in enumerate(zip(tokens, values, strict=False)):
        alpha = min(max(value / peak, 0.0), 1.0) if peak > 0 else 0.0
        outline = "outline:2px solid #222;" if position == target else ""
        spans.append(
            f'<span title="position {position}: {value:.3f}" style="background:rgba(255,127,14,{alpha:.2f});'
            f'{outline}border-radius:3px;padding:1px 2px;margin:1px;white-space:pre;">{_visible(token)}</span>'
        )
    return (
        '<div style="font-family:ui-monospace,monospace;line-height:2.1;font-size:0.95rem;'
        f'overflow-wrap:anywhere;">{"".join(spans)}</div>'
    )


def example_html(before: str, token: str, after: str) -> str:
    """One top-activating snippet with its token highlighted, escaped."""
    return (
        f'<div style="font-family:ui-monospace,monospace;font-size:0.9rem;">…{_visible(before)}'
        f'<span style="background:rgba(255,127,14,0.85);border-radius:3px;padding:0 2px;">{_visible(token)}</span>'
        f"{_visible(after)}…</div>"
    )


# ------------------------------------------------------------------ sidebar


def _model_changed() -> None:
    ss = st.session_state
    model = ss["model"]
    try:
        names = state.default_saes(model, resources.sae_options)
    except FeatureLensError:
        names = ()
    ss["saes"] = list(names)
    ss["sae"] = names[-1] if names else ""
    ss["feature"], ss["pos"] = 0, 0
    if model == catalog.BUILTIN_MODEL:
        ss["prompt"] = EXAMPLES[0].prompt
        state.set_target(EXAMPLES[0].sae, EXAMPLES[0].feature, EXAMPLES[0].position)


def use_builtin_model() -> None:
    """Switch to the built-in model and its worked example (a callback)."""
    st.session_state["model"] = catalog.BUILTIN_MODEL
    _model_changed()


def _prompt_changed() -> None:
    """After the user edits the prompt, keep the target if it still fires; otherwise move it to a feature that does.

    Positions mean nothing across prompts, so an unchanged target would usually just fail with "not active".
    The target's SAE is kept; the new target is its strongest feature on the last token of the new prompt.
    """
    ss = st.session_state
    try:
        acts = resources.activations(ss["model"], ss["sae"], ss["prompt"])
    except Exception:  # noqa: BLE001 (an unusable prompt is reported by the page itself)
        return
    fires = acts[(acts["position"] == ss["pos"]) & (acts["feature"] == ss["feature"])]
    last = acts[acts["position"] == acts["position"].max()] if len(acts) else acts
    if len(fires) or last.empty:
        return
    best = last.sort_values("activation", ascending=False).iloc[0]
    state.set_target(ss["sae"], int(best["feature"]), int(best["position"]))
    st.toast(
        f"Feature #{ss['feature']} is the new target: the strongest on the prompt's last token "
        f"({plain(charts.display_token(str(best['token'])))}); the old one does not fire there.",
        icon=":material/my_location:",
    )


def _saes_changed() -> None:
    ss = st.session_state
    if ss.get("sae") not in ss["saes"]:
        ss["sae"] = ss["saes"][-1] if ss["saes"] else ""


def _example_chosen() -> None:
    title = st.session_state.get("_example")
    if title:
        state.apply_example(title)
    st.session_state["_example"] = None


def _with(options: Sequence[str], *current: str) -> list[str]:
    """Options that always include the current values, so a widget shows what the URL asked for."""
    return list(dict.fromkeys([*options, *(c for c in current if c)]))


def sidebar() -> None:
    """The controls every page shares. Values live in `st.session_state` under the query-param names."""
    limits = hosting.limits()
    ss = st.session_state
    with st.sidebar:
        models = _with(resources.model_options(), ss["model"])
        st.selectbox(
            "Model",
            models,
            key="model",
            on_change=_model_changed,
            format_func=lambda m: catalog.BUILTIN_MODEL_TITLE if m == catalog.BUILTIN_MODEL else m,
            help="The built-in model runs anywhere, offline. Hub models are downloaded on first use.",
        )
        if ss["model"] == catalog.BUILTIN_MODEL:
            st.selectbox(
                "Examples",
                [e.title for e in EXAMPLES],
                index=None,
                key="_example",
                placeholder="Load a worked example…",
                on_change=_example_chosen,
            )
        st.text_area("Prompt", key="prompt", height=100, max_chars=limits.max_prompt_chars, on_change=_prompt_changed)
        try:
            options = resources.sae_options(ss["model"])
        except FeatureLensError:
            options = []
        st.multiselect(
            "SAEs",
            _with(options, *ss["saes"]),
            key="saes",
            on_change=_saes_changed,
            max_selections=limits.max_saes,
            accept_new_options=limits.allow_local_paths,
            help="Features of these SAEs are ranked."
            + (" To add a local SAE folder, type its path and press Enter." if limits.allow_local_paths else ""),
        )
        st.markdown("**Target feature**")
        st.selectbox("Target SAE", _with(ss["saes"], ss["sae"]), key="sae")
        left, right = st.columns(2)
        left.number_input("Feature", min_value=0, step=1, key="feature")
        right.number_input("Token position", min_value=0, step=1, key="pos", help="0 is the start-of-text token.")
        st.radio("Method", list(state.METHODS), key="method", format_func=state.METHODS.__getitem__)
        st.radio("Baseline", list(state.BASELINES), key="baseline", format_func=state.BASELINES.__getitem__)
        # Always drawn (disabled when unused) so the text survives switching baselines.
        st.text_input(
            "Corrupt prompt",
            key="corrupt",
            disabled=ss["baseline"] != "corrupt",
            max_chars=limits.max_prompt_chars,
            help="Must have as many tokens as the prompt.",
        )
        st.radio("Direction", list(state.DIRECTIONS), key="direction", format_func=state.DIRECTIONS.__getitem__)
        if limits.hosted:
            st.caption(
                f"Hosted mode: prompts up to {limits.max_prompt_chars} characters, at most {limits.max_saes} SAEs, "
                f"activation patching over the top {limits.candidates} candidates."
            )


def share_link(view: state.ViewState) -> None:
    """The view's link, with a copy button."""
    try:
        base = str(st.context.url or "").split("?", 1)[0]
        base = base if urlparse(base).path else base + "/"
    except Exception:  # noqa: BLE001 (no browser context, e.g. in tests)
        base = ""
    with st.sidebar.expander("Share this view"):
        st.code(f"{base}?{urlencode(state.to_params(view))}", language=None, wrap_lines=True)
        st.caption("Anyone opening this link sees the same model, SAEs, prompt, target and method.")


# ------------------------------------------------------------------ target and results


def target_text(view: state.ViewState, token: str | None = None) -> str:
    """A one-line description of the target for headings (markdown; user text is escaped)."""
    label = resources.label(view.model, view.sae, view.feature)
    named = f" *{plain(label)}*" if label and not label.startswith("#") else ""
    at = f" at {plain(charts.display_token(token))}" if token is not None else ""
    return f"{code(view.sae)} feature **#{view.feature}**{named}{at} (position {view.pos})"


def _label_of(model: str):  # noqa: ANN202
    return lambda sae, feature: resources.label(model, sae, feature)


def labelled(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """Ranking rows with readable bar labels."""
    return charts.add_labels(frame, _label_of(model))


def _pick_target(key: str, param: str, position: int | None = None) -> bool:
    """Chart-click callback: the clicked mark becomes the target, at its own position or else `position`.

    Returns whether it did: nothing may be selected, and error nodes cannot be targets.
    """
    rows = charts.selected_rows(st.session_state.get(key), param)
    if not rows:
        return False
    row = rows[0]
    if row.get("kind") == "error" or int(row.get("feature", -1)) < 0:
        st.toast("An error node is what the SAE fails to explain; it cannot be a target.", icon=":material/info:")
        return False
    state.set_target(str(row["sae"]), int(row["feature"]), int(row.get("position", position or 0)))
    return True


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for a long computation; yields the `progress(done, total)` callback the core takes."""
    bar = st.progress(0.0, text=f"{what}…")

    def report(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{what}: {done} of {total}")

    try:
        yield report
    finally:
        bar.empty()


OPEN_FEATURE = "open_feature"


def open_clicked_feature(key: str, position: int | None = None) -> Callable[[], None]:
    """Chart-click callback for graphs and maps: the clicked feature becomes the target (at the node's
    position, or `position`) and `follow_to_feature` opens its Feature page on the rerun."""

    def callback() -> None:
        if _pick_target(key, charts.PICK, position):
            st.session_state[OPEN_FEATURE] = True

    return callback


def follow_to_feature() -> None:
    """Open the Feature page if a click asked for it (switching pages is not allowed inside a callback)."""
    if st.session_state.pop(OPEN_FEATURE, False):
        st.switch_page("pages/feature.py")


def draw_chart(chart: alt.TopLevelMixin, where: DeltaGenerator | None = None, **options: Any) -> Any:
    """Draw an Altair chart; `options` as for `st.vega_lite_chart` (key, on_select, width, height...).

    `st.altair_chart` validates the chart against Vega-Lite's JSON schema on every run, about 0.06 s a
    chart here, which a click pays once per chart on the page. Every builder in `feature_lens_core.charts`
    is validated by the tests instead (tests/app/test_charts.py), so the spec is passed on as it is.
    """
    return (where or st).vega_lite_chart(spec=chart.to_dict(validate=False), **options)


def ranking_chart(frame: pd.DataFrame, title: str, key: str) -> None:
    """A ranked bar chart; clicking a bar makes it the new target."""
    if frame.empty:
        st.info(f"{title}: nothing to rank. Add SAEs on this side of the target in the sidebar.")
        return
    draw_chart(
        charts.ranked_bars(frame, title),
        key=key,
        on_select=lambda: _pick_target(key, charts.PICK),
        selection_mode=charts.PICK,
        width="stretch",
    )


def downloads(frame: pd.DataFrame, stem: str, key: str) -> None:
    """CSV and JSON downloads of exactly the rows shown (a download does not rerun the page: nothing changed)."""
    left, right = st.columns(2)
    left.download_button(
        "Download CSV",
        frame.to_csv(index=False),
        f"{stem}.csv",
        "text/csv",
        key=f"{key}_csv",
        width="stretch",
        on_click="ignore",
    )
    records = json.dumps(json.loads(frame.to_json(orient="records")), indent=1)
    right.download_button(
        "Download JSON",
        records,
        f"{stem}.json",
        "application/json",
        key=f"{key}_json",
        width="stretch",
        on_click="ignore",
    )


NUMBER_FORMAT = {
    "activation": st.column_config.NumberColumn(format="%.3f"),
    "score": st.column_config.NumberColumn(format="%+.4f"),
}


# ------------------------------------------------------------------ the prompt's tokens


def feature_on_tokens(tokens: Sequence[str], acts: pd.DataFrame, feature: int) -> pd.DataFrame:
    """One feature's activation at every token (0 where it does not fire)."""
    fired = acts[acts["feature"] == feature].groupby("position")["activation"].max()
    values = [float(fired.get(position, 0.0)) for position in range(len(tokens))]
    return pd.DataFrame({"position": range(len(tokens)), "token": list(tokens), "activation": values})


def _pick_from_table(key: str, rows: list[dict], sae: str) -> None:
    picked = st.session_state.get(key)
    selected = picked.selection.rows if picked is not None else []
    if selected:
        row = rows[selected[0]]
        state.set_target(sae, int(row["feature"]), int(row["position"]))


def token_panel(view: state.ViewState, tokens: list[str]) -> None:
    """The prompt shaded by the target's activation; click a token to list the features active there."""
    acts = resources.activations(view.model, view.sae, view.prompt)
    strip = feature_on_tokens(tokens, acts, view.feature)
    st.html(highlighted_tokens(tokens, strip["activation"].tolist(), view.pos))
    key = f"strip_{state.fingerprint(view)}"
    event = draw_chart(
        charts.token_strip(strip, view.pos),
        key=key,
        on_select="rerun",
        selection_mode=charts.TOKEN,
        width="stretch",
        height=64,
    )
    picked = charts.selected_rows(event, charts.TOKEN)
    where = int(picked[0]["position"]) if picked else min(view.pos, len(tokens) - 1)
    here = acts[acts["position"] == where].sort_values("activation", ascending=False).head(12)
    here = here.assign(label=[resources.label(view.model, view.sae, int(f)) for f in here["feature"]])
    st.markdown(
        f"**Features of {code(view.sae)} active at {plain(charts.display_token(tokens[where]))} (position {where})** "
        "· click a token above to look elsewhere, click a row to make it the target"
    )
    if here.empty:
        st.caption("No feature of this SAE fires at this token.")
        return
    rows = here[["feature", "label", "activation", "position"]].to_dict("records")
    table_key = f"active_{key}_{where}"
    st.dataframe(
        here[["feature", "label", "activation"]],
        key=table_key,
        on_select=lambda: _pick_from_table(table_key, rows, view.sae),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(here), 300),
        column_config={"activation": NUMBER_FORMAT["activation"]},
    )


def neighbour_buttons(rows: pd.DataFrame, key: str) -> None:
    """One button per ranked feature; clicking it makes that feature the target."""
    if rows.empty:
        st.caption("None: add SAEs on this side of the target in the sidebar.")
        return
    for index, row in enumerate(rows.to_dict("records")):
        st.button(
            f"{plain(row['label'])}  ({row['score']:+.3f})",
            key=f"{key}_{index}",
            on_click=state.set_target,
            args=(str(row["sae"]), int(row["feature"]), int(row["position"])),
            width="stretch",
        )
