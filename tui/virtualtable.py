"""A table that renders only the rows on screen, straight from the caller's row source.

Why not DataTable: it keeps every row as widget state (cells, a measured width per cell, a
render cache per row), so showing a 5,000-pod snapshot costs 35,000 cell measurements and
as many dictionary updates on the event loop before the first paint, and each refresh's diff
walks all of them again (the profile in README "Kubernetes at scale"). Here a refresh hands
over the row keys and a function that renders one row's cells; only the rows in view (about
40) are rendered, on paint. The columns have fixed widths (the renderer pads and cuts the
cells), so nothing is ever measured. Textual's Line API (ScrollView + ``render_line``) is the
library's own way to do this; no third-party virtual-table widget exists for Textual 8.

Keyboard as in a row-cursor DataTable: up/down, page up/down, home/end (ctrl+home/end too),
left/right scroll sideways; a click puts the cursor on the row. The cursor stays on the same
row key when rows come and go. Cells are ``rich.text.Text`` made by the caller from safe text:
nothing here parses markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CellSource = Callable[[int], Sequence[Text]]
GAP = 1  # blank cells between columns


class VirtualTable(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home", "first", "First", show=False),
        Binding("end,ctrl+end", "last", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]
    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor",
                         "virtual-table--even"}
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; background: $surface; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $panel; }
    VirtualTable > .virtual-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold;
    }
    VirtualTable > .virtual-table--even { background: $surface-lighten-1; }
    """

    class CursorMoved(Message):
        """The cursor is on another row (its key, or None for an empty table)."""

        def __init__(self, table: VirtualTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, columns: Sequence[str], widths: Sequence[int], *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        if len(columns) != len(widths):
            raise ValueError("one width per column")
        self.widths = tuple(widths)
        self.header = [Text(label[:width].ljust(width)) for label, width in zip(columns, widths,
                                                                                strict=True)]
        self.line_width = sum(widths) + GAP * (len(widths) - 1)
        self._keys: Sequence[str] = ()
        self._index: dict[str, int] = {}
        self._cells: CellSource = lambda index: ()
        self.cursor_row = 0

    # -- rows ---------------------------------------------------------------------------------
    def set_rows(self, keys: Sequence[str], cells: CellSource) -> None:
        """Show these rows: ``keys[i]`` is row i's key, ``cells(i)`` its cells (called only
        for the rows in view, on paint). The cursor stays on its row's key if it is still
        there, else at the same position."""
        current = self.selected_key
        self._keys = keys
        self._index = {key: index for index, key in enumerate(keys)}
        self._cells = cells
        self.virtual_size = Size(self.line_width, len(keys) + 1)
        row = self._index.get(current, self.cursor_row) if current is not None else 0
        self._set_cursor(row, notify=current is None or current not in self._index)
        self.refresh()

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def selected_key(self) -> str | None:
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    def get_row_index(self, key: str) -> int:
        """The row's index (as DataTable's); KeyError when there is no such row."""
        return self._index[key]

    def row_cells(self, key: str) -> Sequence[Text]:
        return self._cells(self._index[key])

    # -- cursor -------------------------------------------------------------------------------
    def move_cursor(self, *, row: int) -> None:
        self._set_cursor(row)

    def _set_cursor(self, row: int, *, notify: bool = True) -> None:
        row = max(0, min(row, len(self._keys) - 1))
        moved = row != self.cursor_row
        before, top = self.cursor_row, round(self.scroll_y)
        self.cursor_row = row
        self._scroll_to_cursor()
        if round(self.scroll_y) == top:  # no scroll: only the two cursor lines change
            for index in {before, row}:
                self.refresh_line(index + 1)  # virtual y: the header is line 0
        else:
            self.refresh()
        if moved or notify:
            self.post_message(self.CursorMoved(self, self.selected_key))

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)  # the header takes a line

    def _scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + self._page:
            self.scroll_to(y=self.cursor_row - self._page + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._set_cursor(self.cursor_row - self._page)

    def action_page_down(self) -> None:
        self._set_cursor(self.cursor_row + self._page)

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(len(self._keys) - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self._set_cursor(round(self.scroll_y) + event.y - 1)

    def on_resize(self) -> None:
        self._scroll_to_cursor()

    # -- painting -----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = round(self.scroll_x)
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("virtual-table--header")
            return self._strip(self.header, style, None, scroll_x, width)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._keys):
            return Strip.blank(width, base)
        if index == self.cursor_row:
            cursor = self.get_component_rich_style("virtual-table--cursor")
            return self._strip(self._cells(index), base, cursor, scroll_x, width)
        style = base + self.get_component_rich_style("virtual-table--even") if index % 2 \
            else base
        return self._strip(self._cells(index), style, None, scroll_x, width)

    def _strip(self, cells: Sequence[Text], style: object, over: object, scroll_x: int,
               width: int) -> Strip:
        line = Text(" " * GAP).join(cells)
        segments = list(line.render(self.app.console, end=""))
        segments = list(Segment.apply_style(segments, style, over))  # type: ignore[arg-type]
        strip = Strip(segments, line.cell_len).crop(scroll_x, scroll_x + width)
        fill = style if over is None else over
        return strip.extend_cell_length(width, fill)  # type: ignore[arg-type]
