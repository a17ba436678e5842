"""The Feature page's dashboard: cached corpus passes and dashboards, and the widgets that draw them.

An SAE is read over its corpus once per process (`st.cache_resource`: its sparse activations are shared,
not copied, by every session); each feature's dashboard is then a cheap lookup kept in `st.cache_data`.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import streamlit as st

from feature_lens_app import charts, hosting, interactions, resources, state, token_panel
from feature_lens_app.boundary import shown_errors
from feature_lens_app.loading import progress_bar
from feature_lens_app.markup import code, plain, visible_html
from feature_lens_core import batch, corpus_edges, dashboard, feature_data
from feature_lens_core.zoo.causal_panels import N_PROMPTS, PROMPT_TOKENS

SOURCES = {"held-out": "The held-out plays (shipped with feature-lens)", "text": "A text I paste"}
NARROW = {"before": 10, "after": 4}  # tokens around an example when the wide context is off
PAGE = "pages/feature.py"


@st.cache_resource(max_entries=4, show_spinner=False)
def _activations(model_name: str, sae_name: str, text: str | None) -> dashboard.CorpusActivations:
    model, sae = resources.model(model_name), resources.sae(model_name, sae_name)
    corpus = dashboard.held_out_corpus(model) if text is None else dashboard.text_corpus(model, text)
    what = "the held-out plays" if text is None else "your text"
    with progress_bar(f"Reading {what} with {sae_name} ({len(corpus.windows)} windows)") as report:
        return dashboard.corpus_activations(model, sae, corpus, progress=report)


@st.cache_data(max_entries=hosting.limits().cache_entries, show_spinner=False)
def board(
    model_name: str, sae_name: str, feature: int, text: str | None, others: tuple[str, ...]
) -> dashboard.FeatureDashboard:
    """One feature's dashboard on the held-out plays (`text` None) or on `text`; neighbours also in `others`."""
    loaded = resources.saes(model_name, others) if others else {}
    return dashboard.feature_dashboard(
        resources.model(model_name),
        resources.sae(model_name, sae_name),
        _activations(model_name, sae_name, text),
        feature,
        name=sae_name,
        others=loaded,
    )


def feature_link(view: state.ViewState, sae: str, feature: int, label: str) -> None:
    """A link to another feature's page that keeps the rest of the view (prompt, SAEs, method...)."""
    saes = view.saes if sae in view.saes else (*view.saes, sae)
    params = state.to_params(replace(view, sae=sae, feature=feature, saes=saes))
    st.page_link(PAGE, label=label, query_params=params)


def stepper(view: state.ViewState, d_sae: int) -> None:
    """Previous / next feature, and a search of the SAE's features by label or number."""
    buttons, search = st.columns([1, 2], vertical_alignment="bottom")
    row = buttons.container(horizontal=True, gap="small")  # side by side even on a phone
    row.button(
        "Previous",
        icon=":material/chevron_left:",
        disabled=view.feature <= 0,
        on_click=state.set_target,
        args=(view.sae, view.feature - 1, view.pos),
    )
    row.button(
        "Next",
        icon=":material/chevron_right:",
        disabled=view.feature >= d_sae - 1,
        on_click=state.set_target,
        args=(view.sae, view.feature + 1, view.pos),
    )
    query = search.text_input(
        "Find a feature",
        key="_feature_search",
        placeholder='a label or token, e.g. " thou", or a number',
        help="Searches this SAE's automatic labels (which quote the tokens it fires on) and feature numbers",
    )
    if query.strip():
        labels = resources.labels(view.model, view.sae)
        found = dashboard.search_features(list(labels) or [""] * d_sae, query)
        if not found:
            st.caption(f"No feature of {code(view.sae)} has {plain(repr(query))} in its label.")
        with st.container(horizontal=True, gap="small"):
            for feature in found[:12]:
                name = labels[feature] if feature < len(labels) else ""
                feature_link(view, view.sae, feature, f"#{feature} {plain(name)}")


