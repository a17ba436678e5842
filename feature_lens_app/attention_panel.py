"""The Explore page's attention section: a target of an attention (hook_z) SAE, its input split by source token and
head (direct feature attribution), as a heatmap."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from feature_lens_app import charts, interactions, resources, state
from feature_lens_app.boundary import shown_errors
from feature_lens_core import hooks
from feature_lens_core.heads import direct_feature_attribution


@st.cache_data(max_entries=16, show_spinner=False)
def _terms(model_name: str, sae_name: str, prompt: str, feature: int, position: int) -> tuple[pd.DataFrame, float]:
    """The DFA terms and the bias term of one attention feature (cached per view)."""
    found = direct_feature_attribution(
        resources.model(model_name), resources.sae(model_name, sae_name), prompt, feature=feature, position=position
    )
    return found.terms, found.bias


def dfa_section(view: state.ViewState) -> None:
    """For an attention SAE target, a heatmap of its pre-activation by source token and head; else nothing."""
    with shown_errors("splitting the feature's input by head"):
        if hooks.site(resources.sae(view.model, view.sae)).kind != "attn_z":
            return
        terms, bias = _terms(view.model, view.sae, view.prompt, view.feature, view.pos)
        st.subheader("Which heads and tokens feed it", anchor=False)
        title = f"{view.sae} #{view.feature} at position {view.pos}: its input by source token and head"
        interactions.draw_chart(charts.dfa_heatmap(terms, title), key=f"dfa_{state.fingerprint(view)}", width="stretch")
        st.caption(
            "Each cell is one head's output from one source token, A[h, q, s] · v[s, h], read by the feature's "
            f"encoder (direct feature attribution). The cells sum to the feature's pre-activation minus its bias "
            f"term ({bias:+.3f}); attention patterns are the model's own."
        )
