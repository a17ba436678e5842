"""feature-lens: `streamlit run streamlit_app.py`. The frame: shared sidebar, then the chosen page."""

import streamlit as st

from feature_lens_app import frame

pages = [
    st.Page("pages/explore.py", title="Explore", icon=":material/hub:", default=True),
    st.Page("pages/feature.py", title="Feature", icon=":material/insights:"),
    st.Page("pages/graph.py", title="Circuit graph", icon=":material/account_tree:"),
    st.Page("pages/prompts.py", title="Across prompts", icon=":material/stacks:"),
    st.Page("pages/directions.py", title="Directions", icon=":material/north_east:"),
    st.Page("pages/compare.py", title="Compare methods", icon=":material/compare_arrows:"),
    st.Page("pages/how_it_works.py", title="How it works", icon=":material/school:"),
]
page = st.navigation(pages, position="top")
with frame.framed():
    page.run()
