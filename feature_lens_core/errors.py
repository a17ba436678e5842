"""The one exception type a user sees: it says what is wrong and how to fix it."""


class FeatureLensError(ValueError):
    """Bad input or an unavailable resource, with a message fit to show a user as is.

    Every entry point (Python API, CLI, app) raises or catches this type: the CLI prints
    its message on one line and exits with status 2, the app shows it with `st.error`.
    """
