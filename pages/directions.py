"""Directions: a steering vector (or any linear direction) as a one-feature SAE, usable everywhere."""

import streamlit as st

from feature_lens_app import frame, resources, state, widgets
from feature_lens_core import directions
from feature_lens_core.errors import FeatureLensError

LOVE = "O my love, my sweet love, I love thee dearly\nKiss me, sweet heart, for love is gentle"
WAR = "To arms! The battle rages and the soldiers fight\nDraw your swords and strike the enemy down"

view = frame.view()
st.title("Steering vectors as features", anchor=False)
st.caption(
    "A direction in the model's activations behaves here like a feature with one unit: its activation is the "
    "positive part of the activation's projection on the direction. Make one from two sets of prompts (the "
    "difference of their mean activations) or upload one, then rank its causes and effects like any feature."
)

with st.form("new_direction"):
    layer_col, site_col, name_col = st.columns(3)
    n_layers = resources.model(view.model).cfg.n_layers
    layer = layer_col.number_input("Layer", 0, n_layers - 1, min(1, n_layers - 1))
    site = site_col.selectbox("Where", directions.DIRECTION_HOOKS)
    title = name_col.text_input("Name", "love-vs-war", max_chars=40)
    source = st.radio(
        "From",
        ["prompts", "file"],
        horizontal=True,
        format_func={"prompts": "two sets of prompts", "file": "a .npy or .safetensors file"}.get,
    )
    a_col, b_col = st.columns(2)
    prompts_a = a_col.text_area("Set A (one prompt per line)", LOVE, key="direction_a")
    prompts_b = b_col.text_area("Set B (one prompt per line)", WAR, key="direction_b")
    upload = st.file_uploader("Direction file", type=["npy", "safetensors"])
    made = st.form_submit_button("Add it as a feature", type="primary")

if made:
    hook = f"blocks.{layer}.{site}"

    def build() -> str:
        model = resources.model(view.model)
        if source == "file":
            if upload is None:
                raise FeatureLensError("Choose a .npy or .safetensors file to upload.")
            vector = directions.load_direction(upload.getvalue(), fmt=upload.name.rsplit(".", 1)[-1])
        else:
            lines_a = [line.strip() for line in prompts_a.splitlines() if line.strip()]
            lines_b = [line.strip() for line in prompts_b.splitlines() if line.strip()]
            vector = directions.steering_vector(model, hook, lines_a, lines_b)
        return resources.add_direction(view.model, hook, vector.tolist(), title)

    name, failure = widgets.attempt(build, "making the direction")
    if failure is not None:
        widgets.show_failure(failure, "making the direction")
    else:
        state.set_target(name, 0, view.pos)
        st.session_state["direction_added"] = name
        st.rerun()

added = st.session_state.get("direction_added")
if added:
    st.success(
        f"{widgets.code(added)} is now among the SAEs and is the target. Open **Explore** to see what drives it "
        "and what it drives, or **Circuit graph** for more hops. It lives on this server until it restarts.",
        icon=":material/check_circle:",
    )
    tokens = widgets.prompt_tokens(view)
    if tokens is not None and view.sae == added:
        with widgets.shown_errors("reading the prompt"):
            widgets.token_panel(view, tokens)
