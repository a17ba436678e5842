"""One hooked forward pass (or forward-mode AD pass) at a time per process, whichever thread asks.

TransformerLens hooks live on the model object, and leaving `model.hooks(...)` removes every hook
added at that level, including another thread's; PyTorch's forward-mode AD levels are global, so two
threads cannot each open one. The app shares one model between all visitors' threads, so these
passes run one after another. The lock is re-entrant: a ranking holds it across its passes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.RLock()


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the process's compute lock for this thread until the block ends."""
    with _lock:
        yield
