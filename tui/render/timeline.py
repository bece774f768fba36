"""Pure rendering of the timeline: entries → keyed rows (the TUI screen) and plain lines
(``sfops timeline``). Every message, subject and name is outside text (pod names, event
messages, server errors): it goes through safe_text into plain ``Text``, never markup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.text import Text

from backends.timeline.model import CRITICAL, INFO, OK, WARNING
from backends.timeline.view import Entry, SourceAge, age_line
from tui.render.cells import CELL, LINE, TEXT, plain, safe_text, text_table

COLUMNS = ("time (UTC)", "source", "level", "what")
LEVEL_LABEL = {OK: "ok", INFO: "info", WARNING: "warn", CRITICAL: "CRIT"}
LEVEL_STYLE = {OK: "green", INFO: "cyan", WARNING: "yellow", CRITICAL: "bold red"}


def time_text(ts: float, *, with_date: bool = False) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def spans_days(entries: Sequence[Entry], now: float) -> bool:
    """Whether the rows need a date: an entry from another UTC day than ``now``."""
    today = datetime.fromtimestamp(now, UTC).date()
    return any(datetime.fromtimestamp(e.ts, UTC).date() != today for e in entries)


def entry_cells(entry: Entry, *, with_date: bool = False) -> tuple[str, str, str, str]:
    """Plain, safe cells: time, source, level, what."""
    return (time_text(entry.ts, with_date=with_date), safe_text(entry.source, CELL),
            LEVEL_LABEL.get(entry.level, safe_text(entry.level, CELL)),
            safe_text(entry.message, LINE))


def timeline_rows(entries: Sequence[Entry], now: float) -> list[tuple[str, tuple[Text, ...]]]:
    """Keyed rows, oldest first (the newest at the bottom, as a log reads)."""
    dated = spans_days(entries, now)
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for entry in entries:
        when, source, level, what = entry_cells(entry, with_date=dated)
        style = LEVEL_STYLE.get(entry.level, "")
        rows.append((entry.key, (plain(when, "dim"), plain(source), plain(level, style),
                                 plain(what, "bold" if entry.source == "sfops" else "",
                                       limit=LINE))))
    return rows


def ages_text(ages: Sequence[SourceAge], now: float) -> Text:
    """"data: nginx 2s old · postgres unreachable (…)" as plain text."""
    return Text(safe_text(f"data: {age_line(ages, now)}", LINE), style="dim")


def timeline_text(entries: Sequence[Entry], ages: Sequence[SourceAge], now: float) -> str:
    """``sfops timeline``'s table: the sources' ages, then one line per entry. The ages line
    is cut as any line of text is (a source's name and error are outside text)."""
    dated = spans_days(entries, now)
    header = safe_text(f"data: {age_line(ages, now)}", TEXT)
    if not entries:
        return header + "\nnothing recorded in this window"
    table = text_table([c.upper() for c in COLUMNS],
                       [entry_cells(e, with_date=dated) for e in entries])
    return header + "\n" + table
