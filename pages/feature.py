"""Feature: one feature's dashboard: what it fires on across a corpus and on your prompt, what it promotes, and
its neighbours by decoder direction and on the prompt."""

import pandas as pd
import streamlit as st

from feature_lens_app import feature_dashboard, frame, interactions, loading, resources, state, token_panel
from feature_lens_app.boundary import shown_errors
from feature_lens_app.markup import plain
from feature_lens_core import catalog, dashboard, feature_data

UP_DOWN = ("upstream", "downstream")
view = frame.view()
st.title(f"Feature #{view.feature} of {plain(view.sae)}", anchor=False)
label = resources.label(view.model, view.sae, view.feature)
st.caption(
    "What one feature fires on, which next tokens it promotes, and its nearest features."
    + (f" Its automatic label: **{plain(label)}**." if label else "")
)

neuronpedia = resources.neuronpedia_id(view.model, view.sae)
if neuronpedia:
    url = catalog.neuronpedia_url(neuronpedia, view.feature)
    st.link_button("Open on Neuronpedia", url, icon=":material/open_in_new:", help="Neuronpedia's page of this feature")
    if resources.online():
        with st.expander("Neuronpedia's page", expanded=False):
            st.iframe(f"{url}?embed=true", height=600)

tokens = loading.prompt_tokens(view)
card: feature_data.FeatureCard | None = None
found: dashboard.FeatureDashboard | None = None
if tokens is not None:
    with shown_errors("loading the dashboard"):
        card = resources.card(view.model, view.sae, view.feature)
        feature_dashboard.stepper(view, resources.d_sae(view.model, view.sae))
        text = feature_dashboard.source_text(view, has_shipped=bool(card.examples))
        others = tuple(name for name in view.saes if name != view.sae)
        found = feature_dashboard.board(view.model, view.sae, view.feature, text, others)

if found is not None:
    feature_dashboard.figures(found)
    feature_dashboard.label_evidence(found)
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Examples", anchor=False)
        feature_dashboard.examples(found)
    with right:
        st.subheader("Effect on the next token", anchor=False)
        feature_dashboard.logit_tables(found)
        st.subheader("Nearest features by decoder direction", anchor=False)
        st.caption("In this SAE and in the view's other SAEs that write to the same place.")
        feature_dashboard.nearest(view, found)

if tokens is not None:
    with shown_errors("reading the causal panels"):
        feature_dashboard.causal_panels(view, feature_dashboard.causal_panel(view.model, view.sae, view.feature))

if tokens is not None:
    st.subheader("On your prompt", anchor=False)
    on_prompt: pd.DataFrame | None = None
    with shown_errors("reading the prompt"):
        acts = resources.activations(view.model, view.sae, view.prompt)
        on_prompt = token_panel.feature_on_tokens(tokens, acts, view.feature)
    if on_prompt is not None:
        st.html(token_panel.highlighted_tokens(on_prompt["token"].tolist(), on_prompt["activation"].tolist(), view.pos))
    feature_dashboard.own_text(view)

    st.subheader("Strongest neighbours on this prompt", anchor=False)
    st.caption(f"By {state.METHODS[view.method].lower()}. Click one to open its dashboard here.")
    for column, direction in zip(st.columns(2), UP_DOWN, strict=True):
        with column:
            st.markdown(f"**{direction.capitalize()}**")
            with shown_errors(f"ranking {direction}"):
                rows = resources.ranked(view, direction).frame
                neighbours = interactions.labelled(rows.loc[rows["kind"] == "feature"].head(5), view.model)
                interactions.neighbour_buttons(neighbours, key=f"nb_{direction}")
