"""Pilot against the real lab: open the nginx screen, drain api-3 with the typed confirmation,
see its state change, undrain it. Read-only mode has no drain binding at all."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.services import build_services
from tests.ui.helpers import wait_for
from tui.app import SfopsApp
from tui.modals import ConfirmActionScreen, ProgressScreen
from tui.screens.nginx import NginxScreen

pytestmark = pytest.mark.integration


def make_app(lab, *, read_only: bool = False) -> SfopsApp:
    config = load(lab.config_path)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), read_only=read_only,
                          secrets=config.secrets())
    return SfopsApp(config, build_services(config), runner=runner, config_path=lab.config_path)


def state_of(app: SfopsApp, member: str) -> str:
    table = app.screen.query_one("#table", DataTable)
    return table.get_cell(member, "c1").plain


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx")


async def test_drain_and_undrain_by_keyboard(stack):
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen), what="nginx screen")
        await wait_for(pilot, lambda: app.screen.query_one("#table", DataTable).row_count == 3,
                       timeout=20, what="three members")
        await wait_for(pilot, lambda: "up" in state_of(app, "api-3"), timeout=20)
        await pilot.press("down", "down")
        assert app.screen.selected_key() == "api-3"

        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), timeout=30,
                       what="confirmation with preflight")
        await wait_for(pilot, lambda: app.screen.focused.id == "cancel", what="Cancel focused")
        assert app.screen.query_one("#confirm").disabled  # until the name is typed
        await pilot.click("#phrase")
        await pilot.press(*"api-3")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen), what="progress")
        progress = app.screen
        await wait_for(pilot, lambda: progress.finished, timeout=90, what="drain to finish")
        assert "succeeded" in str(progress.query_one("#status").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen))
        await wait_for(pilot, lambda: "drained" in state_of(app, "api-3"), timeout=20,
                       what="api-3 shown drained")

        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), timeout=30)
        await wait_for(pilot, lambda: app.screen.focused.id == "cancel", what="Cancel focused")
        await pilot.press("tab", "enter")  # Cancel has the focus; move to Confirm
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen))
        progress = app.screen
        await wait_for(pilot, lambda: progress.finished, timeout=90, what="undrain to finish")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "up" in state_of(app, "api-3"), timeout=20,
                       what="api-3 back up")
    records = AuditLog(load(stack.config_path).sfops.audit_log).read(limit=2)
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("nginx.drain", "api-3", "succeeded"),
        ("nginx.undrain", "api-3", "succeeded"),
    ]


async def test_read_only_has_no_drain_binding(stack):
    app = make_app(stack, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen))
        keys = set(app.screen.active_bindings)
        assert "d" not in keys and "u" not in keys
        await pilot.press("d")  # nothing happens
        await pilot.pause(0.5)
        assert isinstance(app.screen, NginxScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(t.startswith(("Drain", "Undrain")) for t in titles)
        assert app.runner.read_only
