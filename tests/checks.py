"""Inputs and checks shared by the reliability tests."""

from __future__ import annotations

from transformer_lens import HookedTransformer

from feature_lens_core.exclusive import exclusive

# HTML, a script, markdown (emphasis, math, a javascript: link, an emoji code), a bell, an ANSI colour escape,
# a right-to-left override, a zero-width space, an emoji and an accented letter.
MARKUP = "<script>alert('x')</script> <b>b</b> **md** $x$ [a](javascript:x) :rose: \x07\x1b[31m\u202e\u200b 🌹 é"


def assert_no_hooks(model: HookedTransformer) -> None:
    """No hook is left on `model` once the passes in flight have ended.

    The app's prefetcher thread, started by the AppTest tests in this process, may be mid-pass on the shared
    built-in model, with its hooks rightly attached; the compute lock waits for it to finish.
    """
    with exclusive():
        assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())
