"""Text the user typed, shown exactly as typed: escaped for Streamlit's markdown and for HTML."""

from __future__ import annotations

import html
import re
import unicodedata

# Markdown punctuation that turns user text into emphasis, code, links, HTML, math, strikethrough, tables, emoji
# or headings. Underscores are left alone: SAE and hook names are full of them, and intraword ones format nothing.
_MARKDOWN = re.compile(r"([\\`*\[\]<>$~|:#])")


def plain(text: str) -> str:
    """`text` escaped for Streamlit's markdown, so a prompt, token, name or URL value is shown exactly as typed."""
    return _MARKDOWN.sub(r"\\\1", text)


def code(text: str) -> str:
    """`text` as an inline code span that no backtick inside it can close early."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def visible_html(text: str) -> str:
    """`text` escaped for HTML, with whitespace and control characters made visible rather than active."""
    out = []
    for char in text:
        if char == "\n":
            out.append("⏎")
        elif char == "\t":
            out.append("⇥")
        elif unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return html.escape("".join(out), quote=True)
