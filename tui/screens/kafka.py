"""Kafka drill-down: the brokers (leaders, replicas, preferred counts), then the cluster's
partition health, problem partitions and consumer groups under the table.

Keys (absent in read-only mode): d drain the selected broker, u undrain it, e preferred leader
election for every partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from backends.actions import Action
from backends.snapshot import Snapshot
from tui.render.kafka import (
    BROKER_COLUMNS,
    GROUP_COLUMNS,
    PARTITION_COLUMNS,
    TOPIC_COLUMNS,
    broker_rows,
    cluster_text,
    group_lag_rows,
    group_rows,
    partition_rows,
    partition_state,
    topic_rows,
)
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
    BINDINGS = [
        *BackendScreen.BINDINGS,
        Binding("t", "topics", "Topics"),
        Binding("g", "groups", "Consumer groups"),
    ]
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

    def action_topics(self) -> None:
        self.app.push_screen(KafkaTopicsScreen())

    def action_groups(self) -> None:
        self.app.push_screen(KafkaGroupsScreen())


class KafkaTopicsScreen(BackendScreen):
    """Topics with their ISR problems; Enter opens a topic's partitions."""

    backend: ClassVar[str] = "kafka"
    title_text: ClassVar[str] = "Kafka — topics (Enter: partitions)"
    columns: ClassVar[Sequence[str]] = TOPIC_COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(self.sfops)
        return list(topic_rows(status)) if status is not None else []

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(KafkaPartitionsScreen(str(event.row_key.value)))


class KafkaPartitionsScreen(BackendScreen):
    """One topic's partitions: leader, replicas, ISR and state."""

    backend: ClassVar[str] = "kafka"
    columns: ClassVar[Sequence[str]] = PARTITION_COLUMNS

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        # Shown through Text(...) by BackendScreen: a topic name is never markup.
        self.title_text = f"Kafka — topic {topic}"  # type: ignore[misc]

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(self.sfops)
        if status is None:
            return []
        topic = next((t for t in status.topics if t.name == self.topic), None)
        return list(partition_rows(topic)) if topic is not None else []


class KafkaGroupsScreen(BackendScreen):
    """Consumer groups with total lag; the per-partition lag of each below."""

    backend: ClassVar[str] = "kafka"
    title_text: ClassVar[str] = "Kafka — consumer groups"
    columns: ClassVar[Sequence[str]] = GROUP_COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(self.sfops)
        return list(group_rows(status)) if status is not None else []

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = _status(self.sfops)
        text = Text()
        if status is None:
            return text
        for group in status.groups:
            text.append(f"{group.group_id}  (partition  committed  latest  lag)\n", style="bold")
            for _, cells in group_lag_rows(group)[:MAX_PROBLEM_PARTITIONS]:
                text.append("  ")
                text.append_text(Text("  ").join(cells))
                text.append("\n")
        return text


SCREEN = KafkaScreen
