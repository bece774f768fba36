"""Keyed DataTable updates by diff: only changed cells are touched, rows are never cleared
and refilled (a full refill each tick flickers and loses the cursor)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey


def sync_table(table: DataTable[Text], rows: Sequence[tuple[str, Sequence[Text]]], *,
               ordered: bool = False) -> int:
    """Make ``table`` show ``rows`` (key, cells); returns how many cells changed.

    Existing rows keep their place (and the cursor stays put); new rows are appended —
    unless ``ordered``: then the rows are shown in the order given (What is wrong now lists
    each likely cause right above its symptoms, whenever they appeared), still by diff.

    The table's columns must have been added with string keys "c0", "c1", …
    """
    if rows and len(table.columns) < len(rows[0][1]):
        return 0  # the screen is not mounted yet (columns come in on_mount); next poll will do
    changed = 0
    wanted = {key for key, _ in rows}
    with table.app.batch_update():
        for row_key in list(table.rows):
            if row_key.value not in wanted:
                table.remove_row(row_key)
                changed += 1
        for key, cells in rows:
            if RowKey(key) not in table.rows:
                table.add_row(*cells, key=key)
                changed += len(cells)
                continue
            for index, cell in enumerate(cells):
                column = f"c{index}"
                try:
                    current = table.get_cell(key, column)
                except CellDoesNotExist:
                    current = None
                if current != cell:
                    table.update_cell(key, column, cell, update_width=True)
                    changed += 1
        if ordered:
            _order(table, rows)
    return changed


def _order(table: DataTable[Text], rows: Sequence[tuple[str, Sequence[Text]]]) -> None:
    """Rows in the order of ``rows``. DataTable sorts by cell values only, so each row's
    rank is looked up by its cells (rows with identical cells may trade places: no one can
    tell them apart)."""
    wanted = [key for key, _ in rows]
    if [row.key.value for row in table.ordered_rows] == wanted:
        return
    rank = {_plain(cells): index for index, (_, cells) in enumerate(rows)}
    table.sort(key=lambda cells: rank.get(_plain(cells), len(rank)))


def _plain(cells: Sequence[object]) -> tuple[str, ...]:
    return tuple(cell.plain if isinstance(cell, Text) else str(cell) for cell in cells)


def add_columns(table: DataTable[Text], labels: Sequence[str]) -> None:
    for index, label in enumerate(labels):
        table.add_column(label, key=f"c{index}")


def sync_ordered(table: DataTable[Text], rows: Sequence[tuple[str, Sequence[Text]]]) -> int:
    """:func:`sync_table` for a table whose row order matters (a timeline): when every new
    row comes after the rows kept, only the changes are applied; a row that belongs between
    kept ones (an entry recorded late) makes the table refilled in order, the cursor kept on
    the same row — or on the last one when it was there, as it is at first (the view
    follows the newest)."""
    wanted = [key for key, _ in rows]
    wanted_set = set(wanted)
    kept = [key.value for key in table.rows if key.value in wanted_set]
    if wanted[:len(kept)] == kept:
        at_end = table.row_count == 0 or table.cursor_row >= table.row_count - 1
        changed = sync_table(table, rows)
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        return changed
    try:
        current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        current = None
    with table.app.batch_update():
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
    if current in wanted_set:
        table.move_cursor(row=wanted.index(current))
    return sum(len(cells) for _, cells in rows)
