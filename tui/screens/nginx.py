"""nginx drill-down: one row per upstream member (keys from the contract: `d` drains, `u`
undrains the selected one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from backends.snapshot import Snapshot
from tui.render.nginx import COLUMNS, header, member_rows
from tui.screens.base import BackendScreen


class NginxScreen(BackendScreen):
    backend = "nginx"
    title_text = "Load balancer — upstream members"
    columns = COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = snapshot.best
        if status is None:
            return []
        return [(row.key, row.cells) for row in member_rows(status)]

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = snapshot.best
        return Text() if status is None else header(status)


SCREEN = NginxScreen
