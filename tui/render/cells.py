"""The cell, age and health-style helpers every renderer shares.

Outside text (names, server errors, event messages) goes into ``Text`` as plain text, never
markup, with control characters replaced: an ESC in a pod name must not drive the terminal.
"""

from __future__ import annotations

from rich.text import Text

from backends.snapshot import Health

HEALTH_STYLE = {
    Health.OK: "bold green",
    Health.DEGRADED: "bold yellow",
    Health.FAILED: "bold red",
    Health.UNKNOWN: "bold grey50",
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


def badge(health: Health) -> Text:
    return Text(HEALTH_BADGE[health], style=HEALTH_STYLE[health])


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago"



def clean(text: str) -> str:
    """Control characters (ESC, BEL, newlines) replaced by spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def plain(text: str, style: str = "") -> Text:
    """One table cell: never markup, never a control character, never wrapped."""
    return Text(clean(text), style=style, no_wrap=True, overflow="ellipsis")
