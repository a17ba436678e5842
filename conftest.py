"""The test suite's shared fixtures, one module per kind (tests/fixtures/), for every tier.

The folders of tests/ are the tiers: `unit` (one function on tiny in-memory models), `integration` (the
shipped built-in model, real files, synthesised Hugging Face caches, the CLI), `app` (Streamlit's AppTest
on the real pages) and `browser` (chromium against `streamlit run`). Each file carries its tier's marker too,
so `pytest -m "not browser"` works as well as `pytest tests/unit`.
"""

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.app",
    "tests.fixtures.browser",
    "tests.fixtures.pages",
    "tests.fixtures.hub",
    "tests.fixtures.reliability",
]
