"""The Kafka slice against the lab's three KRaft brokers (issue 6).

Every test leaves the cluster as it found it: all brokers running, no URP, preferred leaders,
no drain record — see ``healthy_cluster``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from backends.kafka.model import KafkaStatus
from backends.kafka.service import KafkaService
from backends.service import BackendSummary
from backends.snapshot import Health, Snapshot
from deploy.lab import kafka as labkafka

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

BROKERS = ("kafka-1", "kafka-2", "kafka-3")
DRAIN_TOPIC = "sfops.test.drain"
QUIET = {"log_level": 0}


# --------------------------------------------------------------------------- helpers


def poll(config) -> tuple[KafkaStatus | None, BackendSummary, Snapshot]:
    async def once():
        service = KafkaService(config.kafka, config.sfops.state_dir)
        try:
            try:
                snapshot = Snapshot.success(await service.poll())
            except Exception as exc:
                snapshot = Snapshot.failure(str(exc))
            return snapshot.value, service.summarize(snapshot), snapshot
        finally:
            await service.close()

    return asyncio.run(once())


def wait_for(config, predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        status, summary, _ = poll(config)
        polls += 1
        if status is not None and predicate(status, summary):
            return status, summary, polls
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {timeout} s (last: "
                        f"{status.counts if status else summary.error})")
        time.sleep(interval)


def sfops_json(lab, *args: str, timeout: float = 180.0) -> tuple[int, dict]:
    code, data, stderr = lab.sfops_json("kafka", *args, "--json", timeout=timeout)
    if code != 0:
        data["stderr"] = stderr
    return code, data


def drain_record(lab, broker: int) -> Path:
    return lab.config().sfops.state_dir / f"kafka-drain-{broker}.json"


def restore(lab) -> None:
    """All brokers up, no URP, no drain record, preferred leaders."""
    for name in BROKERS:
        if not lab.running(name):
            lab.start(name)
    if not lab.running("kafka-consumer"):
        lab.start("kafka-consumer")
    config = lab.config()
    wait_for(config, lambda s, _: s.brokers_up == 3 and s.counts.under_replicated == 0,
             120, "cluster healthy again")
    for broker in (1, 2, 3):
        if drain_record(lab, broker).exists():
            code, data = sfops_json(lab, "undrain", str(broker), "--yes")
            assert code == 0, data
    code, data = sfops_json(lab, "elect-leaders", "--yes")
    assert code == 0, data


@pytest.fixture(scope="module")
def kafka_lab(lab):
    lab.ensure("kafka")
    labkafka.ensure_topic(lab.lab, DRAIN_TOPIC, 6)
    restore(lab)
    return lab


@pytest.fixture
def healthy_cluster(kafka_lab):
    yield kafka_lab
    restore(kafka_lab)


class AcksAllProducer:
    """Produces to ``topic`` with acks=all in a thread; remembers every acknowledged value."""

    def __init__(self, client: dict, topic: str, rate: float = 200.0) -> None:
        self.topic = topic
        self.run_id = uuid.uuid4().hex[:8]
        self.acked: set[str] = set()
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._rate = rate
        self._producer = Producer({
            **client, "acks": "all", "enable.idempotence": True,
            "message.timeout.ms": 60000, "linger.ms": 5, **QUIET,
        })
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.acked.add(msg.value().decode())
        else:
            self.errors.append(str(err))

    def _run(self) -> None:
        while not self._stop.is_set():
            value = f"{self.run_id}-{self.sent}"
            self._producer.produce(self.topic, value=value.encode(), on_delivery=self._delivered)
            self.sent += 1
            self._producer.poll(1.0 / self._rate)

    def __enter__(self) -> AcksAllProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self._producer.flush(60)


def consume_all(client: dict, topic: str, partitions: int, prefix: str) -> set[str]:
    consumer = Consumer({**client, "group.id": f"sfops-test-{prefix}",
                         "enable.auto.commit": False, **QUIET})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen: set[str] = set()
        done: set[int] = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 120
        while len(done) < partitions and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            value = message.value().decode()
            if value.startswith(prefix):
                seen.add(value)
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return seen
    finally:
        consumer.close()


def produce(client: dict, topic: str, count: int) -> None:
    """``count`` records spread over every partition of ``topic`` in turn. Keyless records
    would go where librdkafka's sticky partitioner puts them — sometimes all into a partition
    the group never committed an offset on, whose lag is unknown (None, counted 0), and then
    a lag test waits for a figure that never comes (seen once in a fresh run)."""
    producer = Producer({**client, "acks": "all", **QUIET})
    partitions = sorted(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    for i in range(count):
        producer.produce(topic, value=f"lag-{i}".encode(),
                         partition=partitions[i % len(partitions)])
        if i % 100 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


# --------------------------------------------------------------------------- tests


def test_healthy_cluster_status(healthy_cluster):
    lab = healthy_cluster
    code, data = sfops_json(lab, "status")
    assert code == 0, data
    # The envelope every backend's status has; Kafka's own status under "status".
    assert (data["backend"], data["health"], data["reachable"], data["error"]) == (
        "kafka", "ok", True, None)
    assert {f["label"] for f in data["figures"]} >= {"brokers up", "offline", "URP"}
    assert all(set(a) >= {"key", "severity", "unreachable", "message"} for a in data["alerts"])
    status = data["status"]
    assert len(status["brokers"]) == 3
    assert all(b["registered"] and b["reachable"] for b in status["brokers"])
    assert status["counts"]["under_replicated"] == 0
    assert status["counts"]["offline"] == 0
    assert status["counts"]["not_preferred"] == 0
    assert status["cluster_id"]
    text = lab.sfops("kafka", "status")
    assert "metadata controller (not the KRaft quorum leader)" in text.stdout
    assert "Kafka: OK" in text.stdout and "streamforge.events-0" not in text.stdout
    text = lab.sfops("kafka", "status", "--partitions")
    assert "streamforge.events-0" in text.stdout
    groups = {g["group_id"]: g for g in status["groups"]}
    assert groups["streamforge-consumer"]["state"] == "STABLE"


def lag(status) -> int:
    """The group's lag; -1 while a poll has no group yet (a fresh worker's first read may
    come after the poll's secondary budget on a loaded machine: the poll says so and shows
    none), so the wait goes on rather than failing on an empty tuple."""
    return status.groups[0].total_lag if status.groups else -1


def test_consumer_lag_is_read_and_moves_when_consumer_stops(healthy_cluster):
    lab = healthy_cluster
    config = lab.config()
    client = labkafka.client_config(lab.lab)
    produce(client, labkafka.APP_TOPIC, 300)
    wait_for(config, lambda s, _: s.groups and s.groups[0].total_lag == 0
             and s.groups[0].partitions, 60, "consumer caught up")
    lab.stop("kafka-consumer")
    produce(client, labkafka.APP_TOPIC, 500)
    status, summary, _ = wait_for(config, lambda s, _: lag(s) >= 500, 60,
                                  "lag of the stopped group")
    first = status.groups[0].total_lag
    assert summary.spark_value == first
    assert any(a.key == "group-idle:streamforge-consumer" for a in summary.alerts)
    produce(client, labkafka.APP_TOPIC, 200)
    status, _, _ = wait_for(config, lambda s, _: lag(s) >= first + 200, 60,
                            "lag growing")
    assert all(p.lag is not None for p in status.groups[0].partitions)
    lab.start("kafka-consumer")
    wait_for(config, lambda s, _: lag(s) == 0, 60, "lag back to 0")


def test_killed_broker_shows_urp_then_recovers_and_elect_restores_preference(healthy_cluster):
    lab = healthy_cluster
    config = lab.config()
    interval = config.sfops.refresh_interval
    lab.stop("kafka-2", kill=True)
    killed = time.monotonic()
    status, summary, polls = wait_for(
        config, lambda s, _: s.counts.under_replicated > 0, 30, "URP after kill",
        interval=interval)
    detection = time.monotonic() - killed
    print(f"URP visible {detection:.1f} s after SIGKILL ({polls} polls at {interval} s)")
    assert summary.health is Health.DEGRADED
    assert status.counts.offline == 0
    broker2 = status.broker(2)
    assert broker2 is not None and not broker2.up
    assert any(a.key == "partitions-under-replicated" for a in summary.alerts)
    lab.start("kafka-2")
    status, summary, _ = wait_for(
        config, lambda s, _: s.brokers_up == 3 and s.counts.under_replicated == 0, 120,
        "healthy after restart")
    assert status.counts.not_preferred > 0  # broker 2's partitions are led elsewhere
    # ... which is all that is wrong, and an election fixes it.
    assert summary.health is Health.DEGRADED
    assert [a.key for a in summary.alerts] == ["leader-imbalance"]
    code, data = sfops_json(lab, "elect-leaders", "--yes")
    assert code == 0, data
    assert data["outcome"] == "succeeded"
    status, summary, _ = poll(config)
    assert status.counts.not_preferred == 0
    assert status.broker(2).leaders > 0
    assert summary.health is Health.OK


def test_leadership_imbalance_warns_until_elect_leaders(healthy_cluster):
    """A clean restart of broker 2: its controlled shutdown hands its leaderships to 1 and 3,
    and with auto.leader.rebalance.enable=false they stay there once it is back in sync."""
    lab = healthy_cluster
    config = lab.config()
    lab.stop("kafka-2")
    _, summary, _ = wait_for(config, lambda s, _: not s.broker(2).up, 30, "broker 2 down")
    # While it is down nothing can be elected back to it: the broker-down alert says it all.
    assert "broker-down:2" in {a.key for a in summary.alerts}
    assert "leader-imbalance" not in {a.key for a in summary.alerts}
    lab.start("kafka-2")
    wait_for(config, lambda s, _: s.brokers_up == 3 and s.counts.under_replicated == 0
             and s.counts.electable > 0, 120, "broker 2 back in sync, leading less")

    code, data = sfops_json(lab, "status")
    assert code == 1, data  # degraded
    assert data["health"] == "degraded"
    counts = data["status"]["counts"]
    alerts = {a["key"]: a for a in data["alerts"]}
    assert list(alerts) == ["leader-imbalance"], data["alerts"]
    alert = alerts["leader-imbalance"]
    assert alert["severity"] == "warning"
    assert alert["message"].startswith(
        f"{counts['electable']} partition(s) not on their preferred leader, leader skew ")
    assert "run `sfops kafka elect-leaders`" in alert["message"]
    leaders = {b["broker_id"]: b["leaders"] for b in data["status"]["brokers"]}
    assert f"leaders per broker 1:{leaders[1]} 2:{leaders[2]} 3:{leaders[3]}" in alert["message"]

    code, data = sfops_json(lab, "elect-leaders", "--yes")
    assert code == 0, data
    code, data = sfops_json(lab, "status")
    assert code == 0, data
    assert data["health"] == "ok"
    assert "leader-imbalance" not in {a["key"] for a in data["alerts"]}
    assert data["status"]["counts"]["not_preferred"] == 0


def test_drain_with_acks_all_producer_then_restart_and_undrain(healthy_cluster):
    lab = healthy_cluster
    config = lab.config()
    client = labkafka.client_config(lab.lab)
    before, _, _ = poll(config)
    preferred_before = {p.name: p.leader for p in before.partitions()}
    assert before.broker(2).leaders > 0
    with AcksAllProducer(client, DRAIN_TOPIC) as producer:
        time.sleep(2)
        code, data = sfops_json(lab, "drain", "2", "--yes")
        assert code == 0, data.get("stderr", data)
        assert data["outcome"] == "succeeded"
        assert drain_record(lab, 2).exists()
        status, _, _ = poll(config)
        assert status.broker(2).leaders == 0
        assert status.counts.offline == 0
        assert all(p.replicas[-1] == 2 for p in status.partitions() if 2 in p.replicas)
        time.sleep(2)
        lab.stop("kafka-2")
        time.sleep(2)
        lab.start("kafka-2")
        wait_for(config, lambda s, _: s.counts.under_replicated == 0, 120, "ISR full again")
        code, data = sfops_json(lab, "undrain", "2", "--yes")
        assert code == 0, data
        time.sleep(2)
    assert not drain_record(lab, 2).exists()
    after, _, _ = poll(config)
    assert {p.name: p.leader for p in after.partitions()} == preferred_before
    assert after.counts.not_preferred == 0
    assert producer.sent > 0
    assert not producer.errors, producer.errors[:5]
    consumed = consume_all(client, DRAIN_TOPIC, 6, producer.run_id)
    missing = producer.acked - consumed
    print(f"produced {producer.sent}, acked {len(producer.acked)}, consumed {len(consumed)}")
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"


def test_dry_runs_show_the_plan_and_change_nothing(healthy_cluster):
    lab = healthy_cluster
    config = lab.config()
    before, _, _ = poll(config)
    code, data = sfops_json(lab, "elect-leaders", "--dry-run")
    assert code == 0, data
    assert data["dry_run"] and not data["would_refuse"]
    assert data["plan"] == [f"nothing: no leadership would move ({before.counts.total} "
                            "partition(s))"]
    code, data = sfops_json(lab, "drain", "2", "--dry-run")
    assert code == 0, data
    led = sorted(p.name for p in before.partitions() if p.leader == 2)
    assert sorted(line.split(":")[0].removeprefix("leader ") for line in data["plan"]
                  if line.startswith("leader ")) == led
    assert any(line.startswith("replicas ") and line.endswith(", 2]") for line in data["plan"])
    assert data["plan"][-1].startswith("record the original order of ")
    assert not drain_record(lab, 2).exists()
    after, _, _ = poll(config)
    assert ({p.name: (p.leader, p.replicas) for p in after.partitions()}
            == {p.name: (p.leader, p.replicas) for p in before.partitions()})
    code, data = sfops_json(lab, "undrain", "2", "--dry-run")
    assert code == 3 and data["would_refuse"], data  # nothing recorded: nothing to restore


def test_drain_refused_when_another_broker_is_down(healthy_cluster):
    lab = healthy_cluster
    config = lab.config()
    lab.stop("kafka-3", kill=True)
    wait_for(config, lambda s, _: s.counts.under_replicated > 0, 30, "URP after kill",
             interval=1.0)
    code, data = sfops_json(lab, "drain", "2", "--yes")
    assert code == 3, data
    assert data["outcome"] == "refused"
    assert "streamforge.events-" in data["error"] or "__consumer_offsets-" in data["error"]
    assert "min.insync.replicas" in data["error"]
    assert not drain_record(lab, 2).exists()


def test_unknown_broker_and_missing_drain_record_are_refused(healthy_cluster):
    lab = healthy_cluster
    code, data = sfops_json(lab, "drain", "7", "--yes")
    assert code == 3
    assert "broker 7 is not in this cluster" in data["error"]
    code, data = sfops_json(lab, "undrain", "3", "--yes")
    assert code == 3
    assert "no drain recorded for broker 3" in data["error"]
    code, data = sfops_json(lab, "elect-leaders", "--topic", "no.such.topic", "--yes")
    assert code == 3
    assert "no topic named" in data["error"]


def test_all_brokers_down_bounded_and_clear(tmp_path):
    """Nothing listens on these ports: the same path as a cluster with every broker down."""
    config = tmp_path / "sfops.toml"
    config.write_text(
        f'[sfops]\nstate_dir = "{tmp_path}/state"\naudit_log = "{tmp_path}/audit.jsonl"\n'
        '[kafka]\nbootstrap_servers = "127.0.0.1:1,127.0.0.1:9"\nrequest_timeout = 2.0\n')
    import subprocess
    import sys

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config),
                             "kafka", "status", "--json"], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    data = json.loads(result.stdout)
    assert data["health"] == "unreachable"
    assert "no broker of 127.0.0.1:1,127.0.0.1:9 answered" in data["error"]
    assert elapsed < 20
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config),
                             "kafka", "drain", "2", "--yes", "--json"], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 3, result.stderr
    assert "no broker of" in json.loads(result.stdout)["error"]
    assert time.monotonic() - started < 30
