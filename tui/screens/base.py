"""The drill-down screen every backend uses: a keyed, diff-updated table plus action keys.

A backend screen subclass names its columns and turns a snapshot into rows with a pure renderer
(tui/render/<backend>.py): ``rows(snapshot)`` and ``detail(snapshot)`` read only their argument.
The app pushes each new snapshot of the screen's backend to :meth:`BackendScreen.show` (on
mount the screen shows the app's last one). In read-only mode the action bindings are never
created (not merely disabled), as k9s does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from backends.snapshot import Snapshot
from tui.footer import SteadyFooter
from tui.render.cells import CELL, age_text, safe_text
from tui.screens import ScreenAction
from tui.tablediff import add_columns, sync_table

if TYPE_CHECKING:
    from tui.screens.host import ScreenHost

__all__ = ["BackendScreen", "FilteredScreen", "ScreenAction", "row_matches"]


def row_matches(filter_text: str, cells: Sequence[Text]) -> bool:
    """The filter `/` keeps a row whose text holds the filter text, in any case."""
    return filter_text.lower() in " ".join(cell.plain for cell in cells).lower()


class FilteredScreen(Screen[None]):
    """A screen whose table (``#table``) has a filter field (``#filter``): ``/`` opens it,
    Enter applies it, Esc in it clears it; Esc elsewhere goes back."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "filter", "Filter"),
    ]
    filter_text = ""

    def filter_changed(self) -> None:
        """Show the table again for the new ``filter_text``."""
        raise NotImplementedError

    def initial_title(self) -> Text:
        """The title line as composed (updated later by the screen)."""
        return Text()

    def above_table(self) -> ComposeResult:
        """Widgets between the title and the table (none by default)."""
        yield from ()

    def compose(self) -> ComposeResult:
        yield Static(self.initial_title(), markup=False, id="screen-title")
        yield from self.above_table()
        yield Input(placeholder="filter (Enter to apply, Esc to clear)", id="filter")
        yield self.make_table()
        yield Static(Text(), markup=False, id="detail")
        yield SteadyFooter()

    def make_table(self) -> Widget:
        """The table (``#table``): a row-cursor DataTable unless the screen says otherwise."""
        return DataTable(id="table", cursor_type="row", zebra_stripes=True)

    def mount_table(self, columns: Sequence[str]) -> Widget:
        """On mount: the table's columns, the filter field hidden."""
        table = self.query_one("#table")
        if isinstance(table, DataTable):
            add_columns(table, columns)
        self.query_one("#filter", Input).display = False
        return table

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self.query_one("#table").focus()
        self.filter_changed()

    def action_back(self) -> None:
        field = self.query_one("#filter", Input)
        if field.has_focus:
            field.value = ""
            field.display = False
            self.filter_text = ""
            self.query_one("#table").focus()
            self.filter_changed()
        else:
            self.app.pop_screen()


class BackendScreen(FilteredScreen):
    backend: ClassVar[str] = ""
    title_text: ClassVar[str] = ""
    columns: ClassVar[Sequence[str]] = ()
    # False on sub-screens (e.g. Kafka topics) whose rows are not the actions' targets.
    offers_actions: ClassVar[bool] = True
    BINDINGS = [Binding("r", "app.refresh_now", "Refresh")]  # and FilteredScreen's

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot[Any] | None = None  # the one shown; the app pushes new ones
        self._covered_since_show = False  # a snapshot came while another screen was on top

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        raise NotImplementedError

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        """Text under the table (e.g. warnings); empty by default."""
        return Text()

    @property
    def sfops(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def initial_title(self) -> Text:
        return Text(safe_text(self.title_text, CELL), style="bold")

    def on_mount(self) -> None:
        table = self.mount_table(self.columns)
        if not self.sfops.read_only:
            for action in self.screen_actions():
                self._bindings.bind(action.key, f"screen_action('{action.key}')", action.label)
            self.refresh_bindings()
        self.snapshot = self.sfops.last_snapshot(self.backend)
        self.refresh_data()
        table.focus()

    def show(self, snapshot: Snapshot[Any] | None) -> None:
        """Show this snapshot of the backend (the app calls it with each new one)."""
        self.snapshot = snapshot
        if not self.is_mounted:  # until then on_mount shows the latest
            return
        if not self.is_active:
            # Covered (the help, a dialog, a drill-down on top): shown once on top again, as
            # dolphie skips its refresh while a modal is open. Rendering a covered 5,000-pod
            # table cost the loop its rows and made the screen on top repaint over it.
            self._covered_since_show = True
            return
        # A snapshot arriving while the app shuts down finds the widgets gone: nothing to
        # show it on.
        with contextlib.suppress(NoMatches):
            self.refresh_data()

    def on_screen_resume(self) -> None:
        """On top again: the snapshots that came while covered, shown now (the newest)."""
        if self._covered_since_show:
            self._covered_since_show = False
            with contextlib.suppress(NoMatches):
                self.refresh_data()

    def refresh_data(self) -> None:
        """Render the snapshot shown (again, e.g. after the filter changed)."""
        snapshot = self.snapshot
        self.show_title(snapshot)
        if snapshot is None:
            return
        rows = self.rows(snapshot)
        if self.filter_text:
            rows = [r for r in rows if row_matches(self.filter_text, r[1])]
        sync_table(self.query_one("#table", DataTable), rows)
        self.query_one("#detail", Static).update(self.detail(snapshot))

    def show_title(self, snapshot: Snapshot[Any] | None) -> None:
        """The title line for this snapshot: its age, or how long contact has been lost."""
        title = self.title_line()
        if snapshot is None:
            title.append("  waiting for the first poll…", style="dim")
            self.query_one("#screen-title", Static).update(title)
            return
        if snapshot.error:
            # No contact: the rows below are the last known state, never "now".
            title.append("  ✖ UNREACHABLE", style="bold red")
            title.append(f"  last known {age_text(snapshot.stale_for())}", style="yellow")
            title.append(f"  {safe_text(snapshot.error)}", style="red")
        else:
            title.append(f"  data {age_text(snapshot.stale_for())}", style="dim")
        self.query_one("#screen-title", Static).update(title)

    def title_line(self) -> Text:
        """The screen's title, after the environment's badge (which stack this is, on every
        screen) when the configuration has environments."""
        title = Text()
        if (env := self.sfops.environment_badge()) is not None:
            title.append_text(env)
            title.append(" ")
        title.append(safe_text(self.title_text, CELL), style="bold")
        return title

    def screen_actions(self) -> list[ScreenAction]:
        if not self.offers_actions:
            return []
        from tui.screens import screen_actions

        return screen_actions(self.backend)

    def selected_key(self) -> str | None:
        table = self.query_one("#table", DataTable)
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)

    def action_screen_action(self, key: str) -> None:
        spec = next((a for a in self.screen_actions() if a.key == key), None)
        if spec is None:
            return
        target = self.selected_key() if spec.needs_target else None
        if spec.needs_target and target is None:
            self.notify("select a row first", severity="warning")
            return
        self.sfops.start_action(lambda: spec.build(self.sfops, target))

    def filter_changed(self) -> None:
        self.refresh_data()
