"""Kafka slice without a cluster: derivations, drain planning and safety, the drain record."""

from __future__ import annotations

import json

from backends.kafka.model import (
    BrokerState,
    GroupState,
    KafkaStatus,
    LeaderBalanceLimits,
    PartitionLag,
    PartitionState,
    TopicState,
    count_partitions,
    leader_balance,
    summarize_status,
    tally_brokers,
)
from backends.kafka.plan import (
    DrainRecord,
    drain_blockers,
    drain_plan,
    load_record,
    restore_plan,
    save_record,
    state_path,
)
from backends.service import Severity
from backends.snapshot import Health


def part(topic="t", partition=0, leader=1, replicas=(1, 2, 3), isr=None, min_isr=2):
    return PartitionState(topic, partition, leader, tuple(replicas),
                          tuple(replicas if isr is None else isr), min_isr)


def status_of(partitions, brokers=None, groups=()):
    brokers = brokers or [BrokerState(i, "127.0.0.1", 9000 + i, reachable=True)
                          for i in (1, 2, 3)]
    topics = {}
    for p in partitions:
        topics.setdefault(p.topic, []).append(p)
    return KafkaStatus(
        bootstrap="x:1", cluster_id="c", controller_id=1,
        brokers=tally_brokers(brokers, partitions),
        topics=tuple(TopicState(name, tuple(ps), min_isr=2) for name, ps in topics.items()),
        groups=tuple(groups), counts=count_partitions(partitions),
    )


# --------------------------------------------------------------------------- model


def test_partition_counts():
    partitions = [
        part(partition=0),
        part(partition=1, isr=(1, 2)),  # URP, at min ISR
        part(partition=2, isr=(1,)),  # URP, under min ISR
        part(partition=3, leader=-1, isr=()),  # offline
        part(partition=4, leader=2),  # not on preferred leader
    ]
    c = count_partitions(partitions)
    assert (c.total, c.online, c.offline) == (5, 4, 1)
    assert c.under_replicated == 3
    assert c.under_min_isr == 2  # the offline one has an empty ISR too
    assert c.at_min_isr == 1
    assert c.not_preferred == 1


def test_unknown_min_isr_counts_neither_under_nor_at():
    p = part(isr=(1,), min_isr=None)
    assert not p.under_min_isr and not p.at_min_isr and p.under_replicated


def test_tally_brokers_counts_and_adds_unregistered_replica_holders():
    partitions = [part(partition=0, leader=1, replicas=(1, 2, 4)),
                  part(partition=1, leader=2, replicas=(2, 1, 4))]
    brokers = tally_brokers([BrokerState(1, "h", 1), BrokerState(2, "h", 2)], partitions)
    by_id = {b.broker_id: b for b in brokers}
    assert by_id[1].leaders == 1 and by_id[1].replicas == 2 and by_id[1].preferred == 1
    assert by_id[4].registered is False and by_id[4].address == "?"
    assert by_id[4].replicas == 2 and by_id[4].leaders == 0


def test_healthy_summary():
    summary = summarize_status(status_of([part(partition=i) for i in range(3)]))
    assert summary.health is Health.OK
    assert [f.value for f in summary.figures[:3]] == ["3/3", "0", "0"]
    assert summary.alerts == ()


def test_down_broker_and_urp_degrade_with_stable_alert_keys():
    brokers = [BrokerState(1, "h", 1, reachable=True), BrokerState(2, "h", 2, reachable=True),
               BrokerState(3, "h", 3, registered=False)]
    status = status_of([part(isr=(1, 2))], brokers=brokers)
    summary = summarize_status(status)
    assert summary.health is Health.DEGRADED
    keys = {a.key for a in summary.alerts}
    assert keys == {"broker-down:3", "partitions-under-replicated"}
    assert summary.figures[0].value == "2/3"


def test_offline_partition_is_critical():
    summary = summarize_status(status_of([part(leader=-1, isr=())]))
    assert summary.health is Health.FAILED
    assert any(a.key == "partitions-offline" and a.severity is Severity.CRITICAL
               for a in summary.alerts)


def test_failed_poll_with_last_good_value_is_unreachable():
    """A failed refresh is judged by backends.service, never by the old value's health."""
    from types import SimpleNamespace

    from backends.service import summary_of
    from backends.snapshot import Snapshot

    service = SimpleNamespace(name="kafka", title="Kafka",
                              summarize=lambda snap: summarize_status(snap.best))
    good = Snapshot.success(status_of([part()]))
    summary = summary_of(service, good.failed("no broker answered"))  # type: ignore[arg-type]
    assert summary.health is Health.UNREACHABLE and summary.last_known
    assert [a.key for a in summary.alerts] == ["kafka-unreachable"]


