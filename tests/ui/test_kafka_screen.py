"""Pilot against the lab's Kafka: open the Kafka screen by its panel number, drain broker 2 with
the confirmation (preflight shown, Cancel focused), watch it lead nothing, undrain it, and find
both actions audited as succeeded with broker 2 leading its partitions again. And a crash of
the admin worker while the app polls costs one poll, not the app."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.kafka.model import KafkaStatus
from backends.kafka.service import KafkaService
from backends.services import build_services
from tests.ui.helpers import wait_for
from tui.app import SfopsApp
from tui.modals import ConfirmActionScreen, ProgressScreen
from tui.screens.kafka import KafkaScreen

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

LEADERS = "c4"  # BROKER_COLUMNS: Broker, Address, Rack, State, Leaders, ...


def make_app(lab) -> SfopsApp:
    config = load(lab.config_path)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    return SfopsApp(config, build_services(config), runner=runner, config_path=lab.config_path)


def kafka_service(app: SfopsApp) -> KafkaService:
    return next(s for s in app.services if isinstance(s, KafkaService))


def panel_key(app: SfopsApp) -> str:
    return str([s.name for s in app.services].index("kafka") + 1)


def leaders_of(app: SfopsApp, broker: str) -> int:
    table = app.screen.query_one("#table", DataTable)
    return int(table.get_cell(broker, LEADERS).plain)


def status(app: SfopsApp) -> KafkaStatus | None:
    snapshot = app.snapshots.get("kafka")
    return snapshot.value if snapshot is not None and snapshot.ok else None


@pytest.fixture(scope="module")
def kafka_lab(lab):
    lab.ensure("kafka")
    state_dir = lab.config().sfops.state_dir
    assert not (state_dir / "kafka-drain-2.json").exists(), "broker 2 is drained already"
    # Earlier tests may have killed and restarted brokers; leadership only moves back when
    # someone elects (the lab disables auto rebalance), so start from preferred leaders.
    done = lab.sfops("kafka", "elect-leaders", "--yes", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return lab


async def confirm(pilot, app: SfopsApp, target: str) -> ProgressScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), timeout=60,
                   what="confirmation with preflight")
    await wait_for(pilot, lambda: app.screen.focused.id == "cancel", what="Cancel focused")
    if app.screen.query("#phrase"):  # destructive: type the target to enable Confirm
        await pilot.click("#phrase")
        await pilot.press(*target)
        await pilot.press("enter")
    else:
        await pilot.press("tab", "enter")  # Cancel has the focus; move to Confirm
    await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen), what="progress")
    return app.screen


async def test_drain_and_undrain_broker_2_by_keyboard(kafka_lab):
    app = make_app(kafka_lab)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(panel_key(app))  # panels follow build_services' order
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen), what="kafka screen")
        await wait_for(pilot, lambda: app.screen.query_one("#table", DataTable).row_count == 3,
                       timeout=30, what="three brokers")
        await wait_for(pilot, lambda: status(app) is not None
                       and status(app).counts.not_preferred == 0
                       and status(app).counts.under_replicated == 0, timeout=60,
                       what="a healthy, balanced cluster")
        preferred = {p.name: p.leader for p in status(app).partitions()}
        assert leaders_of(app, "2") > 0
        for _ in range(3):
            if app.screen.selected_key() == "2":
                break
            await pilot.press("down")
        assert app.screen.selected_key() == "2"

        await pilot.press("d")
        progress = await confirm(pilot, app, "2")
        await wait_for(pilot, lambda: progress.finished, timeout=180, what="drain to finish")
        assert "succeeded" in str(progress.query_one("#status").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen))
        await wait_for(pilot, lambda: leaders_of(app, "2") == 0, timeout=30,
                       what="broker 2 shown leading nothing")
        assert app.screen.selected_key() == "2"

        await pilot.press("u")
        progress = await confirm(pilot, app, "2")
        await wait_for(pilot, lambda: progress.finished, timeout=180, what="undrain to finish")
        assert "succeeded" in str(progress.query_one("#status").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen))
        await wait_for(pilot, lambda: leaders_of(app, "2") > 0 and status(app) is not None
                       and status(app).counts.not_preferred == 0, timeout=30,
                       what="broker 2 leading again")
        assert {p.name: p.leader for p in status(app).partitions()} == preferred
        assert app.loop_lag_max < 1.0, f"event loop stalled {app.loop_lag_max:.2f} s"
    records = AuditLog(load(kafka_lab.config_path).sfops.audit_log).read(limit=2)
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("kafka.drain", "2", "succeeded"),
        ("kafka.undrain", "2", "succeeded"),
    ]
    assert not (kafka_lab.config().sfops.state_dir / "kafka-drain-2.json").exists()


async def test_admin_worker_crash_costs_one_poll_not_the_app(kafka_lab):
    app = make_app(kafka_lab)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: status(app) is not None, timeout=30, what="first poll")
        worker = kafka_service(app).admin.worker
        first = worker.pid
        await worker.call("test_fault", "read", "abort", budget=10)
        await wait_for(pilot, lambda: "Kafka admin worker crashed" in
                       (app.snapshots["kafka"].error or ""), timeout=30, what="crash shown")
        crashed = app.snapshots["kafka"]
        assert "killed by SIGABRT" in crashed.error
        assert crashed.best is not None  # the last good value stays on screen
        await wait_for(pilot, lambda: app.snapshots["kafka"].ok, timeout=30,
                       what="next poll on a fresh worker")
        assert worker.pid not in (None, first)
        assert status(app).brokers_up == 3
        await pilot.press(panel_key(app))
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen), what="still usable")
        assert app.is_running


async def test_topics_partitions_and_groups_screens(kafka_lab):
    from tui.screens.kafka import KafkaGroupsScreen, KafkaPartitionsScreen, KafkaTopicsScreen

    app = make_app(kafka_lab)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(panel_key(app))
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen), what="kafka screen")
        await wait_for(pilot, lambda: status(app) is not None, timeout=30, what="first poll")
        # Keys and palette entries come from the contract: d/u on the selected broker, e for
        # every partition; the palette names each broker of the last status.
        assert sorted(a.key for a in app.screen.screen_actions()) == ["d", "e", "u"]
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Drain broker: 1", "Undrain broker: 3", "Elect preferred leaders"} <= titles
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaTopicsScreen), what="topics")
        assert app.screen.screen_actions() == []  # a topic is not a broker
        table = app.screen.query_one("#table", DataTable)
        await wait_for(pilot, lambda: table.get_row_index("streamforge.events") >= 0,
                       timeout=30, what="the application topic listed")
        table.move_cursor(row=table.get_row_index("streamforge.events"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaPartitionsScreen),
                       what="partitions screen")
        await wait_for(pilot, lambda: app.screen.query_one("#table", DataTable).row_count == 6,
                       timeout=30, what="six partitions of streamforge.events")
        assert app.screen.screen_actions() == []
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen), what="back")
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaGroupsScreen), what="groups")
        groups = app.screen.query_one("#table", DataTable)
        await wait_for(pilot, lambda: groups.get_row_index("streamforge-consumer") >= 0,
                       timeout=30, what="the lab's consumer group listed")
        assert app.screen.screen_actions() == []
