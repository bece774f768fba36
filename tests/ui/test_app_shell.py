"""The TUI shell with fake backends: panels, alerts, hung backend, markup safety, read-only."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from backends.snapshot import Health
from tests.ui.fakes import INJECTION, FakeService
from tests.ui.helpers import wait_for
from tui.app import SfopsApp
from tui.screens.overview import BackendPanel


def make_app(tmp_path, services, *, read_only=False) -> SfopsApp:
    config = SfopsConfig(
        path=tmp_path / "sfops.toml",
        sfops=SfopsSettings(
            refresh_interval=0.2, audit_log=tmp_path / "audit.jsonl", state_dir=tmp_path / "state"
        ),
        executors={},
    )
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"), read_only=read_only)
    return SfopsApp(config, services, runner=runner)


def panel_text(app: SfopsApp, name: str) -> str:
    panel = app.screen.query_one(f"#panel-{name}", BackendPanel)
    return " ".join(str(s.render()) for s in panel.query(Static))


async def test_panels_update_and_alerts_show_since(tmp_path):
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer")])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 3, what="three polls")
        await wait_for(pilot, lambda: "DEGRADED" in panel_text(app, "nginx"), what="badge")
        alerts = app.screen.query_one("#alerts", DataTable)
        assert alerts.row_count == 1


async def test_hung_backend_does_not_delay_another_or_the_keyboard(tmp_path):
    hung = FakeService("postgres", "PostgreSQL", hang=True)
    live = FakeService("nginx", "Load balancer")
    app = make_app(tmp_path, [live, hung])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: live.polls >= 2, what="first polls")
        app.loop_lag_max = 0.0  # measure from here: start-up (CSS, compose) is not the point
        await wait_for(pilot, lambda: live.polls >= 7, what="the live backend keeps polling")
        # The hung one fails its contact probe every refresh and its poll is abandoned: it
        # reads UNREACHABLE, and its polls never overlap.
        await wait_for(pilot, lambda: app.summaries["postgres"].health is Health.UNREACHABLE,
                       what="the hung backend reads unreachable")
        assert hung.max_in_flight == 1
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "OverviewScreen", what="back")
        assert app.loop_lag_max < 1.0, f"event loop stalled {app.loop_lag_max:.3f}s"


async def test_markup_from_outside_is_rendered_literally(tmp_path):
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer", message=INJECTION)])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#alerts", DataTable).row_count == 1)
        table = app.screen.query_one("#alerts", DataTable)
        message = table.get_cell_at((0, 2))
        assert isinstance(message, Text)
        assert message.plain == INJECTION
        await wait_for(
            pilot,
            lambda: "[@click=app.quit]" in panel_text(app, "nginx"),
            what="literal markup in the panel",
        )
        assert app.is_running


async def test_quit_closes_services(tmp_path):
    service = FakeService("nginx", "Load balancer")
    app = make_app(tmp_path, [service])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: service.polls >= 1)
        await pilot.press("q")
    assert service.closed


@pytest.mark.parametrize("read_only", [True, False])
async def test_read_only_palette_has_no_actions(tmp_path, read_only):
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer")], read_only=read_only)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Open Load balancer" in titles
        assert not any(t.startswith(("Drain", "Undrain")) for t in titles) or not read_only


async def test_no_color_still_reads_health_as_text(tmp_path, monkeypatch):
    """With NO_COLOR the badge carries the health in words and symbols, not only colour."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer")])
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "▲ DEGRADED" in panel_text(app, "nginx"), what="badge")


@pytest.mark.parametrize("count", [2, 5])
async def test_panel_keys_follow_the_configured_backends(tmp_path, count):
    from tui.app import help_text

    services = [FakeService(f"b{i}", f"Backend {i}") for i in range(1, count + 1)]
    app = make_app(tmp_path, services)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "OverviewScreen")
        keys = app.screen.active_bindings
        assert [str(i) in keys for i in range(1, 10)] == [i <= count for i in range(1, 10)]
        assert f"1-{count} / Enter" in help_text(app).plain


async def test_an_interrupted_action_is_notified_listed_and_shown_in_red(tmp_path):
    """A started record without an outcome (its sfops was SIGKILLed): on start the TUI
    notifies it with what to check, lists it under "What is wrong now" and shows it as
    interrupted in Recent actions."""
    from backends.audit import StartedRecord, process_identity

    log = AuditLog(tmp_path / "audit.jsonl")
    killed = StartedRecord(user="bob", host="bastion", action="pg.switchover", target="pg-2",
                           params={"to": "pg-2"}, forced=False, preflight=[],
                           process={**process_identity(), "pid_start": -1})
    log.append(killed)
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer")])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: any(killed.id in n.message for n in app._notifications),
                       what="a notification naming the record")
        (note,) = [n for n in app._notifications if killed.id in n.message]
        assert "interrupted" in note.message and "exactly one primary" in note.message
        alerts = app.screen.query_one("#alerts", DataTable)
        await wait_for(pilot, lambda: any(
            "pg.switchover pg-2 interrupted" in alerts.get_cell_at((row, 2)).plain
            for row in range(alerts.row_count)), what="a line in What is wrong now")
        recent = app.screen.query_one("#recent", DataTable)
        await wait_for(pilot, lambda: recent.row_count == 1, what="the recent action")
        assert recent.get_cell_at((0, 2)).plain == "interrupted"