def test_lag_spark_and_idle_group_alert():
    group = GroupState("g", "EMPTY", 0, (PartitionLag("t", 0, 10, 25),
                                         PartitionLag("t", 1, None, 5)))
    assert group.total_lag == 15
    summary = summarize_status(status_of([part()], groups=[group]))
    assert summary.spark_value == 15
    assert any(a.key == "group-idle:g" for a in summary.alerts)
    assert summary.figures[-1].value == "15 (g)"


def test_skew():
    status = status_of([part(partition=0, leader=1), part(partition=1, leader=1),
                        part(partition=2, leader=1, replicas=(1, 3, 2))])
    assert status.leader_skew == 3  # broker 1 leads 3, brokers 2 and 3 lead 0


# --------------------------------------------------------------------------- leadership balance


def rotated(partition: int, leader: int | None = None, isr=None) -> PartitionState:
    """Replicas rotated per partition (as Kafka assigns them): preferred leaders 1, 2, 3, 1…"""
    replicas = tuple((partition + i) % 3 + 1 for i in range(3))
    return part(partition=partition, leader=replicas[0] if leader is None else leader,
                replicas=replicas, isr=isr)


def imbalance(summary):
    return [a for a in summary.alerts if a.key == "leader-imbalance"]


def test_balanced_preferred_leadership_is_ok():
    summary = summarize_status(status_of([rotated(i) for i in range(12)]))
    assert summary.health is Health.OK and summary.alerts == ()


def test_leaders_off_their_preferred_replica_warn_with_numbers_and_the_fix():
    """The report: broker 2 restarted, its 4 partitions are led by 1 and 3; 5 in all are off
    their preferred leader and broker 2 leads nothing."""
    partitions = [rotated(i) for i in range(12)]
    for i in (1, 4, 7, 10):  # preferred 2: led by their second replica now
        partitions[i] = rotated(i, leader=partitions[i].replicas[1])
    partitions[0] = rotated(0, leader=3)  # preferred 1
    status = status_of(partitions)
    balance = leader_balance(status)
    assert len(balance.electable) == 5 and balance.waiting == 0
    assert balance.leaders == {1: 3, 2: 0, 3: 9}
    assert balance.skew == status.leader_skew == 9 and balance.skew_after_election == 0
    assert status.counts.not_preferred == status.counts.electable == 5

    summary = summarize_status(status)
    assert summary.health is Health.DEGRADED
    [alert] = imbalance(summary)
    assert alert.severity is Severity.WARNING
    assert alert.message.startswith(
        "5 partition(s) not on their preferred leader, leader skew 9 (0 after a preferred "
        "election): run `sfops kafka elect-leaders`")
    assert "leaders per broker 1:3 2:0 3:9" in alert.message
    assert "t-0" in alert.message


def test_limits_are_configurable_and_each_can_raise_the_warning():
    partitions = [rotated(i) for i in range(12)]
    partitions[1] = rotated(1, leader=3)  # one partition moved: skew 2
    status = status_of(partitions)
    assert len(imbalance(summarize_status(status))) == 1  # defaults: 0 and 0
    tolerant = LeaderBalanceLimits(max_not_preferred_leaders=1, max_leader_skew=2)
    assert imbalance(summarize_status(status, limits=tolerant)) == []
    # Over the skew limit alone.
    assert len(imbalance(summarize_status(
        status, limits=LeaderBalanceLimits(max_not_preferred_leaders=5, max_leader_skew=1)))) == 1
    # Over the not-preferred limit alone.
    assert len(imbalance(summarize_status(
        status, limits=LeaderBalanceLimits(max_not_preferred_leaders=0, max_leader_skew=5)))) == 1


def test_a_down_broker_is_one_alert_not_an_imbalance_on_top():
    """Broker 2 is down: its partitions are led elsewhere, but no election can move them back
    until it returns and catches up. The operator needs the broker-down alert (and URP), not a
    second warning whose fix (elect-leaders) would do nothing."""
    partitions = []
    for i in range(12):
        p = rotated(i)
        isr = tuple(r for r in p.replicas if r != 2)
        leader = p.replicas[0] if p.replicas[0] != 2 else p.replicas[1]
        partitions.append(rotated(i, leader=leader, isr=isr))
    brokers = [BrokerState(1, "h", 1, reachable=True), BrokerState(2, "h", 2, registered=False),
               BrokerState(3, "h", 3, reachable=True)]
    status = status_of(partitions, brokers=brokers)
    balance = leader_balance(status)
    assert balance.electable == () and balance.waiting == 4
    assert set(balance.leaders) == {1, 3}  # the down broker is not part of the skew
    keys = {a.key for a in summarize_status(status).alerts}
    assert keys == {"broker-down:2", "partitions-under-replicated"}


