"""Screens get each new snapshot pushed by the app (they never read the app's back), so a
screen and the sub-screens under it always show the latest one."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from backends.kafka.model import KafkaStatus
from backends.service import BackendSummary
from backends.snapshot import Health, Snapshot
from tests.ui.fakes import FakeService
from tests.ui.helpers import wait_for
from tests.unit.test_render_kafka import make_status
from tui.app import SfopsApp
from tui.screens.kafka import KafkaScreen, KafkaTopicsScreen


class FakeKafka(FakeService):
    def __init__(self) -> None:
        super().__init__("kafka", "Kafka")
        self.status = make_status()

    async def poll(self) -> KafkaStatus:  # type: ignore[override]
        self.polls += 1
        return self.status

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        return BackendSummary(self.name, self.title, Health.OK)


def make_app(tmp_path, service) -> SfopsApp:
    config = SfopsConfig(
        path=tmp_path / "sfops.toml",
        sfops=SfopsSettings(refresh_interval=0.2, audit_log=tmp_path / "audit.jsonl",
                            state_dir=tmp_path / "state"),
        executors={},
    )
    return SfopsApp(config, [service], runner=ActionRunner(AuditLog(tmp_path / "audit.jsonl")))


def rows(app: SfopsApp) -> int:
    return app.screen.query_one("#table", DataTable).row_count


async def test_screens_show_the_pushed_snapshot(tmp_path):
    kafka = FakeKafka()
    app = make_app(tmp_path, kafka)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: kafka.polls >= 1, what="first poll")
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaScreen), what="kafka screen")
        brokers = app.screen
        await wait_for(pilot, lambda: rows(app) == 3, what="three brokers")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, KafkaTopicsScreen), what="topics")
        await wait_for(pilot, lambda: rows(app) == 2, what="two topics")

        # One topic and one broker fewer: the topics screen and the brokers under it get it.
        kafka.status = dataclasses.replace(kafka.status, topics=kafka.status.topics[:1],
                                           brokers=kafka.status.brokers[:2])
        await wait_for(pilot, lambda: rows(app) == 1, what="the new snapshot shown")
        assert brokers.snapshot is not None and brokers.snapshot.best is kafka.status
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is brokers, what="back to the brokers")
        # Covered, it kept the snapshot; on top again, it shows it (before its next paint).
        await wait_for(pilot, lambda: rows(app) == 2, what="the newest snapshot shown")

        # rows() and detail() read the snapshot they are given, nothing else.
        assert app.snapshots["kafka"].best is kafka.status
        assert len(brokers.rows(Snapshot.success(make_status()))) == 3
