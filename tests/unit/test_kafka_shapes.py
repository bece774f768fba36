"""The Kafka health figures computed per partition shape (leader, replicas, ISR,
min.insync.replicas; backends/kafka/model.py) equal the partition-by-partition answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.kafka.model import (
    BrokerState,
    KafkaStatus,
    LeaderBalance,
    LeaderBalanceLimits,
    PartitionCounts,
    PartitionState,
    TopicState,
    count_partitions,
    health_and_alerts,
    leader_balance,
    tally_brokers,
)
from tests.unit.test_kafka_wire import cluster_metadata, plain_view


def counted_one_by_one(partitions: list[PartitionState]) -> PartitionCounts:
    return PartitionCounts(
        total=len(partitions),
        online=sum(not p.offline for p in partitions),
        offline=sum(p.offline for p in partitions),
        under_replicated=sum(p.under_replicated for p in partitions),
        under_min_isr=sum(p.under_min_isr for p in partitions),
        at_min_isr=sum(p.at_min_isr for p in partitions),
        not_preferred=sum(p.not_preferred for p in partitions),
        electable=sum(p.electable for p in partitions),
    )


@settings(max_examples=100, deadline=None)
@given(cluster_metadata())
def test_counts_and_tallies_per_shape_equal_the_partition_by_partition_ones(case):
    metadata, min_isr = case
    partitions = plain_view(metadata, min_isr).partitions()
    assert count_partitions(iter(partitions)) == counted_one_by_one(partitions)
    brokers = [BrokerState(1, "h1", 9091), BrokerState(2, "h2", 9092)]
    tallied = {b.broker_id: b for b in tally_brokers(brokers, iter(partitions))}
    for broker_id in {r for p in partitions for r in p.replicas} | {1, 2}:
        b = tallied[broker_id]
        assert b.leaders == sum(p.leader == broker_id for p in partitions)
        assert b.replicas == sum(broker_id in p.replicas for p in partitions)
        assert b.preferred == sum(p.preferred_leader == broker_id for p in partitions)
        assert b.registered == (broker_id in (1, 2))


def balance_one_by_one(status: KafkaStatus) -> LeaderBalance:
    up = [b.broker_id for b in status.brokers if b.up]
    leaders, after = dict.fromkeys(up, 0), dict.fromkeys(up, 0)
    electable, waiting = [], 0
    for p in status.partitions():
        if p.offline:
            continue
        if p.leader in leaders:
            leaders[p.leader] += 1
        movable = p.electable and p.preferred_leader in leaders
        if movable:
            electable.append(p)
        elif p.not_preferred:
            waiting += 1
        new_leader = p.preferred_leader if movable else p.leader
        if new_leader in after:
            after[new_leader] += 1
    return LeaderBalance(tuple(electable), waiting, leaders, after)


@settings(max_examples=100, deadline=None)
@given(cluster_metadata(), st.sets(st.sampled_from([1, 2, 3])))
def test_alerts_and_leader_balance_per_shape_equal_the_partition_by_partition_ones(case, down):
    metadata, min_isr = case
    view = plain_view(metadata, min_isr)
    brokers = tuple(BrokerState(b, f"h{b}", 9090 + b, reachable=b not in down) for b in (1, 2, 3))
    status = KafkaStatus("b:9092", "c", 1, brokers, view.topics)
    assert leader_balance(status) == balance_one_by_one(status)
    partitions = view.partitions()
    _, alerts = health_and_alerts(status)
    by_key = {a.key: a.message for a in alerts}
    for key, wrong in (("partitions-offline", [p for p in partitions if p.offline]),
                       ("partitions-under-min-isr",
                        [p for p in partitions if p.under_min_isr and not p.offline]),
                       ("partitions-under-replicated",
                        [p for p in partitions if p.under_replicated and not p.offline])):
        if wrong:
            assert by_key[key].startswith(f"{len(wrong)} partition(s)")
            assert all(p.name in by_key[key] for p in wrong[:5])  # the first five, named
        else:
            assert key not in by_key


def test_one_offline_partition_among_healthy_ones_is_named():
    healthy = tuple(PartitionState("t", i, 1, (1, 2, 3), (1, 2, 3), 2) for i in range(100))
    offline = PartitionState("t", 100, -1, (1, 2, 3), (), 2)
    status = KafkaStatus("b:9092", "c", 1, (BrokerState(1, "h", 1),),
                         (TopicState("t", (*healthy, offline)),))
    _, alerts = health_and_alerts(status, LeaderBalanceLimits(1000, 1000))
    assert [a.message for a in alerts if a.key == "partitions-offline"] == [
        "1 partition(s) offline (no leader): t-100"]
