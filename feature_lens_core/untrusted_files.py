"""Reading files a stranger may have made (SAE folders, their feature data, uploaded directions), with bounds.

Every reader checks the file's size before reading it and its structure before building anything from it, so
a crafted file costs at most its bounded size in memory and fails as a `FeatureLensError` that names the file
(`what`) and says what it must be:

- JSON: at most `max_bytes`, nested at most `MAX_JSON_DEPTH` deep, integers of at most `MAX_INT_DIGITS` digits
  (Python's own JSON parser would recurse until RecursionError, and refuse long integers with a ValueError).
- .npy arrays: the header is read and checked (a float dtype, at most `max_elements` elements, the data all
  there) before any allocation; pickled objects are never read.

>>> read_json_text('{"d_in": 128, "metadata": {"hook_name": "blocks.0.hook_resid_pre"}}', what="cfg.json")["d_in"]
128
>>> read_json_text("[" * 100 + "]" * 100, what="labels.json")
Traceback (most recent call last):
...
feature_lens_core.errors.FeatureLensError: labels.json is nested 100 levels deep; at most 64 are read. Fix or ...
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from feature_lens_core.errors import FeatureLensError

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 18  # every count in a config fits; 10**18 elements is far past any memory
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def mib(size: int) -> str:
    """A byte count as MiB, for messages."""
    return f"{size / 2**20:.3g} MiB"


def read_capped(path: Path, *, what: str, max_bytes: int) -> bytes:
    """The bytes of the file at `path`, refused without reading when it is over `max_bytes` or not a file."""
    try:
        if not path.exists():
            raise FeatureLensError(f"{what} does not exist.")
        size = os.stat(path).st_size
        if not path.is_file():
            raise FeatureLensError(f"{what} is not a file. Give a file.")
        if size > max_bytes:
            raise FeatureLensError(f"{what} is {mib(size)}; at most {mib(max_bytes)} is read. Give a smaller file.")
        with path.open("rb") as file:
            return file.read(size)  # what stat saw: a file that grows meanwhile is cut, then fails to parse
    except OSError as exc:
        raise FeatureLensError(f"{what} could not be read ({exc.strerror or exc}).") from exc


def _depth(data: bytes) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings not counted)."""
    brackets = np.frombuffer(_STRING.sub(b'""', data), np.uint8)
    steps = np.isin(brackets, _OPEN).astype(np.int64) - np.isin(brackets, _CLOSE)
    return int(steps.cumsum().max(initial=0))


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are read")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} overflows")
    return value


def read_json_text(data: str | bytes, *, what: str) -> object:
    """JSON text parsed with the depth and integer bounds above; `what` names the file in messages."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = _depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise FeatureLensError(
            f"{what} is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are read. Fix or regenerate it."
        )
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_bounded_int, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        raise FeatureLensError(f"{what} could not be read as JSON ({reason}). Fix or regenerate it.") from exc


def read_json(path: Path, *, what: str, max_bytes: int) -> object:
    """The JSON file at `path`, at most `max_bytes`, parsed as `read_json_text` does."""
    return read_json_text(read_capped(path, what=what, max_bytes=max_bytes), what=what)


def read_npy(data: bytes, *, what: str, max_elements: int) -> np.ndarray:
    """A float array from the bytes of a .npy file, its header checked before anything is allocated.

    The dtype must be float16, float32 or float64 (not strings, dates, records, objects or complex numbers),
    the array non-empty with at most `max_elements` elements, and the file must hold all of its data.
    """
    must = "It must hold one vector of float16, float32 or float64 numbers (numpy.save of a float array)."
    file = io.BytesIO(data)
    try:
        version = npy_format.read_magic(file)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(file)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} (only 1.0 and 2.0 hold plain arrays)")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise FeatureLensError(f"{what} is not a .npy file numpy can read ({reason}). {must}") from exc
    if dtype.kind != "f" or dtype.itemsize > 8 or dtype.fields is not None:
        raise FeatureLensError(f"{what} holds {dtype} values. {must}")
    count = math.prod(shape)
    if count == 0:
        raise FeatureLensError(f"{what} is empty (shape {shape}). {must}")
    if count > max_elements:
        raise FeatureLensError(f"{what} has {count} elements (shape {shape}); at most {max_elements} are read. {must}")
    if len(data) - file.tell() != count * dtype.itemsize:
        raise FeatureLensError(
            f"{what} is cut short or has bytes to spare: its header promises {count * dtype.itemsize} bytes of "
            f"data, and {len(data) - file.tell()} follow. Save it again."
        )
    values = np.frombuffer(data, dtype, count=count, offset=file.tell())
    return values.reshape(shape, order="F" if fortran_order else "C").astype(dtype.newbyteorder("="))