def source_text(view: state.ViewState, has_shipped: bool) -> str | None:
    """Which corpus the dashboard reads: None for the held-out plays, or the text the user pasted and applied."""
    choice = st.radio(
        "Compute the histograms and examples from",
        list(SOURCES),
        format_func=SOURCES.__getitem__,
        key="_dash_source",
        horizontal=True,
        help=(
            "The built-in SAEs' shipped examples come from the held-out plays. Any text works for any SAE: "
            "it is read once per SAE (with a progress bar), then every feature of that SAE is instant."
        ),
    )
    if choice == "held-out":
        if not has_shipped:
            st.caption(f"{code(view.sae)} ships no dashboard data, so it reads the held-out plays as text now.")
        return None
    with st.form("_dash_text_form", border=False):
        typed = st.text_area("Your text (documents may be separated by the model's end-of-text token)", height=120)
        applied = st.form_submit_button("Read this text")
    if applied:
        st.session_state["_dash_text"] = typed
    text = st.session_state.get("_dash_text", "")
    if not text.strip():
        st.info("Paste a text and press *Read this text*.")
        return None
    return text


def figures(found: dashboard.FeatureDashboard) -> None:
    """The density figures, then the histograms of the activations and of the logit effects."""
    cells = st.columns(4)
    share = f"{found.n_active:,} of {found.n_text:,} text tokens"
    cells[0].metric("Share of tokens it fires on", f"{found.density:.3%}", help=share)
    cells[1].metric("Mean activation", f"{found.mean_activation:.3f}", help="Over every text token, silent ones as 0")
    cells[2].metric("Largest activation", f"{found.max_activation:.3f}")
    cells[3].metric("Text tokens read", f"{found.n_text:,}")
    left, right = st.columns(2)
    if found.activations.counts:
        chart = charts.histogram_bars(
            found.activations.edges, found.activations.counts, title="Activations where it fires", value="activation"
        )
        interactions.draw_chart(chart, left, key="hist_activations", width="stretch")
    else:
        left.info("It never fires on this text.")
    chart = charts.histogram_bars(
        found.logits.edges,
        found.logits.counts,
        title="Direct effect on every output token's logit",
        value="logit effect",
        colour="#6baed6",
    )
    interactions.draw_chart(chart, right, key="hist_logits", width="stretch")


def label_evidence(found: dashboard.FeatureDashboard) -> None:
    """What the feature's label rests on, one click away: the tokens carrying its activation on this corpus."""
    evidence = found.evidence
    if evidence is None or not evidence.parts:
        return
    with st.expander(f"Why this label: {evidence.text}", expanded=False):
        st.caption(
            f"Read off all {evidence.n_active:,} tokens it fires on here: each token's share of its summed activation, "
            "and the token the model most often read just before it (with its share of that token's activation); "
            "after the arrow, the output token it promotes where that stands out of its logit effects. "
            + (
                f"The shipped label, read the same way off the held-out plays: **{plain(found.label)}**."
                if found.label and not found.label.startswith("#") and found.label != evidence.text
                else ""
            )
        )
        st.table(
            [
                {
                    "token": repr(part.token),
                    "share of activation": f"{part.share:.1%}",
                    "usually after": "BOS" if part.before is None else repr(part.before),
                    "share of that token's activation": f"{part.before_share:.0%}",
                }
                for part in evidence.parts
            ]
        )


def example_html(example: dashboard.Context, peak: float) -> str:
    """One example, every token shaded by the feature's activation (`peak` is full colour), its token outlined."""
    marker = (
        '<span title="the model read only its start-of-text token before this one" '
        'style="color:#555;font-size:0.8rem;">⟪start⟫ </span>'
        if example.only_bos_before
        else ""
    )
    row = token_panel.highlighted_tokens(example.tokens, example.activations, example.peak, peak=peak)
    before, after = ("<span>…</span>" if cut else "" for cut in example.cut)  # the window holds more there
    return f'<div style="display:flex;align-items:baseline;gap:4px;">{marker}{before}{row}{after}</div>'


