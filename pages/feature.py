"""Feature: one feature's dashboard: what it fires on, what it promotes, and its neighbours on the prompt."""

import pandas as pd
import streamlit as st

from feature_lens_app import charts, frame, interactions, loading, resources, state, token_panel
from feature_lens_app.boundary import shown_errors
from feature_lens_app.markup import plain
from feature_lens_core import catalog, feature_data

UP_DOWN = ("upstream", "downstream")
view = frame.view()
st.title(f"Feature #{view.feature} of {plain(view.sae)}", anchor=False)
label = resources.label(view.model, view.sae, view.feature)
st.caption(
    "What one feature fires on, which next tokens it promotes, and its strongest neighbours on your prompt."
    + (f" Its automatic label: **{plain(label)}**." if label else "")
)

neuronpedia = resources.neuronpedia_id(view.model, view.sae)
if neuronpedia:
    url = catalog.neuronpedia_url(neuronpedia, view.feature)
    st.link_button("Open on Neuronpedia", url, icon=":material/open_in_new:", help="Neuronpedia's page of this feature")
    if resources.online():
        with st.expander("Neuronpedia's page", expanded=False):
            st.iframe(f"{url}?embed=true", height=600)
    else:
        st.caption("Offline: Neuronpedia's page cannot be shown; everything below is computed locally.")

tokens = loading.prompt_tokens(view)
card: feature_data.FeatureCard | None = None
on_prompt: pd.DataFrame | None = None
if tokens is not None:
    with shown_errors("loading the dashboard"):
        card = resources.card(view.model, view.sae, view.feature)
    with shown_errors("reading the prompt"):
        acts = resources.activations(view.model, view.sae, view.prompt)
        on_prompt = token_panel.feature_on_tokens(tokens, acts, view.feature)

if card is not None:
    here = on_prompt["activation"].iloc[view.pos] if on_prompt is not None and view.pos < len(on_prompt) else None
    peak = on_prompt["activation"].max() if on_prompt is not None else None
    cells = st.columns(4)
    cells[0].metric(
        "Share of tokens it fires on",
        f"{card.density:.2%}" if card.density is not None else "n/a",
        help="On the SAE's reference text",
    )
    cells[1].metric(
        "Mean activation",
        f"{card.mean_activation:.3f}" if card.mean_activation is not None else "n/a",
        help="Where it fires, on the reference text",
    )
    cells[2].metric("At the target token", f"{here:.3f}" if here is not None else "n/a")
    cells[3].metric("Highest on the prompt", f"{peak:.3f}" if peak is not None else "n/a")

if on_prompt is not None:
    st.subheader("On your prompt", anchor=False)
    st.html(token_panel.highlighted_tokens(on_prompt["token"].tolist(), on_prompt["activation"].tolist(), view.pos))
    interactions.draw_chart(charts.token_strip(on_prompt, view.pos), width="stretch", height=64)

if card is not None:
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Top-activating examples", anchor=False)
        for example in card.examples:
            st.html(token_panel.example_html(example.before, example.token, example.after))
            st.caption(f"activation {example.activation:.3f}")
        if not card.examples:
            st.caption("No shipped examples for this SAE; Neuronpedia (when online) has them for hub SAEs.")
    with right:
        st.subheader("Effect on the next token", anchor=False)
        effects = pd.DataFrame(
            {
                "promotes": [charts.display_token(t) for t, _ in card.boosted],
                "logit +": [v for _, v in card.boosted],
                "suppresses": [charts.display_token(t) for t, _ in card.suppressed],
                "logit −": [v for _, v in card.suppressed],
            }
        )
        st.dataframe(effects, hide_index=True, width="stretch")
        if any("\ufffd" in t for t, _ in [*card.boosted, *card.suppressed]):
            st.caption("'�' is one byte of a character that the tokenizer splits over several tokens.")

if tokens is not None:
    st.subheader("Strongest neighbours on this prompt", anchor=False)
    st.caption(f"By {state.METHODS[view.method].lower()}. Click one to open its dashboard here.")
    for column, direction in zip(st.columns(2), UP_DOWN, strict=True):
        with column:
            st.markdown(f"**{direction.capitalize()}**")
            with shown_errors(f"ranking {direction}"):
                rows = resources.ranked(view, direction).frame
                neighbours = interactions.labelled(rows.loc[rows["kind"] == "feature"].head(5), view.model)
                interactions.neighbour_buttons(neighbours, key=f"nb_{direction}")
