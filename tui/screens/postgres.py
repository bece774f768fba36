"""PostgreSQL drill-down: members (role, timeline, LSN, lag), then warnings, standbys and
slots below. Keys from the contract (backends/postgres/contract.py): `f` fails over to, `s`
switches over to, `j` rejoins the selected member."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from backends.snapshot import Snapshot
from tui.render.cells import CELL, safe_text
from tui.render.postgres import (
    MEMBER_COLUMNS,
    member_rows,
    slot_rows,
    standby_rows,
    warning_rows,
)
from tui.screens.base import BackendScreen


def _section(title: str, rows: Sequence[tuple[str, Sequence[Text]]]) -> Text:
    text = Text(f"{safe_text(title, CELL)}\n", style="bold")
    for _, cells in rows:
        text.append_text(Text("  ").join(cells))
        text.append("\n")
    return text


class PostgresScreen(BackendScreen):
    backend = "postgres"
    title_text = "PostgreSQL — members"
    columns = MEMBER_COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = snapshot.best
        if status is None:
            return []
        bound = self.sfops.config.postgres.max_lag_on_failover if self.sfops.config.postgres else 1
        return list(member_rows(status, max_lag_bytes=bound))

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = snapshot.best
        if status is None:
            return Text()
        text = Text()
        warnings = warning_rows(status)
        text.append_text(_section("warnings", warnings) if warnings else
                         Text("no warnings\n", style="green"))
        for member in status.members:
            standbys = standby_rows(member)
            if standbys:
                text.append_text(_section(f"streaming from {member.name}", standbys))
            slots = slot_rows(member)
            if slots:
                text.append_text(_section(f"slots on {member.name}", slots))
        return text


SCREEN = PostgresScreen
