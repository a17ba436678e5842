"""Directions: a steering vector (or any linear direction) as a one-feature SAE, usable everywhere."""

import streamlit as st

import feature_lens_core as flc
from feature_lens_app import frame, loading, resources, state, token_panel
from feature_lens_app.boundary import shown_errors
from feature_lens_app.markup import code
from feature_lens_core.directions import MAX_DIRECTION_BYTES

LOVE = "O my love, my sweet love, I love thee dearly\nKiss me, sweet heart, for love is gentle"
WAR = "To arms! The battle rages and the soldiers fight\nDraw your swords and strike the enemy down"

view = frame.view()
st.title("Steering vectors as features", anchor=False)
st.caption(
    "A direction in the model's activations behaves here like a feature with one unit: its activation is the "
    "positive part of the activation's projection on the direction. Make one from two sets of prompts (the "
    "difference of their mean activations) or upload one, then rank its causes and effects like any feature."
)

# Outside the form, so that the form shows only the inputs of the source chosen.
source = st.radio(
    "From",
    ["prompts", "file"],
    horizontal=True,
    key="direction_source",
    format_func={"prompts": "two sets of prompts", "file": "a .npy or .safetensors file"}.__getitem__,
    help="The difference of two sets' mean activations, or a vector of your own.",
)
prompts_a = prompts_b = ""
upload = None
with st.form("new_direction"):
    layer_col, site_col, name_col = st.columns(3)
    n_layers = resources.layer_count(view.model)
    layer = layer_col.number_input(
        "Layer", 0, n_layers - 1, min(1, n_layers - 1), help=f"The block it is read in: 0 to {n_layers - 1}."
    )
    site = site_col.selectbox(
        "Where", resources.direction_sites(), help="The activation within the block: residual stream, attention or MLP."
    )
    title = name_col.text_input("Name", "love-vs-war", max_chars=40, help="Shown in the SAE lists.")
    if source == "prompts":
        a_col, b_col = st.columns(2)
        prompts_a = a_col.text_area("Set A (one prompt per line)", LOVE, key="direction_a", help="Where it points to.")
        prompts_b = b_col.text_area(
            "Set B (one prompt per line)", WAR, key="direction_b", help="Where it points away from."
        )
    else:
        upload = st.file_uploader(
            "Direction file", type=["npy", "safetensors"], help="One vector as long as the activation at that place."
        )
    made = st.form_submit_button("Add it as a feature", type="primary")

if made:
    hook = f"blocks.{layer}.{site}"
    name = None
    with shown_errors("making the direction"):
        if source == "file":
            if upload is None:
                raise flc.FeatureLensError("Choose a .npy or .safetensors file to upload.")
            if upload.size > MAX_DIRECTION_BYTES:  # refused before its bytes are read
                raise flc.FeatureLensError(
                    f"'{upload.name}' is {upload.size / 2**20:.3g} MiB; a direction file is one vector, at most "
                    f"{MAX_DIRECTION_BYTES // 2**20} MiB."
                )
            name = resources.direction_from_file(
                view.model, hook, upload.getvalue(), upload.name.rsplit(".", 1)[-1], title
            )
        else:
            lines_a = [line.strip() for line in prompts_a.splitlines() if line.strip()]
            lines_b = [line.strip() for line in prompts_b.splitlines() if line.strip()]
            name = resources.direction_from_prompts(view.model, hook, lines_a, lines_b, title)
    if name is not None:
        state.set_target(name, 0, view.pos)
        st.session_state["direction_added"] = name
        st.rerun()

added = st.session_state.get("direction_added")
if added:
    st.success(
        f"{code(added)} is now among the SAEs and is the target. Open **Explore** to see what drives it "
        "and what it drives, or **Circuit graph** for more hops. Links to these views carry how it was made: one "
        "from prompts is rebuilt anywhere, one from a file works while this server runs.",
        icon=":material/check_circle:",
    )
    tokens = loading.prompt_tokens(view)
    if tokens is not None and view.sae == added:
        with shown_errors("reading the prompt"):
            token_panel.token_panel(view, tokens)
