"""The lab's Kafka: three real Apache Kafka brokers (KRaft, combined mode) and a consumer group.

Fault tests kill and restart brokers of the shared session cluster; the autouse ``healthy``
fixture restarts whatever a test left stopped and waits for full ISR again, so every test starts
(and ends) on a healthy cluster. Every admin call carries an explicit timeout: confluent-kafka's
metadata calls otherwise block forever when brokers are down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec, ResourceType

from deploy.lab import kafka

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

TIMEOUT = 5.0  # per admin request
TEST_TOPIC = "sfops.test.replication"
PARTITIONS = 6
ALL_NODES = {1, 2, 3}
# A killed broker is fenced after broker.session.timeout.ms (6 s in the lab); allow slack for a
# loaded 2-core machine.
FENCE_WAIT = 30.0
RECOVER_WAIT = 90.0


@pytest.fixture(scope="module")
def kafka_lab(lab: Any) -> Any:
    """The session lab (tests/conftest.py) with the kafka group up."""
    lab.ensure("kafka")
    kafka.ensure_topic(lab.lab, TEST_TOPIC, PARTITIONS)
    return lab


@pytest.fixture(scope="module")
def client(kafka_lab: Any) -> dict[str, Any]:
    """librdkafka settings of the lab's Kafka (SASL_SSL, the lab's CA)."""
    return kafka.client_config(kafka_lab.lab)


@pytest.fixture(scope="module")
def admin(client: dict[str, Any]) -> AdminClient:
    return AdminClient({**client, "log_level": 0})


@pytest.fixture(autouse=True)
def healthy(kafka_lab: Any, client: dict[str, Any]) -> Iterator[None]:
    restore(kafka_lab, client)
    yield
    restore(kafka_lab, client)


def restore(lab: Any, client: dict[str, Any]) -> None:
    """Start every stopped node (in order, so a quorum forms) and wait for full ISR."""
    for component in kafka.COMPONENTS:
        if not lab.running(component.name):
            lab.start(component.name)
    for topic in (TEST_TOPIC, kafka.APP_TOPIC):
        wait_for(
            f"ISR 3 on every partition of {topic}",
            lambda topic=topic: all(p["isr"] == ALL_NODES for p in describe(client, topic)),
            RECOVER_WAIT,
        )


# -- helpers ---------------------------------------------------------------------------------
def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a request to a just-killed broker may fail: retry
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def fresh_admin(client: dict[str, Any]) -> AdminClient:
    """A new client per fault-time call: librdkafka routes DescribeTopics to the broker that
    metadata named "controller" (on KRaft a random live broker) and, once that broker is killed,
    a long-lived client waits for it until the request times out instead of asking another."""
    return AdminClient({**client, "log_level": 0})


def describe(client: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    """Per partition: leader id (None when offline), replica ids, ISR ids."""
    admin = fresh_admin(client)
    future = admin.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT)[topic]
    description = future.result(timeout=TIMEOUT + 1)
    return [
        {
            "partition": p.id,
            "leader": p.leader.id if p.leader is not None else None,
            "replicas": {n.id for n in p.replicas},
            "isr": {n.id for n in p.isr},
        }
        for p in sorted(description.partitions, key=lambda p: p.id)
    ]


def cluster_nodes(client: dict[str, Any]) -> set[int]:
    admin = fresh_admin(client)
    description = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT + 1)
    return {node.id for node in description.nodes}


def produce_one_per_partition(
    client: dict[str, Any], topic: str, *, timeout_ms: int, **extra: Any
) -> dict[int, KafkaError | None]:
    """acks=all with idempotence (the API service's settings); the delivery error by partition."""
    producer = Producer(
        {
            **client,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": timeout_ms,
            "log_level": 0,
            **extra,
        }
    )
    results: dict[int, KafkaError | None] = {}

    def delivered(error: KafkaError | None, message: Any) -> None:
        results[message.partition()] = error

    for partition in range(PARTITIONS):
        producer.produce(topic, value=uuid.uuid4().bytes, partition=partition,
                         on_delivery=delivered)
    remaining = producer.flush(timeout_ms / 1000 + 10)
    assert remaining == 0, f"{remaining} record(s) neither delivered nor failed"
    return results


# -- tests -------------------------------------------------------------------------------------
def test_three_brokers_and_the_lab_config(kafka_lab: Any, client: dict[str, Any]) -> None:
    assert cluster_nodes(client) == ALL_NODES
    config = kafka_lab.config_path.read_text()
    assert kafka.bootstrap_servers(kafka_lab.lab) in config
    assert kafka.CONSUMER_GROUP in config
    statuses = [kafka_lab.component(name).status(kafka_lab.lab) for name in kafka.NODES]
    assert [s["node_id"] for s in statuses] == [1, 2, 3]
    assert all(s["state"] == "running" for s in statuses)


def test_rf3_topics_have_full_isr(client: dict[str, Any], admin: AdminClient) -> None:
    topics = ((TEST_TOPIC, PARTITIONS), (kafka.APP_TOPIC, kafka.APP_TOPIC_PARTITIONS))
    for topic, partitions in topics:
        layout = describe(client, topic)
        assert len(layout) == partitions
        for p in layout:
            assert p["replicas"] == ALL_NODES, p
            assert p["isr"] == ALL_NODES, p
            assert p["leader"] in ALL_NODES, p
    resource = ConfigResource(ResourceType.TOPIC, kafka.APP_TOPIC)
    configs = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(
        timeout=TIMEOUT + 1
    )
    assert configs["min.insync.replicas"].value == "2"


def test_consumer_group_commits_so_lag_is_real(client: dict[str, Any], admin: AdminClient) -> None:
    results = produce_one_per_partition(client, kafka.APP_TOPIC, timeout_ms=15000)
    assert all(error is None for error in results.values()), results
    partitions = [TopicPartition(kafka.APP_TOPIC, p) for p in range(kafka.APP_TOPIC_PARTITIONS)]
    latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions},
                                request_timeout=TIMEOUT)
    end = {tp.partition: f.result(timeout=TIMEOUT + 1).offset for tp, f in latest.items()}

    def caught_up() -> bool:
        request = [ConsumerGroupTopicPartitions(kafka.CONSUMER_GROUP, partitions)]
        future = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT)
        committed = future[kafka.CONSUMER_GROUP].result(timeout=TIMEOUT + 1)
        # An offset < 0 means nothing committed yet for that partition.
        return all(tp.offset >= end[tp.partition] for tp in committed.topic_partitions)

    # The consumer commits every second: its committed offsets reach what we just produced.
    wait_for("the consumer group to commit up to the end of every partition", caught_up, 30.0)


