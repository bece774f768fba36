"""The drill-down of a backend that has no screen of its own: its contract's table (plain
cells, shown as ``Text`` with control characters removed), its actions' keys from the same
contract. A fifth backend gets a working screen with no change under ``tui/``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from backends.snapshot import Health, Snapshot
from tui.render.cells import HEALTH_STYLE, plain
from tui.screens.base import BackendScreen


class GenericScreen(BackendScreen):
    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        from backends.registry import backend as find

        declared = find(self.backend)
        status = snapshot.best
        if declared is None or declared.rows is None or status is None:
            return []
        return [(row.key, [plain(cell, _style(row.health)) for cell in row.cells])
                for row in declared.rows(status)]


def _style(health: str) -> str:
    try:
        return HEALTH_STYLE[Health(health)] if health != Health.OK.value else ""
    except ValueError:
        return ""


def generic_screen(name: str) -> type[BackendScreen]:
    from backends.registry import backend as find

    declared = find(name)
    assert declared is not None
    return type(f"{name.title()}Screen", (GenericScreen,), {
        "backend": declared.name, "title_text": declared.title, "columns": declared.columns})
