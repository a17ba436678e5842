"""The one exception type a user sees: it says what is wrong and how to fix it."""


class FeatureLensError(ValueError):
    """Bad input or an unavailable resource, with a message fit to show a user as is.

    Every entry point (Python API, CLI, app) raises or catches this type: the CLI prints
    its message on one line and exits with status 2, the app shows it with `st.error`.
    """


class NothingToRank(FeatureLensError):
    """A request that is valid but has nothing to rank (no SAE on the asked side of the target).

    It reports an empty result, not a mistake: the app shows it as information, not as an error.
    """