def test_kill_broker_2_shrinks_isr_moves_leaders_and_restart_restores(
    kafka_lab: Any, client: dict[str, Any]
) -> None:
    before = describe(client, TEST_TOPIC)
    with_replica_2 = {p["partition"] for p in before if 2 in p["replicas"]}
    assert with_replica_2, "RF 3 on 3 brokers: every partition has a replica on broker 2"

    started = time.monotonic()
    kafka_lab.stop("kafka-2", kill=True)
    assert not kafka_lab.running("kafka-2")

    def shrunk() -> list[dict[str, Any]] | None:
        layout = describe(client, TEST_TOPIC)
        done = all(
            p["leader"] is not None  # nothing offline
            and p["leader"] != 2
            and (p["isr"] == ALL_NODES - {2} if p["partition"] in with_replica_2 else True)
            for p in layout
        )
        return layout if done else None

    layout = wait_for("ISR 2 and leaders off broker 2", shrunk, FENCE_WAIT)
    shrink_seconds = time.monotonic() - started
    assert all(p["leader"] in {1, 3} for p in layout)
    assert wait_for("broker 2 to leave the cluster",
                    lambda: cluster_nodes(client) == {1, 3}, FENCE_WAIT)

    kafka_lab.start("kafka-2")
    wait_for(
        "ISR 3 on every partition after restarting kafka-2",
        lambda: all(p["isr"] == ALL_NODES for p in describe(client, TEST_TOPIC)),
        RECOVER_WAIT,
    )
    assert cluster_nodes(client) == ALL_NODES
    assert shrink_seconds < FENCE_WAIT


def test_acks_all_survives_one_broker_down_and_fails_clearly_with_two(
    kafka_lab: Any, client: dict[str, Any]
) -> None:
    kafka_lab.stop("kafka-3", kill=True)
    # One down: leaders move within the fencing time and ISR 2 = min.insync.replicas still
    # accepts acks=all writes (the producer retries through the leader change).
    results = produce_one_per_partition(client, TEST_TOPIC, timeout_ms=30000)
    assert all(error is None for error in results.values()), results

    # Two down: kafka-2's controlled shutdown takes it out of every ISR (ISR 1 < min ISR 2),
    # then the controller quorum is gone too. Writes must fail, promptly and visibly.
    wait_for("ISR {1, 2} everywhere",
             lambda: all(p["isr"] == {1, 2} for p in describe(client, TEST_TOPIC)), FENCE_WAIT)
    kafka_lab.stop("kafka-2")
    started = time.monotonic()
    results = produce_one_per_partition(client, TEST_TOPIC, timeout_ms=8000)
    assert time.monotonic() - started < 8 + 10, "a failing produce must not hang"
    assert all(error is not None for error in results.values()), results
    assert {error.code() for error in results.values() if error is not None} <= {
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }, results
    # The cause, as the broker states it, reaches a producer that does not retry it away.
    no_retry = produce_one_per_partition(
        client, TEST_TOPIC, timeout_ms=8000, **{"enable.idempotence": False, "retries": 0}
    )
    codes = {error.code() for error in no_retry.values() if error is not None}
    assert codes == {KafkaError.NOT_ENOUGH_REPLICAS}, no_retry
