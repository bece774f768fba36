"""The cell, age and health-style helpers every renderer shares.

Outside text (names, server errors, event messages) goes into ``Text`` as plain text, never
markup, through :func:`backends.safetext.safe_text` (control and format characters shown as
escapes such as ``\\x1b``, length capped with "…"): an ESC in a pod name must not drive the
terminal. Every table cell is made by :func:`plain` (or, for a cell assembled from parts, has
its outside parts passed through :func:`safe_text`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rich.text import Text

from backends.safetext import CELL, LINE, TEXT, safe_text
from backends.service import since_text
from backends.snapshot import Health

__all__ = ["CELL", "HEALTH_BADGE", "HEALTH_CELL_STYLE", "HEALTH_STYLE", "LINE", "TEXT",
           "age_text", "badge", "message", "plain", "safe_text", "since_text"]

HEALTH_STYLE = {
    Health.OK: "bold green",
    Health.DEGRADED: "bold yellow",
    Health.FAILED: "bold red",
    Health.UNKNOWN: "bold grey50",
    Health.UNREACHABLE: "bold red",
}
# A row's health inside a table (among other cells): colour, bold only for a failure.
HEALTH_CELL_STYLE = {
    Health.OK: "green",
    Health.DEGRADED: "yellow",
    Health.FAILED: "bold red",
    Health.UNKNOWN: "grey50",
    Health.UNREACHABLE: "bold red",
}
# Shown beside the colour so health is readable with NO_COLOR or a monochrome terminal.
HEALTH_BADGE = {
    Health.OK: "● OK",
    Health.DEGRADED: "▲ DEGRADED",
    Health.FAILED: "✖ FAILED",
    Health.UNKNOWN: "? UNKNOWN",
    Health.UNREACHABLE: "✖ UNREACHABLE",
}

# (below this many seconds, unit size, unit)
_AGE_UNITS = ((120.0, 1, "s"), (7200.0, 60, "m"), (172800.0, 3600, "h"), (math.inf, 86400, "d"))


def badge(health: Health) -> Text:
    return Text(HEALTH_BADGE[health], style=HEALTH_STYLE[health])


def age_text(seconds: float | None, *, compact: bool = False) -> str:
    """How long ago, in the largest unit that still reads precisely: "now", "5s ago",
    "119s ago", "10m ago", "3h ago", "2d ago" ("never" for None).

    ``compact`` is kubectl's AGE column: whole units, no suffix ("0s", "45s", "12m", "3h",
    "5d"). How long an alert has been there is :func:`since_text` ("1m05s")."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 1 and not compact:
        return "now"
    size, unit = next((size, unit) for limit, size, unit in _AGE_UNITS if seconds < limit)
    if compact:
        return f"{int(seconds) // size}{unit}"
    return f"{seconds / size:.0f}{unit} ago"


def plain(text: str, style: str = "", limit: int = CELL) -> Text:
    """One table cell: never markup, never a control character, one line, never wrapped."""
    return Text(safe_text(text, limit), style=style, no_wrap=True, overflow="ellipsis")


def message(text: str, style: str = "", limit: int = LINE) -> Text:
    """A one-line message from outside (an error, an event message) as plain ``Text``."""
    return Text(safe_text(text, limit), style=style)


def text_table(columns: Sequence[str], rows: Iterable[Sequence[str | Text]], *,
               max_width: int | None = None) -> str:
    """Rows as an aligned plain-text table (the CLI's ``status`` output): every cell through
    :func:`safe_text`, cells longer than ``max_width`` cut with "…"."""
    table = [list(columns)] + [[safe_text(c.plain if isinstance(c, Text) else c, CELL)
                                for c in row] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    if max_width is not None:
        widths = [min(max_width, w) for w in widths]
    lines = []
    for line in table:
        cells = [(c if len(c) <= w else c[: w - 1] + "…").ljust(w)
                 for c, w in zip(line, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
