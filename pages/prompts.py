"""Across prompts: does a connection hold beyond this prompt, and which features play the same role."""

import pandas as pd
import streamlit as st

from feature_lens_app import across_prompts, circuits, frame, hosting, interactions
from feature_lens_app.boundary import shown_errors
from feature_lens_core import catalog

AT = {"active": "wherever it fires", "last": "at the last token"}

view = frame.view()
if st.session_state.pop(across_prompts.TO_EXPLORE, False):
    st.switch_page("pages/explore.py")
st.title("Across many prompts", anchor=False)
st.caption(
    "One prompt shows one instance. Here the target feature is ranked on a whole set of prompts and each "
    "connection is summarised by its mean score and how often it appears; below, features are clustered by "
    "who they connect to."
)

interactions.follow_to_feature()
limit = hosting.limits().max_batch_prompts
left, right = st.columns([1, 2])
with left:
    builtin = view.model == catalog.BUILTIN_MODEL
    sources = ["held-out", "own"] if builtin else ["own"]
    source = st.radio(
        "Prompts",
        sources,
        format_func={"held-out": "Held-out Shakespeare (built-in)", "own": "My own, one per line"}.__getitem__,
        key="batch_source",
        help="Held-out text is Shakespeare the built-in model never saw in training.",
    )
    count = st.slider(
        "How many",
        4,
        limit,
        min(12, limit),
        key="batch_count",
        disabled=source != "held-out",
        help="How many held-out snippets to rank the target on; each is a full ranking.",
    )
with right:
    text = st.text_area(
        "One prompt per line",
        key="batch_text",
        height=140,
        disabled=source != "own",
        help=f"Your own prompts, one per line (at most {limit} are used).",
    )

prompt_set = None
with shown_errors("reading the prompts"):
    prompt_set = tuple(circuits.prompts(source, count, text)[:limit])
if prompt_set is not None and not prompt_set:
    st.info("Type some prompts, one per line, or use the built-in held-out text.")
elif prompt_set:
    with st.expander(f"The {len(prompt_set)} prompts"):
        st.dataframe(
            pd.DataFrame({"prompt": prompt_set}),
            hide_index=False,
            width="stretch",
            height=min(38 + 35 * len(prompt_set), 320),
        )
    st.subheader(f"Connections of {view.sae} #{view.feature} over {len(prompt_set)} prompts", anchor=False)
    at = st.radio(
        "Rank it",
        list(AT),
        format_func=AT.__getitem__,
        horizontal=True,
        key="batch_at",
        help="On each prompt, rank the feature at every token where it fires, or only at the last token.",
    )
    for direction in view.directions:
        across_prompts.edge_section(view, prompt_set, at, direction)

    st.subheader(f"Features of {view.sae} clustered by their connections", anchor=False)
    st.caption(
        "Each feature of the target's SAE that fires at least twice is described by its mean upstream and downstream "
        "scores over the prompts; features with similar partners land close together. Click a point to open it."
    )
    clusters = st.slider("Clusters", 2, 12, 6, key="map_clusters", help="How many groups to sort the features into.")
    if st.toggle(
        "Compute the map (ranks every occurrence of every feature: a minute or so)",
        key="map_on",
        help="Off by default: it ranks every feature of the SAE on every prompt.",
    ):
        across_prompts.cluster_section(view, prompt_set, clusters)
