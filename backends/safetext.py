"""The one function that makes outside text safe to show in a terminal: :func:`safe_text`.

Names, server errors, Kubernetes event messages, Kafka group ids, action step messages — any
string sfops did not write itself — may hold terminal control sequences (an ESC that clears
the screen, an OSC that renames the window or writes the clipboard), bidi overrides that make
text read backwards, or thousands of characters. Rich and Textual strip only BEL, BS, VT, FF
and CR, so every renderer, widget title, notification, palette entry and CLI printer passes
outside text through :func:`safe_text` first:

- C0 and C1 control characters, DEL, Unicode format characters (category Cf: bidi embeddings
  and overrides U+202A-U+202E, isolates U+2066-U+2069, zero-width characters, the BOM), line
  and paragraph separators, surrogates and unassigned code points are replaced by a visible
  Python-style escape: ESC reads ``\\x1b``, U+202E reads ``\\u202e``, U+E0041 ``\\U000e0041``.
  A tab becomes one space.
- One-line text (the default) ends at its first line break (``\\n``, ``\\r``): what follows is
  shown as "…"; with ``lines=True`` line breaks are kept (as ``\\n``).
- The result is at most ``limit`` characters, cut with "…".

Markup is not this function's concern: its result is plain text that the caller puts into a
``rich.text.Text`` / Textual ``Content`` (never parsed as markup) or prints as it is.

Pure and dependency-free, so backends may use it too.
"""

from __future__ import annotations

import unicodedata

__all__ = ["CELL", "ELLIPSIS", "LINE", "TEXT", "escape_char", "safe_text"]

ELLIPSIS = "…"
# Per-use caps, in characters. A table cell is also cut by its column; these bound what a
# hostile server can make sfops lay out at all.
CELL = 120  # a table cell, a name, an id, a figure
LINE = 200  # a one-line message: an alert, an error, an event message, a step, a check detail
TEXT = 2000  # a multi-line block: a notification body, a dry-run plan line, a config error

# Categories escaped: controls, format characters, line/paragraph separators, surrogates,
# unassigned. Spaces (Zs) and private-use characters are shown as they are.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
_LINE_BREAKS = ("\r\n", "\r")


def escape_char(ch: str) -> str:
    """The visible form of one unsafe character: ``\\x1b``, ``\\u202e``, ``\\U000e0041``."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES


def safe_text(value: object, limit: int | None = LINE, *, lines: bool = False) -> str:
    """``value`` as text that cannot drive a terminal: see the module docstring.

    ``limit`` None: no length cap (JSON/YAML documents). ``None`` itself reads as ""."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    fits = limit is None or len(text) <= limit
    if fits and text.isprintable():  # the common case: nothing to do
        return text
    for brk in _LINE_BREAKS:
        text = text.replace(brk, "\n")
    cut = False
    if not lines and "\n" in text:
        text = text.strip("\n")
        first, newline, rest = text.partition("\n")
        text, cut = first, bool(newline and rest.strip())
    if limit is not None and len(text) > limit:
        text, cut = text[: limit + 1], True  # no more than this can be shown
    pieces = [" " if ch == "\t" else ch if ch == "\n" or not _unsafe(ch) else escape_char(ch)
              for ch in text]
    if limit is not None and sum(map(len, pieces)) > limit:
        cut = True
    if cut and limit is not None:
        budget, size, kept = max(0, limit - 1), 0, []  # room for the ellipsis
        for piece in pieces:  # whole pieces only: never half an escape
            if size + len(piece) > budget:
                break
            kept.append(piece)
            size += len(piece)
        pieces = kept
    result = "".join(pieces)
    return result.rstrip() + ELLIPSIS if cut else result