def test_back_but_still_catching_up_is_not_yet_electable():
    partitions = [rotated(i) for i in range(3)]
    partitions[1] = rotated(1, leader=3, isr=(3, 1))  # preferred 2 is up but not in the ISR
    status = status_of(partitions)
    assert status.counts.not_preferred == 1 and status.counts.electable == 0
    assert imbalance(summarize_status(status)) == []


def test_once_in_sync_again_the_same_partitions_warn_and_say_what_still_waits():
    partitions = [rotated(i) for i in range(6)]
    partitions[1] = rotated(1, leader=3)  # preferred 2, in sync: electable
    partitions[4] = rotated(4, leader=3, isr=(3, 1))  # preferred 2, not in sync yet
    [alert] = imbalance(summarize_status(status_of(partitions)))
    assert alert.message.startswith("1 partition(s) not on their preferred leader")
    assert "1 more wait for their preferred replica to be in sync" in alert.message


def test_skew_an_election_cannot_fix_is_not_a_warning():
    """A drained broker is last in every replica list on purpose: it leads nothing, and an
    election would keep it so. (Skew from the assignment needs a reassignment, not this fix.)"""
    partitions = [part(partition=i, leader=1 + i % 2, replicas=(1 + i % 2, 2 - i % 2, 3))
                  for i in range(6)]
    status = status_of(partitions)
    balance = leader_balance(status)
    assert balance.skew == 3 and balance.skew_after_election == 3
    assert summarize_status(status).alerts == ()


# --------------------------------------------------------------------------- planning


def test_drain_plan_moves_broker_last_in_sync_first():
    partitions = [
        part(partition=0, replicas=(2, 1, 3)),
        part(partition=1, replicas=(1, 2, 3)),
        part(partition=2, replicas=(1, 3, 2)),  # already last: untouched
        part(partition=3, replicas=(2, 1, 3), isr=(2, 3)),  # 1 lags: 3 becomes preferred
        part(partition=4, replicas=(1, 3)),  # broker 2 not a replica
    ]
    plan = drain_plan(partitions, 2)
    assert plan == {("t", 0): [1, 3, 2], ("t", 1): [1, 3, 2], ("t", 3): [3, 1, 2]}
    for new in plan.values():
        assert sorted(new) == [1, 2, 3]  # never adds or removes a replica


def test_drain_blockers_name_unsafe_partitions():
    partitions = [
        part(partition=0, leader=2, replicas=(2, 1, 3)),  # fine: ISR 3 > 2
        part(partition=1, leader=2, replicas=(2, 1, 3), isr=(2, 1)),  # ISR 2 == min
        part(partition=2, leader=2, replicas=(2, 1, 3), isr=(2,)),  # no other ISR member
        part(partition=3, leader=1, replicas=(1, 2, 3), isr=(1, 2)),  # not led by 2
        part(partition=4, leader=2, replicas=(2, 1, 3), min_isr=None),
    ]
    blockers = {b.partition.name: b.reason for b in drain_blockers(partitions, 2)}
    assert set(blockers) == {"t-1", "t-2", "t-4"}
    assert "not above min.insync.replicas=2" in blockers["t-1"]
    assert "no other in-sync replica" in blockers["t-2"]
    assert "unknown" in blockers["t-4"]


def test_restore_plan_skips_changed_replica_sets():
    original = {("t", 0): [2, 1, 3], ("t", 1): [2, 3, 1], ("t", 2): [2, 1, 3],
                ("gone", 0): [2, 1, 3]}
    partitions = [part(partition=0, replicas=(1, 3, 2)),
                  part(partition=1, replicas=(3, 4, 2)),  # reassigned since: leave it
                  part(partition=2, replicas=(2, 1, 3))]  # already restored
    plan, skipped = restore_plan(partitions, original)
    assert plan == {("t", 0): [2, 1, 3]}
    assert set(skipped) == {("t", 1), ("gone", 0)}


def test_drain_record_round_trip_and_merge_keeps_first_order(tmp_path):
    path = state_path(tmp_path / "state", 2)
    record = DrainRecord(2, "cid", "2026-01-01T00:00:00+00:00", {("t", 0): [2, 1, 3]})
    save_record(path, record)
    assert json.loads(path.read_text())["partitions"][0]["replicas"] == [2, 1, 3]
    loaded = load_record(path)
    assert loaded == record
    merged = loaded.merged({("t", 0): [1, 3, 2], ("t", 1): [2, 3, 1]})
    assert merged.original == {("t", 0): [2, 1, 3], ("t", 1): [2, 3, 1]}
    assert load_record(tmp_path / "missing.json") is None
    assert not list(path.parent.glob("*.tmp"))
