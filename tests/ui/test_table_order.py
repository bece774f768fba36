"""tui.tablediff.sync_table: keyed updates by diff; ``ordered=True`` shows the rows in the
order given (What is wrong now: a likely cause right above its symptoms, whenever each
appeared)."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.tablediff import add_columns, sync_table


class _TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable(id="t")

    def on_mount(self) -> None:
        add_columns(self.query_one(DataTable), ["what"])


def _keys(table: DataTable[Text]) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


async def test_ordered_sync_moves_a_late_cause_above_its_symptoms() -> None:
    app = _TableApp()
    async with app.run_test():
        table = app.query_one(DataTable)
        symptom = ("nginx:member-failing:api-1", [Text("api-1 failing")])
        cause = ("postgres:member-unreachable:pg-1", [Text("pg-1 unreachable")])
        sync_table(table, [symptom])
        sync_table(table, [cause, symptom])  # unordered: new rows are appended
        assert _keys(table) == [symptom[0], cause[0]]
        changed = sync_table(table, [cause, symptom], ordered=True)
        assert changed == 0  # nothing rewritten, only the order
        assert _keys(table) == [cause[0], symptom[0]]
        sync_table(table, [symptom], ordered=True)
        assert _keys(table) == [symptom[0]]
