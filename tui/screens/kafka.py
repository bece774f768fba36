"""Kafka drill-down: the brokers (leaders, replicas, preferred counts), then the cluster's
partition health, problem partitions and consumer groups under the table.

Action keys come from the contract (backends/kafka/contract.py; absent in read-only mode):
d drain the selected broker, u undrain it, e preferred leader election for every partition.
The topics, partitions and groups sub-screens offer no action (their rows are not brokers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from backends.snapshot import Snapshot
from tui.render.cells import CELL, safe_text
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
from tui.screens.base import BackendScreen

if TYPE_CHECKING:
    from backends.kafka.model import KafkaStatus

MAX_PROBLEM_PARTITIONS = 8


def _status(snapshot: Snapshot[Any]) -> KafkaStatus | None:
    from backends.kafka.model import KafkaStatus

    best = snapshot.best
    return best if isinstance(best, KafkaStatus) else None


class KafkaScreen(BackendScreen):
    backend: ClassVar[str] = "kafka"
    title_text: ClassVar[str] = "Kafka — brokers, partitions, consumer groups"
    columns: ClassVar[Sequence[str]] = BROKER_COLUMNS
    BINDINGS = [
        *BackendScreen.BINDINGS,
        Binding("t", "topics", "Topics"),
        Binding("g", "groups", "Consumer groups"),
    ]

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(snapshot)
        return broker_rows(status) if status is not None else []

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = _status(snapshot)
        if status is None:
            return Text()
        text = cluster_text(status)
        problems = [p for p in status.partitions()
                    if p.offline or p.under_replicated or p.under_min_isr]
        for p in problems[:MAX_PROBLEM_PARTITIONS]:
            text.append("\n  ")
            text.append(safe_text(p.name, CELL))
            text.append(f"  leader {p.leader}  replicas {list(p.replicas)}  isr {list(p.isr)}  ")
            text.append_text(partition_state(p))
        if len(problems) > MAX_PROBLEM_PARTITIONS:
            text.append(f"\n  … and {len(problems) - MAX_PROBLEM_PARTITIONS} more")
        return text

    def action_topics(self) -> None:
        self.app.push_screen(KafkaTopicsScreen())

    def action_groups(self) -> None:
        self.app.push_screen(KafkaGroupsScreen())


class KafkaTopicsScreen(BackendScreen):
    """Topics with their ISR problems; Enter opens a topic's partitions."""

    backend: ClassVar[str] = "kafka"
    offers_actions: ClassVar[bool] = False  # topics are not brokers
    title_text: ClassVar[str] = "Kafka — topics (Enter: partitions)"
    columns: ClassVar[Sequence[str]] = TOPIC_COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(snapshot)
        return list(topic_rows(status)) if status is not None else []

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(KafkaPartitionsScreen(str(event.row_key.value)))


class KafkaPartitionsScreen(BackendScreen):
    """One topic's partitions: leader, replicas, ISR and state."""

    backend: ClassVar[str] = "kafka"
    offers_actions: ClassVar[bool] = False
    columns: ClassVar[Sequence[str]] = PARTITION_COLUMNS

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic
        # Shown through Text(safe_text(...)) by BackendScreen: a topic name is never markup.
        self.title_text = f"Kafka — topic {topic}"  # type: ignore[misc]

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(snapshot)
        if status is None:
            return []
        topic = next((t for t in status.topics if t.name == self.topic), None)
        return list(partition_rows(topic)) if topic is not None else []


class KafkaGroupsScreen(BackendScreen):
    """Consumer groups with total lag; the per-partition lag of each below."""

    backend: ClassVar[str] = "kafka"
    offers_actions: ClassVar[bool] = False
    title_text: ClassVar[str] = "Kafka — consumer groups"
    columns: ClassVar[Sequence[str]] = GROUP_COLUMNS

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = _status(snapshot)
        return list(group_rows(status)) if status is not None else []

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = _status(snapshot)
        text = Text()
        if status is None:
            return text
        for group in status.groups:
            text.append(f"{safe_text(group.group_id, CELL)}  (partition  committed  latest  lag)\n",
                        style="bold")
            for _, cells in group_lag_rows(group)[:MAX_PROBLEM_PARTITIONS]:
                text.append("  ")
                text.append_text(Text("  ").join(cells))
                text.append("\n")
        return text


SCREEN = KafkaScreen
