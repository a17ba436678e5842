"""feature-lens: `streamlit run streamlit_app.py`. The frame (navigation, shared sidebar), then the chosen page."""

from feature_lens_app import frame

frame.run()