def examples(found: dashboard.FeatureDashboard) -> None:
    """The top examples and one tab per activation quantile, each example shaded token by token."""
    wide = st.toggle("Wider context", key="_dash_wide", help="All the text its window holds around each example")
    if not found.groups:
        st.caption("It never fires on this text, so there are no examples.")
        return
    tabs = st.tabs([group.title for group in found.groups])
    for tab, group in zip(tabs, found.groups, strict=True):
        with tab:
            st.caption(
                f"Activations {group.low:.3f} to {group.high:.3f}; {group.share:.1%} of the tokens it fires on. "
                "The outlined token is the example; hover a token for its activation."
            )
            for example in group.examples:
                shown = example if wide else example.narrowed(**NARROW)
                st.html(example_html(shown, found.max_activation))


def logit_tables(found: dashboard.FeatureDashboard) -> None:
    """The tokens it promotes and suppresses most, byte fragments named by their bytes."""
    left, right = st.columns(2)
    for column, title, effects in ((left, "Promotes", found.promoted), (right, "Suppresses", found.suppressed)):
        column.markdown(f"**{title}**")
        column.html(
            '<table style="font-family:ui-monospace,monospace;font-size:0.9rem;border-collapse:collapse;">'
            + "".join(
                f'<tr><td style="padding:1px 8px;white-space:pre;">&#39;{visible_html(e.token)}&#39;'
                + (' <span style="color:#555;">(byte)</span>' if e.fragment else "")
                + f'</td><td style="padding:1px 8px;text-align:right;">{e.value:+.3f}</td></tr>'
                for e in effects
            )
            + "</table>"
        )
    if any(e.fragment for e in (*found.promoted, *found.suppressed)):
        st.caption("(byte): one byte of a character that the tokenizer splits over several tokens, named by its value.")


def nearest(view: state.ViewState, found: dashboard.FeatureDashboard) -> None:
    """The features with the closest decoder directions, each a link to its page."""
    if not found.neighbours:
        st.caption("No other feature writes to the same place.")
        return
    for near in found.neighbours:
        name = f" {plain(near.label)}" if near.label and not near.label.startswith("#") else ""
        label = f"{plain(near.sae)} #{near.feature}{name} · cosine {near.cosine:.3f}"
        feature_link(view, near.sae, near.feature, label)


def own_text(view: state.ViewState) -> None:
    """This feature's activation on text typed on the page, every token shaded."""
    text = st.text_input("Try your own text", key="_dash_try", placeholder="Type a line and press Enter")
    if not text.strip():
        return
    with shown_errors("reading your text"):
        tokens = resources.tokens(view.model, text)
        acts = resources.activations(view.model, view.sae, text)
        on_text = token_panel.feature_on_tokens(tokens, acts, view.feature)
        st.html(token_panel.highlighted_tokens(on_text["token"].tolist(), on_text["activation"].tolist()))
        st.caption(f"Largest here: {on_text['activation'].max():.3f} (position {int(on_text['activation'].argmax())}).")


@st.cache_data(max_entries=hosting.limits().cache_entries, show_spinner=False)
def causal_panel(model_name: str, sae_name: str, feature: int) -> feature_data.CausalPanel | None:
    """The feature's shipped causes and effects across the held-out text (None where the SAE ships none)."""
    return feature_data.causal_panel(resources.sae(model_name, sae_name), feature)


CAUSAL_TITLES = {"upstream": "Causes across the corpus", "downstream": "Effects across the corpus"}
PANEL_SOURCES = {"held-out": "The held-out plays", "text": "The text pasted above"}


@st.cache_data(max_entries=hosting.limits().cache_entries, show_spinner=False)
def computed_panels(model_name: str, sae_names: tuple[str, ...], prompts: tuple[str, ...]) -> corpus_edges.CausalPanels:
    """The SAE set's causes and effects over `prompts` (the bounded text: the cache keys on its hash), computed
    by the same function as the shipped panels, one progress step per prompt."""
    model, saes = resources.model(model_name), resources.saes(model_name, sae_names)
    with progress_bar(f"Summing the edges of {len(prompts)} prompts") as report:
        return corpus_edges.causal_panels(model, saes, list(prompts), executor=resources.executor(), progress=report)


