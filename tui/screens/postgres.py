"""PostgreSQL drill-down: members (role, timeline, LSN, lag), then warnings, standbys and
slots below. `f` fails over to, `s` switches over to, `j` rejoins the selected member."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text

from backends.actions import Action
from backends.snapshot import Snapshot
from tui.render.postgres import (
    MEMBER_COLUMNS,
    member_rows,
    slot_rows,
    standby_rows,
    warning_rows,
)
from tui.screens.base import BackendScreen, ScreenAction

if TYPE_CHECKING:
    from tui.app import SfopsApp


def _cluster(app: SfopsApp) -> Any:
    from backends.postgres.cluster import PgCluster

    service = next((s for s in app.services if s.name == "postgres"), None)
    # Share the app's service: it remembers the last LSN seen on the primary, which the
    # failover's lag check compares the candidate against.
    return PgCluster(app.config, service=service)  # type: ignore[arg-type]


def build_failover(app: SfopsApp, member: str) -> Action:
    from backends.postgres.actions import Failover

    return app.runner.build(Failover, _cluster(app), member)


def build_switchover(app: SfopsApp, member: str) -> Action:
    from backends.postgres.actions import Switchover

    return app.runner.build(Switchover, _cluster(app), member)


def build_rejoin(app: SfopsApp, member: str) -> Action:
    from backends.postgres.actions import Rejoin

    return app.runner.build(Rejoin, _cluster(app), member)


def _section(title: str, rows: Sequence[tuple[str, Sequence[Text]]]) -> Text:
    text = Text(f"{title}\n", style="bold")
    for _, cells in rows:
        text.append_text(Text("  ").join(cells))
        text.append("\n")
    return text


class PostgresScreen(BackendScreen):
    backend = "postgres"
    title_text = "PostgreSQL — members"
    columns = MEMBER_COLUMNS
    actions = (
        ScreenAction("f", "Failover to", build_failover),
        ScreenAction("s", "Switchover to", build_switchover),
        ScreenAction("j", "Rejoin", build_rejoin),
    )

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

    @classmethod
    def palette_targets(cls, app: SfopsApp) -> list[str]:
        postgres = app.config.postgres
        return [] if postgres is None else list(postgres.members)


SCREEN = PostgresScreen
