"""nginx drill-down: one row per upstream member; `d` drains, `u` undrains the selected one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text

from backends.actions import Action
from backends.snapshot import Snapshot
from tui.render.nginx import COLUMNS, header, member_rows
from tui.screens.base import BackendScreen, ScreenAction

if TYPE_CHECKING:
    from tui.app import SfopsApp


def _service(app: SfopsApp) -> Any:
    for service in app.services:
        if service.name == "nginx":
            return service
    raise LookupError("nginx is not configured")


def build_drain(app: SfopsApp, member: str) -> Action:
    from backends.nginx.actions import DrainMember

    return app.runner.build(DrainMember, _service(app), member)


def build_undrain(app: SfopsApp, member: str) -> Action:
    from backends.nginx.actions import UndrainMember

    return app.runner.build(UndrainMember, _service(app), member)


class NginxScreen(BackendScreen):
    backend = "nginx"
    title_text = "Load balancer — upstream members"
    columns = COLUMNS
    actions = (
        ScreenAction("d", "Drain", build_drain),
        ScreenAction("u", "Undrain", build_undrain),
    )

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = snapshot.best
        if status is None:
            return []
        return [(row.key, row.cells) for row in member_rows(status)]

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = snapshot.best
        return Text() if status is None else header(status)

    @classmethod
    def palette_targets(cls, app: SfopsApp) -> list[str]:
        nginx = app.config.nginx
        return [] if nginx is None else list(nginx.members)


SCREEN = NginxScreen
