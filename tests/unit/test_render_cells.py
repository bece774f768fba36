"""The shared cells module: one age formatter for the TUI, and every renderer's table cells are
plain text free of control characters (an ESC in a name must not drive the terminal)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text

from backends.kafka.model import (
    BrokerState,
    GroupState,
    KafkaStatus,
    PartitionLag,
    PartitionState,
    TopicState,
    count_partitions,
    tally_brokers,
)
from backends.kubernetes.objects import deployment_from_json, node_from_json, pod_from_json
from backends.service import Alert, Severity
from tests.unit.test_k8s_objects import deployment, node, pod
from tests.unit.test_render_kubernetes import NOW
from tests.unit.test_render_kubernetes import _status as k8s_status
from tests.unit.test_render_postgres import cluster
from tui.render import kafka, kubernetes, overview, postgres
from tui.render.cells import age_text, plain

CONTROL = "\x1b[2J\x07a\nb\tc"


def clean_cells(rows: list[tuple[str, list[Text]]] | list[tuple[str, tuple[Text, ...]]]) -> bool:
    return all(ch.isprintable() for _, cells in rows for cell in cells for ch in cell.plain)


def test_age_text() -> None:
    assert [age_text(v) for v in (None, -3, 0.2, 5, 119, 600, 10_000, 200_000)] == [
        "never", "now", "now", "5s ago", "119s ago", "10m ago", "3h ago", "2d ago"]
    # kubectl's AGE column: whole units, no suffix
    assert [age_text(v, compact=True) for v in (0.2, 45, 3600, 7199, 10_000, 7 * 86400)] == [
        "0s", "45s", "60m", "119m", "2h", "7d"]


def test_plain_cell_is_one_clean_line_never_markup() -> None:
    cell = plain("[@click=app.quit]x[/]" + CONTROL, "bold")
    # Controls shown as escapes; the line break ends the cell ("…" says there was more).
    assert cell.plain == "[@click=app.quit]x[/]\\x1b[2J\\x07a…"
    assert cell.no_wrap and cell.overflow == "ellipsis" and str(cell.style) == "bold"


def test_overview_rows() -> None:
    alert = Alert("postgres", "k", Severity.CRITICAL, "down: " + CONTROL)
    rows = [(r.key, r.cells) for r in overview.alert_rows([(alert, datetime.now(UTC))],
                                                          datetime.now(UTC))]
    records = [{"ts": "2026-01-01T00:00:00", "action": "drain", "target": CONTROL,
                "outcome": "failed", "user": CONTROL}]
    assert clean_cells(rows) and clean_cells(overview.recent_action_rows(records))


def test_postgres_rows() -> None:
    status = cluster(error="refused " + CONTROL)
    assert clean_cells(postgres.member_rows(status))  # type: ignore[arg-type]
    assert clean_cells(postgres.warning_rows(status))  # type: ignore[arg-type]


def test_kafka_rows() -> None:
    name = "t" + CONTROL
    partitions = (PartitionState(name, 0, 1, (1,), (1,), 1),)
    topic = TopicState(name, partitions, min_isr=1)
    group = GroupState("g" + CONTROL, "STABLE", 1, (PartitionLag(name, 0, 5, 9),))
    status = KafkaStatus(
        bootstrap="x", cluster_id="c", controller_id=1,
        brokers=tally_brokers([BrokerState(1, "h" + CONTROL, 9001, "r" + CONTROL,
                                           reachable=True)], partitions),
        topics=(topic,), groups=(group,), counts=count_partitions(partitions))
    for rows in (kafka.broker_rows(status), kafka.topic_rows(status),
                 kafka.partition_rows(topic), kafka.group_rows(status),
                 kafka.group_lag_rows(group)):
        assert clean_cells(rows)


def test_kubernetes_rows() -> None:
    status = k8s_status(
        pods=[pod_from_json(pod("api-abcde-0" + CONTROL, ready=False, node="n" + CONTROL))],
        nodes=[node_from_json(node("node" + CONTROL))],
        deployments=[deployment_from_json(deployment(image="img" + CONTROL))])
    assert clean_cells(kubernetes.cluster_rows(status, NOW))
