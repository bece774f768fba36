"""Pilot against the real lab: kill the primary, fail over to pg-2 by keyboard through the
confirmation modal, watch the roles change; then put the lab back."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from backends.audit import AuditLog
from backends.config import load
from tests.integration.test_pg import reset_pg
from tests.ui.helpers import wait_for
from tests.ui.test_nginx_screen import make_app
from tui.modals import ConfirmActionScreen, ProgressScreen
from tui.screens.postgres import PostgresScreen

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_stack(lab):
    lab.ensure("pg")
    reset_pg(lab)
    yield lab
    reset_pg(lab)


def role_of(app, member: str) -> str:
    return app.screen.query_one("#table", DataTable).get_cell(member, "c1").plain


async def test_failover_by_keyboard(pg_stack):
    app = make_app(pg_stack)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_backend("postgres")
        await wait_for(pilot, lambda: isinstance(app.screen, PostgresScreen))
        await wait_for(pilot, lambda: "primary" in role_of(app, "pg-1"), timeout=30,
                       what="pg-1 shown primary")
        pg_stack.stop("pg-1", kill=True)
        await wait_for(pilot, lambda: "primary" not in role_of(app, "pg-1"), timeout=30,
                       what="pg-1 shown down")
        await pilot.press("down")
        assert app.screen.selected_key() == "pg-2"
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), timeout=60,
                       what="failover preflight")
        await wait_for(pilot, lambda: app.screen.focused.id == "cancel", what="Cancel focused")
        assert not app.screen.blocked, "preflight refused the failover"
        await pilot.click("#phrase")
        await pilot.press(*"pg-2")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen), what="progress")
        progress = app.screen
        await wait_for(pilot, lambda: progress.finished, timeout=120, what="failover to end")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "primary" in role_of(app, "pg-2"), timeout=30,
                       what="pg-2 shown primary")
    record = AuditLog(load(pg_stack.config_path).sfops.audit_log).read(limit=1)[-1]
    assert (record["action"], record["target"], record["outcome"]) == (
        "pg.failover", "pg-2", "succeeded"), record
