"""Files written whole or not at all: a failure (a full disk, an interrupt) leaves the previous file intact.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
>>> write_atomically(target, lambda path: path.write_text("done"))
>>> target.read_text()
'done'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary)` on a new file in `path`'s folder, then rename it onto `path`.

    The rename is atomic on one filesystem, so readers see the old file or the new one, never a part; if
    `write` raises, the temporary file is removed and the exception propagates.
    """
    target = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
