"""Kafka drill-down: the brokers (leaders, replicas, preferred counts), then the cluster's
partition health, problem partitions and consumer groups under the table.

Keys (absent in read-only mode): d drain the selected broker, u undrain it, e preferred leader
election for every partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text

from backends.actions import Action
from backends.snapshot import Snapshot
from tui.render.kafka import BROKER_COLUMNS, broker_rows, cluster_text, partition_state
from tui.screens.base import BackendScreen, ScreenAction

if TYPE_CHECKING:
    from backends.kafka.model import KafkaStatus
    from backends.kafka.service import KafkaService
    from tui.app import SfopsApp

MAX_PROBLEM_PARTITIONS = 8


def _service(app: SfopsApp) -> KafkaService:
    from backends.kafka.service import KafkaService

    for service in app.services:
        if isinstance(service, KafkaService):
            return service
    raise LookupError("Kafka is not configured")


def _status(app: SfopsApp) -> KafkaStatus | None:
    from backends.kafka.model import KafkaStatus

    snapshot = app.snapshots.get("kafka")
    best = snapshot.best if snapshot is not None else None
    return best if isinstance(best, KafkaStatus) else None


def _broker_id(target: str) -> int:
    try:
        return int(target)
    except ValueError:
        raise ValueError(f"{target!r} is not a broker id") from None


def _drain(app: SfopsApp, target: str) -> Action:
    from backends.kafka.actions import DrainBroker

    return app.runner.build(DrainBroker, _service(app), _broker_id(target),
                            app.config.sfops.state_dir)


def _undrain(app: SfopsApp, target: str) -> Action:
    from backends.kafka.actions import UndrainBroker

    return app.runner.build(UndrainBroker, _service(app), _broker_id(target),
                            app.config.sfops.state_dir)


def _elect(app: SfopsApp, target: str) -> Action:
    from backends.kafka.actions import ElectLeaders

    return app.runner.build(ElectLeaders, _service(app), None)


class KafkaScreen(BackendScreen):
    backend: ClassVar[str] = "kafka"
    title_text: ClassVar[str] = "Kafka — brokers, partitions, consumer groups"
    columns: ClassVar[Sequence[str]] = BROKER_COLUMNS
    actions: ClassVar[Sequence[ScreenAction]] = (
        ScreenAction("d", "Drain broker", _drain),
        ScreenAction("u", "Undrain broker", _undrain),
        ScreenAction("e", "Elect preferred leaders", _elect),
    )

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(self.sfops)
        return broker_rows(status) if status is not None else []

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = _status(self.sfops)
        if status is None:
            return Text()
        text = cluster_text(status)
        problems = [p for p in status.partitions()
                    if p.offline or p.under_replicated or p.under_min_isr]
        for p in problems[:MAX_PROBLEM_PARTITIONS]:
            text.append("\n  ")
            text.append(p.name)
            text.append(f"  leader {p.leader}  replicas {list(p.replicas)}  isr {list(p.isr)}  ")
            text.append_text(partition_state(p))
        if len(problems) > MAX_PROBLEM_PARTITIONS:
            text.append(f"\n  … and {len(problems) - MAX_PROBLEM_PARTITIONS} more")
        return text

    @classmethod
    def palette_targets(cls, app: SfopsApp) -> list[str]:
        status = _status(app)
        return [str(b.broker_id) for b in status.brokers] if status is not None else []


SCREEN = KafkaScreen