def _panel_prompts(view: state.ViewState, source: str) -> tuple[tuple[str, ...], str]:
    """The prompts the on-demand panels read (at most N_PROMPTS of PROMPT_TOKENS tokens) and their text's hash."""
    if source == "held-out":
        prompts = batch.held_out_prompts(N_PROMPTS, PROMPT_TOKENS)
    else:
        text = st.session_state.get("_dash_text", "")
        prompts = corpus_edges.text_prompts(resources.model(view.model), text, n=N_PROMPTS, length=PROMPT_TOKENS)
    return tuple(prompts), hashlib.sha256("\x00".join(prompts).encode()).hexdigest()


def on_demand_panel(view: state.ViewState) -> tuple[feature_data.CausalPanel, str] | None:
    """A button that computes the view's SAE set's causes and effects over a text the user picks, with the cost
    said first; the feature's panel and where it comes from once computed (cached per model, SAE set, text)."""
    names = view.saes if view.sae in view.saes else (*view.saes, view.sae)
    has_text = bool(st.session_state.get("_dash_text", "").strip())
    source = st.radio(
        "Compute them over",
        list(PANEL_SOURCES) if has_text else ["held-out"],
        format_func=PANEL_SOURCES.__getitem__,
        key="_panel_source",
        horizontal=True,
    )
    prompts, text_hash = _panel_prompts(view, source)
    key = (view.model, names, text_hash)
    cluster = hosting.ray_address()
    st.caption(
        f"One whole-prompt attribution graph per prompt on {', '.join(map(code, names))}: {len(prompts)} prompts "
        f"of up to {PROMPT_TOKENS} tokens, about 5 to 20 s each on the built-in model on a CPU; the sums keep only "
        f"the pairs of features that meet (at most {corpus_edges.MAX_EDGE_BYTES / 2**20:,.0f} MB). Computed once "
        "per SAE set and text, then every feature is instant."
        + ("" if cluster is None else f" The prompts run on the Ray cluster {code(cluster)}.")
    )
    if st.button("Compute causes and effects over a text", icon=":material/hub:", key="_panel_compute"):
        st.session_state["_panel_key"] = key
    if st.session_state.get("_panel_key") != key:
        return None
    panels = computed_panels(view.model, names, prompts)
    return panels.panel(view.sae, view.feature), PANEL_SOURCES[source].lower()


def causal_panels(view: state.ViewState, panel: feature_data.CausalPanel | None) -> None:
    """The feature's strongest causes and effects over a corpus, each a link to its page: the shipped ones
    (`panel`), or for an SAE that ships none, computed on demand."""
    st.subheader("Causes and effects across the corpus", anchor=False)
    where = "held-out prompts"
    if panel is None:
        st.caption(f"{code(view.sae)} ships none: compute them here.")
        computed = on_demand_panel(view)
        if computed is None:
            return
        panel, source = computed
        where = f"prompts of {source}"
    if not panel.occurrences:
        st.caption(f"It is not active in the {panel.n_prompts} {where} they are summed over.")
        return
    st.caption(
        f"Direct edges of whole-prompt attribution graphs on {panel.n_prompts} {where}, with "
        f"{', '.join(map(code, panel.saes))}, where it fires ({panel.occurrences} tokens). *Mean*: the edge, summed "
        "over positions, where it appears; *in*: the share of its tokens with that edge. Click one to open it."
    )
    for column, (side, edges) in zip(
        st.columns(2), (("upstream", panel.upstream), ("downstream", panel.downstream)), strict=True
    ):
        with column:
            st.markdown(f"**{CAUSAL_TITLES[side]}**")
            if not edges:
                st.caption("None: no feature of the set reads from it." if side == "downstream" else "None in the set.")
            for edge in edges:
                label = resources.label(view.model, edge.sae, edge.feature)
                text = f"{plain(edge.sae)} #{edge.feature} {plain(label)}"
                feature_link(view, edge.sae, edge.feature, f"{text} · mean {edge.score:+.3f} · in {edge.frequency:.0%}")
