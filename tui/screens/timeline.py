"""The timeline screen (key ``T``): every change sfops observed and every action from the
audit log, oldest first, newest at the bottom; each source's data age above; the gaps when
no sfops was watching as rows of their own.

Read from the store in the timeline writer's thread (never on the event loop), every refresh
interval, and shown by diff (tui.tablediff.sync_ordered). Filter with ``/`` (any text),
``s`` (one source after another) and ``w`` (the window). Every cell is outside text made
safe (tui.render.timeline).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from backends.safetext import CELL, TEXT, safe_text
from backends.timeline.view import ACTIONS, Entry, Timeline, read_with_audit
from tui.render.timeline import COLUMNS, ages_text, timeline_rows
from tui.screens.base import FilteredScreen
from tui.tablediff import sync_ordered

if TYPE_CHECKING:
    from tui.screens.host import ScreenHost

WINDOWS: tuple[tuple[str, float], ...] = (("15m", 900.0), ("1h", 3600.0), ("6h", 21600.0),
                                          ("24h", 86400.0), ("7d", 604800.0))
DEFAULT_WINDOW = 1  # 1h


class TimelineScreen(FilteredScreen):
    BINDINGS: ClassVar[list[Any]] = [  # and FilteredScreen's (Esc, /)
        Binding("s", "cycle_source", "Source"),
        Binding("w", "cycle_window", "Window"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.source: str | None = None  # None: every source
        self.window = DEFAULT_WINDOW
        self.timeline: Timeline | None = None
        self.entries: dict[str, Entry] = {}
        self.loads = 0  # completed reads (tests wait on it)

    @property
    def sfops(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def above_table(self) -> ComposeResult:
        yield Static(Text(), markup=False, id="ages")

    def on_mount(self) -> None:
        table = self.mount_table(COLUMNS)
        self._title()
        self.reload()
        self.set_interval(self.sfops.config.sfops.refresh_interval, self.reload)
        table.focus()

    # -- reading -----------------------------------------------------------------------------
    def sources(self) -> list[str]:
        return [s.name for s in self.sfops.services] + [ACTIONS]

    @work(exclusive=True, group="timeline-read")
    async def reload(self) -> None:
        writer = self.sfops.timeline_writer()
        if writer is None:
            return
        from backends.audit import AuditLog

        config = self.sfops.config
        audit = AuditLog(config.sfops.audit_log, env=config.env)
        since = time.time() - WINDOWS[self.window][1]
        wanted = None if self.source is None else [self.source]
        text = self.filter_text
        found = await writer.call(lambda store: read_with_audit(
            store, audit, since=since, sources=wanted, text=text)[0])
        self.timeline = found
        self.loads += 1
        self.show(writer.last_error)

    def show(self, error: str | None = None) -> None:
        timeline = self.timeline
        self._title(error)
        if timeline is None:
            return
        self.query_one("#ages", Static).update(ages_text(timeline.ages, timeline.until))
        self.entries = {entry.key: entry for entry in timeline.entries}
        sync_ordered(self.query_one("#table", DataTable),
                     timeline_rows(timeline.entries, timeline.until))
        self._detail()

    def _title(self, error: str | None = None) -> None:
        title = Text()
        if (env := self.sfops.environment_badge()) is not None:
            title.append_text(env)
            title.append(" ")
        title.append("Timeline", style="bold")
        title.append(f"  last {WINDOWS[self.window][0]} · {self.source or 'all sources'}",
                     style="dim")
        if self.filter_text:
            title.append(f" · filter {safe_text(self.filter_text, CELL)}", style="dim")
        for problem in [*(self.timeline.problems if self.timeline else ()), error]:
            if problem:
                title.append(f"  {safe_text(problem)}", style="red")
        self.query_one("#screen-title", Static).update(title)

    def _detail(self) -> None:
        """The selected entry in full (a message may be longer than its cell)."""
        table = self.query_one("#table", DataTable)
        entry = None
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            entry = self.entries.get(str(key))
        text = Text()
        if entry is not None:
            text.append(safe_text(entry.message, TEXT, lines=True))
            if entry.subject not in ("*", "None", ""):
                text.append(f"  ({safe_text(entry.source, CELL)} "
                            f"{safe_text(entry.subject, CELL)})", style="dim")
        self.query_one("#detail", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    # -- keys --------------------------------------------------------------------------------
    def action_reload(self) -> None:
        self.reload()

    def action_cycle_source(self) -> None:
        choices: list[str | None] = [None, *self.sources()]
        index = choices.index(self.source) if self.source in choices else 0
        self.source = choices[(index + 1) % len(choices)]
        self.reload()

    def action_cycle_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.reload()

    def filter_changed(self) -> None:
        self.reload()
