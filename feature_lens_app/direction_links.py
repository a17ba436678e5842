"""Directions in the link: the recipe of each direction a view uses travels in its URL.

A direction made from two sets of prompts is rebuilt from them wherever the link is opened, after a restart
too. One made from an uploaded file travels as its hook and name only; the name ends in a digest of the hook
and the vector (`resources.add_direction`), so the server can tell whether it still has that very vector and,
when it does not, say which file to upload again.

The recipes are one query parameter, `recipes`: JSON, compressed, in URL-safe base64. It is read as untrusted
input: its length, its decompressed size and its shape are checked before anything is rebuilt from it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.untrusted_files import read_json_text

MAX_LINK_CHARS = 6000  # the parameter's length in the URL: links stay well under what browsers keep
MAX_RECIPE_BYTES = 64 * 1024  # its decompressed JSON
MAX_PROMPTS = 64  # per set, as the Directions page allows


@dataclass(frozen=True)
class Recipe:
    """How a direction was made: at `hook`, from the prompt sets `a` and `b`, or (both empty) from a file."""

    name: str
    hook: str
    a: tuple[str, ...] = ()
    b: tuple[str, ...] = ()

    @property
    def from_file(self) -> bool:
        return not self.a

    @property
    def title(self) -> str:
        """The name the user gave it (between the prefix and the digest)."""
        return self.name.split(":", 1)[-1].rsplit("#", 1)[0]


def encode(recipes: Iterable[Recipe]) -> str:
    """The `recipes` parameter for these recipes ("" for none). Prompt sets that would make the link longer
    than `MAX_LINK_CHARS` travel as a file recipe would: the link then names the direction but cannot rebuild
    it after a restart."""
    rows = [[r.name, r.hook, list(r.a), list(r.b)] for r in recipes]
    if not rows:
        return ""
    text = _pack(rows)
    if len(text) > MAX_LINK_CHARS:
        text = _pack([[name, hook, [], []] for name, hook, _, _ in rows])
    return text


def _pack(rows: list[list[object]]) -> str:
    raw = zlib.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode(), 9)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> dict[str, Recipe]:
    """The recipes of a `recipes` parameter, by direction name; a `FeatureLensError` saying what is wrong with
    a parameter that is not one this app wrote."""
    if not text:
        return {}
    broken = "The link's directions (the recipes parameter) are damaged, so they cannot be rebuilt"
    if len(text) > MAX_LINK_CHARS:
        raise FeatureLensError(f"{broken}: the parameter is {len(text)} characters, at most {MAX_LINK_CHARS}.")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, MAX_RECIPE_BYTES)
    except (binascii.Error, ValueError, zlib.error):
        raise FeatureLensError(f"{broken}: it is not what this app writes. Copy the link again.") from None
    if inflate.unconsumed_tail:
        raise FeatureLensError(f"{broken}: they unpack to more than {MAX_RECIPE_BYTES // 1024} KiB.")
    rows = read_json_text(raw, what="The link's directions")
    if not isinstance(rows, list):
        raise FeatureLensError(f"{broken}: they are not a list of directions.")
    recipes = {}
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 4
            and all(isinstance(v, str) for v in row[:2])
            and all(_prompt_set(s) for s in row[2:])
        ):
            raise FeatureLensError(f"{broken}: one of them is not [name, hook, prompts A, prompts B].")
        recipe = Recipe(row[0], row[1], tuple(row[2]), tuple(row[3]))
        if bool(recipe.a) != bool(recipe.b):
            raise FeatureLensError(f"{broken}: '{recipe.name}' has only one of its two prompt sets.")
        recipes[recipe.name] = recipe
    return recipes


def _prompt_set(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_PROMPTS and all(isinstance(p, str) for p in value)


def missing_file_message(recipe: Recipe) -> str:
    """What to do when a link names a direction made from a file that this server does not have."""
    digest = recipe.name.rsplit("#", 1)[-1]
    return (
        f"Direction '{recipe.name}' was made from an uploaded file that this server does not have (it restarted, "
        f"or the file was uploaded to another server). Upload the same file at {recipe.hook} on the Directions "
        f"page, named '{recipe.title}': it gets the same name (its content hash is {digest}) and this link works "
        "again."
    )
