"""Kafka actions against a fake cluster (no broker, no worker process): preflights, the
re-checks right before the change, --dry-run's would_change, closing (the action's own worker,
never the shared service), whole drain/undrain runs, and the contract's builds.

The fakes implement the narrow interfaces the actions take (backends.kafka.actions.AdminSource
and ActionAdmin), as tests/unit/test_k8s_actions.py does for Kubernetes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backends.actions import ActionRunner, CheckResult, CheckStatus, Outcome, ReadOnlyError
from backends.audit import AuditLog
from backends.config import parse
from backends.kafka import actions as kafka_actions
from backends.kafka.actions import (
    DrainBroker,
    ElectLeaders,
    KafkaActionError,
    UndrainBroker,
)
from backends.kafka.config import KafkaConfig
from backends.kafka.contract import BACKEND, broker_id
from backends.kafka.model import (
    ELECTION_NOT_NEEDED,
    ClusterView,
    ElectionOutcome,
    PartitionResult,
    PartitionState,
    TopicState,
)
from backends.kafka.plan import DrainRecord, save_record, state_path

Key = tuple[str, int]


# --------------------------------------------------------------------------- fakes


class FakeCluster:
    """Brokers and partitions that reassignments and elections change at once."""

    def __init__(self, partitions: Sequence[PartitionState], brokers: Sequence[int] = (1, 2, 3),
                 cluster_id: str = "fake-cluster") -> None:
        self.brokers = {b: ("127.0.0.1", 9000 + b) for b in brokers}
        self.partitions: dict[Key, PartitionState] = {(p.topic, p.partition): p
                                                      for p in partitions}
        self.cluster_id = cluster_id
        self.reads = 0
        self.writes: list[tuple[str, Any]] = []
        self.on_reassign: Any = None  # another actor, once a reassignment is applied

    def view(self) -> ClusterView:
        self.reads += 1
        topics: dict[str, list[PartitionState]] = {}
        for key in sorted(self.partitions):
            topics.setdefault(key[0], []).append(self.partitions[key])
        return ClusterView(self.cluster_id, 1, dict(self.brokers),
                           tuple(TopicState(t, tuple(ps), min_isr=ps[0].min_isr)
                                 for t, ps in topics.items()))

    def set(self, key: Key, **changes: Any) -> None:
        p = self.partitions[key]
        self.partitions[key] = PartitionState(
            p.topic, p.partition, changes.get("leader", p.leader),
            tuple(changes.get("replicas", p.replicas)), tuple(changes.get("isr", p.isr)),
            p.min_isr)


class FakeAdmin:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.closed = 0

    async def view(self) -> ClusterView:
        assert not self.closed, "read after close"
        return self.cluster.view()

    async def elect_preferred(self, partitions: Sequence[Key] | None) -> list[ElectionOutcome]:
        self.cluster.writes.append(("elect", None if partitions is None else list(partitions)))
        keys = sorted(self.cluster.partitions) if partitions is None else partitions
        outcomes = []
        for key in keys:
            p = self.cluster.partitions[key]
            preferred = p.replicas[0]
            if p.leader == preferred:
                outcomes.append(ElectionOutcome(*key, ELECTION_NOT_NEEDED, "not needed"))
            elif preferred in p.isr:
                self.cluster.set(key, leader=preferred)
                outcomes.append(ElectionOutcome(*key, 0, None))
            else:
                outcomes.append(ElectionOutcome(*key, 83, "preferred not in ISR"))
        return outcomes

    async def reassign(self, assignments: dict[Key, list[int]], *,
                       timeout: float = 30.0) -> list[PartitionResult]:
        self.cluster.writes.append(("reassign", dict(assignments)))
        for key, order in assignments.items():
            self.cluster.set(key, replicas=order)
        if self.cluster.on_reassign is not None:
            self.cluster.on_reassign()
        return [PartitionResult(t, p, 0) for t, p in assignments]

    async def ongoing_reassignments(self, partitions: Any = None) -> list[Any]:
        return []

    async def close(self) -> None:
        self.closed += 1


class FakeSource:
    """The part of KafkaService an action uses; ``close`` is the service's own (shared with
    the TUI's polls): no action may call it."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.admins: list[FakeAdmin] = []
        self.service_closed = False

    def action_admin(self) -> FakeAdmin:
        admin = FakeAdmin(self.cluster)
        self.admins.append(admin)
        return admin

    async def close(self) -> None:
        self.service_closed = True


def part(topic: str, n: int, leader: int, replicas: Sequence[int], isr: Sequence[int],
         min_isr: int | None = 2) -> PartitionState:
    return PartitionState(topic, n, leader, tuple(replicas), tuple(isr), min_isr)


def balanced() -> FakeCluster:
    """Three brokers, RF 3, every partition on its preferred leader, full ISR."""
    return FakeCluster([
        part("t", 0, 1, (1, 2, 3), (1, 2, 3)),
        part("t", 1, 2, (2, 3, 1), (1, 2, 3)),
        part("t", 2, 3, (3, 1, 2), (1, 2, 3)),
        part("u", 0, 2, (2, 1, 3), (1, 2, 3)),
    ])


def by_name(checks: Sequence[CheckResult]) -> dict[str, CheckResult]:
    return {c.name: c for c in checks}


def failing(checks: Sequence[CheckResult]) -> list[str]:
    return [c.name for c in checks if c.status is CheckStatus.FAIL]


@pytest.fixture
def runner(tmp_path: Path) -> ActionRunner:
    return ActionRunner(AuditLog(tmp_path / "audit.jsonl"))


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return AuditLog(tmp_path / "audit.jsonl").read()


# --------------------------------------------------------------------------- elect leaders


async def test_elect_preflight_and_would_change_name_what_moves():
    cluster = balanced()
    cluster.set(("t", 0), leader=3)  # 1 is in sync: an election moves it back
    cluster.set(("t", 1), leader=3, isr=(1, 3))  # 2 is not in sync: it stays on 3
    action = ElectLeaders(FakeSource(cluster))
    checks = by_name(await action.preflight())
    assert checks["cluster reachable"].status is CheckStatus.PASS
    assert checks["partitions not on their preferred leader"].detail == "2 of 4: t-0, t-1"
    assert checks["preferred leader in sync"].status is CheckStatus.WARN
    assert "t-1" in checks["preferred leader in sync"].detail
    assert await action.would_change() == [
        "leader t-0: 3 → 1",
        "stays t-1: leader 3 (preferred replica 2 is not in sync)",
    ]
    assert cluster.reads == 1  # the dry run shows the plan the preflight read
    assert cluster.writes == []


async def test_elect_for_an_unknown_topic_is_refused(runner, tmp_path):
    action = ElectLeaders(FakeSource(balanced()), "no.such.topic")
    result = await runner.run(action)
    assert result.outcome is Outcome.REFUSED
    assert "no topic named 'no.such.topic'" in (result.error or "")
    assert await ElectLeaders(FakeSource(balanced()), "no.such.topic").would_change() == [
        "nothing: no topic named 'no.such.topic'"]


async def test_elect_with_nothing_to_move_says_so():
    action = ElectLeaders(FakeSource(balanced()), "t")
    assert await action.would_change() == ["nothing: no leadership would move (3 partition(s))"]


async def test_elect_runs_and_closes_only_its_own_worker(runner, tmp_path):
    cluster = balanced()
    cluster.set(("u", 0), leader=1)
    source = FakeSource(cluster)
    result = await runner.run(ElectLeaders(source, "u"))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert cluster.writes == [("elect", [("u", 0)])]
    assert cluster.partitions[("u", 0)].leader == 2
    assert [a.closed for a in source.admins] == [1]
    assert not source.service_closed


# --------------------------------------------------------------------------- drain


async def test_drain_preflight_refuses_an_unknown_broker(tmp_path):
    checks = await DrainBroker(FakeSource(balanced()), 7, tmp_path).preflight()
    assert failing(checks) == ["broker exists"]
    assert "broker 7 is not in this cluster (brokers: 1, 2, 3)" in by_name(checks)[
        "broker exists"].detail


async def test_drain_preflight_refuses_when_no_safe_takeover(tmp_path):
    cluster = balanced()
    cluster.set(("t", 1), isr=(2, 3))  # ISR 2 = min.insync.replicas: draining 2 is unsafe
    checks = await DrainBroker(FakeSource(cluster), 2, tmp_path).preflight()
    takeover = by_name(checks)["another in-sync replica takes over, ISR above "
                               "min.insync.replicas"]
    assert takeover.status is CheckStatus.FAIL
    assert "1 of 2 led partition(s) unsafe: t-1 (ISR [2, 3] is not above " \
           "min.insync.replicas=2)" == takeover.detail


async def test_drain_preflight_passes_and_warns_when_already_drained(tmp_path):
    save_record(state_path(tmp_path, 2), DrainRecord(2, "fake-cluster", "2024-01-01T00:00:00",
                                                     {("t", 1): [2, 3, 1]}))
    checks = await DrainBroker(FakeSource(balanced()), 2, tmp_path).preflight()
    assert failing(checks) == []
    assert by_name(checks)["broker exists"].detail == "broker 2 is registered"
    assert by_name(checks)["plan"].detail == "reorder 3 partition(s), move leadership of 2"
    assert by_name(checks)["already drained"].status is CheckStatus.WARN


async def test_drain_would_change_lists_orders_leaderships_and_the_record(tmp_path):
    cluster = balanced()
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    await action.preflight()
    assert await action.would_change() == [
        "replicas t-0: [1, 2, 3] → [1, 3, 2]",
        "replicas t-1: [2, 3, 1] → [3, 1, 2]",
        "replicas u-0: [2, 1, 3] → [1, 3, 2]",
        "leader t-1: 2 → 3",
        "leader u-0: 2 → 1",
        f"record the original order of 3 partition(s) in {tmp_path / 'kafka-drain-2.json'}",
    ]
    assert cluster.writes == [] and not (tmp_path / "kafka-drain-2.json").exists()


async def test_drain_would_change_in_sync_replicas_first(tmp_path):
    cluster = balanced()
    cluster.set(("t", 1), isr=(2, 1))  # 3 lags: 1 becomes the preferred leader, not 3
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    lines = await action.would_change()  # no preflight: reads the cluster itself
    assert "replicas t-1: [2, 3, 1] → [1, 3, 2]" in lines
    assert "leader t-1: 2 → 1" in lines


async def test_drain_of_a_drained_broker_changes_nothing_in_the_cluster(tmp_path):
    cluster = FakeCluster([part("t", 0, 1, (1, 3, 2), (1, 2, 3))])
    save_record(state_path(tmp_path, 2), DrainRecord(2, "fake-cluster", "then",
                                                     {("t", 0): [2, 1, 3]}))
    lines = await DrainBroker(FakeSource(cluster), 2, tmp_path).would_change()
    assert lines == [
        "nothing in the cluster: broker 2 is already last in every replica list and leads "
        "no partition",
        f"keep the orders recorded at then in {tmp_path / 'kafka-drain-2.json'}, adding 0 "
        "partition(s)",
    ]


async def test_drain_recheck_reads_the_critical_conditions_again(tmp_path):
    cluster = balanced()
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    assert failing(await action.preflight()) == []
    reads = cluster.reads
    assert failing(await action.recheck()) == []
    assert cluster.reads == reads + 1  # one metadata read, nothing else

    cluster.set(("u", 0), isr=(1, 2))  # another replica fell out of sync meanwhile
    checks = await action.recheck()
    assert failing(checks) == ["another in-sync replica takes over, ISR above "
                               "min.insync.replicas"]
    assert "u-0" in checks[-1].detail

    cluster.set(("u", 0), isr=(1, 2, 3))
    del cluster.brokers[2]  # the broker went down since the preflight
    assert failing(await action.recheck()) == ["broker still up"]


async def test_drain_recheck_of_a_broker_seen_down_does_not_ask_it_to_be_up(tmp_path):
    cluster = FakeCluster([part("t", 0, 1, (2, 1, 3), (1, 3))], brokers=(1, 3))
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    checks = await action.preflight()
    assert by_name(checks)["broker exists"].detail == "broker 2 is NOT registered (down)"
    assert [c.name for c in await action.recheck()] == [
        "blast radius: min.insync.replicas",  # the partitions it follows (blast radius)
        "another in-sync replica takes over, ISR above min.insync.replicas"]


async def test_a_failed_recheck_refuses_before_any_write(runner, tmp_path):
    cluster = balanced()
    source = FakeSource(cluster)
    action = DrainBroker(source, 2, tmp_path)
    shown = await action.preflight()  # what the operator saw and confirmed
    cluster.set(("t", 1), isr=(2, 3))  # then the cluster changed
    result = await runner.run(action, preflight=shown)
    assert result.outcome is Outcome.REFUSED
    assert cluster.writes == [] and not state_path(tmp_path, 2).exists()
    record = audit(tmp_path)[-1]
    assert record["outcome"] == "refused"
    names = [c["name"] for c in record["preflight"]]
    assert names[:len(shown)] == [c.name for c in shown]  # the checks shown are audited
    assert "re-check: another in-sync replica takes over, ISR above min.insync.replicas" \
        in names
    assert [a.closed for a in source.admins] == [1] and not source.service_closed


TAKEOVER_CHECK = "another in-sync replica takes over, ISR above min.insync.replicas"


async def test_drain_rechecks_before_the_election_and_stops_there(runner, tmp_path,
                                                                   monkeypatch):
    """Between the reassignment and the leader election, a replica of t-1 (which broker 2
    leads) falls out of sync: its ISR is no longer above min.insync.replicas, and stays so for
    the whole settle time. The drain stops without electing, says what it left, and audits
    the re-check."""
    monkeypatch.setattr(kafka_actions, "ISR_SETTLE_SECONDS", 0.05)
    monkeypatch.setattr(kafka_actions, "ISR_SETTLE_INTERVAL", 0.01)
    cluster = balanced()
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    shown = await action.preflight()
    assert failing(shown) == []
    cluster.on_reassign = lambda: cluster.set(("t", 1), isr=(2, 3))
    steps: list[str] = []
    result = await runner.run(action, preflight=shown,
                              on_step=lambda step: steps.append(step.message))
    assert result.outcome is Outcome.FAILED
    assert [kind for kind, _ in cluster.writes] == ["reassign"]  # no election
    assert sorted(k for k, p in cluster.partitions.items() if p.leader == 2) == [
        ("t", 1), ("u", 0)]  # broker 2 still leads what it led
    assert state_path(tmp_path, 2).exists()  # the originals stay recorded for the undrain
    error = result.error or ""
    assert error.startswith(f"re-check before the leader election failed ({TAKEOVER_CHECK}: "
                            "1 of 2 led partition(s) unsafe: t-1"), error
    assert ("replica orders demoted (broker 2 last) and the originals recorded in "
            f"{state_path(tmp_path, 2)}; no leadership moved (broker 2 still leads 2 "
            "partition(s)); undo with `sfops kafka undrain 2`") in error
    assert steps[-1] == error
    record = audit(tmp_path)[-1]
    assert record["outcome"] == "failed" and record["error"] == error
    later = {c["name"]: c["status"] for c in record["preflight"]
             if c["detail"].startswith("before the leader election: ")}
    assert sorted(later) == ["re-check: " + TAKEOVER_CHECK,
                             "re-check: blast radius: min.insync.replicas",
                             "re-check: broker still up"]
    assert later["re-check: " + TAKEOVER_CHECK] == "fail"
    assert later["re-check: broker still up"] == "pass"


async def test_a_replica_back_in_sync_within_the_settle_time_lets_the_drain_elect(
        runner, tmp_path, monkeypatch):
    """A follower of t-1 out of the ISR right after the reassignment (catching up under load)
    and back a read later: the drain says it waits, then elects; the re-check recorded is the
    one that passed."""
    monkeypatch.setattr(kafka_actions, "ISR_SETTLE_INTERVAL", 0.01)
    cluster = balanced()
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    shown = await action.preflight()
    cluster.on_reassign = lambda: cluster.set(("t", 1), isr=(2, 3))
    in_sync = cluster.partitions[("t", 1)].isr
    steps: list[str] = []

    def shown_step(step: Any) -> None:
        steps.append(step.message)
        if "waiting up to" in step.message:
            cluster.set(("t", 1), isr=in_sync)  # the follower caught up meanwhile

    result = await runner.run(action, preflight=shown, on_step=shown_step)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert [kind for kind, _ in cluster.writes][:2] == ["reassign", "elect"]
    waiting = [s for s in steps if "waiting up to" in s]
    assert len(waiting) == 1 and "t-1" in waiting[0], steps
    later = {c["name"]: c["status"] for c in audit(tmp_path)[-1]["preflight"]
             if c["detail"].startswith("before the leader election: ")}
    assert later["re-check: " + TAKEOVER_CHECK] == "pass"


async def test_a_forced_drain_goes_on_past_a_judgement_it_was_forced_past(runner, tmp_path):
    """--force overrides the takeover judgement at the preflight; the re-check before the
    election is recorded, and overridden likewise."""
    cluster = balanced()
    action = DrainBroker(FakeSource(cluster), 2, tmp_path)
    shown = await action.preflight()
    cluster.on_reassign = lambda: cluster.set(("t", 1), isr=(2, 3))
    result = await runner.run(action, preflight=shown, force=True)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert [kind for kind, _ in cluster.writes][:2] == ["reassign", "elect"]
    assert ("re-check: " + TAKEOVER_CHECK, "fail") in [
        (c["name"], c["status"]) for c in audit(tmp_path)[-1]["preflight"]
        if c["detail"].startswith("before the leader election: ")]


async def test_drain_then_undrain_against_the_fake(runner, tmp_path):
    cluster = balanced()
    before = dict(cluster.partitions)
    source = FakeSource(cluster)
    drain = DrainBroker(source, 2, tmp_path)
    result = await runner.run(drain, preflight=await drain.preflight())
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert all(p.replicas[-1] == 2 and p.leader != 2 for p in cluster.partitions.values())
    record = json.loads(state_path(tmp_path, 2).read_text())
    assert {(e["topic"], e["partition"]): e["replicas"] for e in record["partitions"]} == {
        ("t", 0): [1, 2, 3], ("t", 1): [2, 3, 1], ("u", 0): [2, 1, 3]}

    undrain = UndrainBroker(source, 2, tmp_path)
    assert await undrain.would_change() == [
        "replicas t-0: [1, 3, 2] → [1, 2, 3]",
        "replicas t-1: [3, 1, 2] → [2, 3, 1]",
        "replicas u-0: [1, 3, 2] → [2, 1, 3]",
        "leader t-1: 3 → 2",
        "leader u-0: 1 → 2",
        f"remove {state_path(tmp_path, 2)}",
    ]
    result = await runner.run(undrain, preflight=await undrain.preflight())
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert cluster.partitions == before
    assert not state_path(tmp_path, 2).exists()
    assert [a.closed for a in source.admins] == [1, 1] and not source.service_closed
    assert "re-check: drain record unchanged" in [c["name"] for c in audit(tmp_path)[-1][
        "preflight"]]


# --------------------------------------------------------------------------- undrain


async def test_undrain_without_a_record_is_refused(tmp_path):
    action = UndrainBroker(FakeSource(balanced()), 3, tmp_path)
    checks = await action.preflight()
    assert failing(checks) == ["drain recorded"]
    assert "no drain recorded for broker 3" in by_name(checks)["drain recorded"].detail
    assert (await action.would_change())[0].startswith("nothing: no drain recorded for broker 3")


async def test_undrain_preflight_refuses_another_cluster_and_a_down_broker(tmp_path):
    cluster = FakeCluster([part("t", 0, 1, (1, 3, 2), (1, 3))], brokers=(1, 3))
    save_record(state_path(tmp_path, 2), DrainRecord(2, "another", "then",
                                                     {("t", 0): [2, 1, 3]}))
    checks = await UndrainBroker(FakeSource(cluster), 2, tmp_path).preflight()
    assert failing(checks) == ["same cluster", "broker up"]
    assert by_name(checks)["broker in sync"].status is CheckStatus.WARN


async def test_undrain_would_change_leaves_reassigned_partitions_alone(tmp_path):
    cluster = FakeCluster([part("t", 0, 1, (1, 3, 2), (1, 2, 3)),
                           part("t", 1, 1, (1, 3, 4), (1, 3, 4))], brokers=(1, 2, 3, 4))
    save_record(state_path(tmp_path, 2), DrainRecord(2, "fake-cluster", "then", {
        ("t", 0): [2, 1, 3], ("t", 1): [2, 1, 3], ("gone", 0): [2, 1, 3]}))
    lines = await UndrainBroker(FakeSource(cluster), 2, tmp_path).would_change()
    assert lines == [
        "replicas t-0: [1, 3, 2] → [2, 1, 3]",
        "left alone: gone-0: no longer exists",
        "left alone: t-1: replicas are now [1, 3, 4], were [2, 1, 3]",
        "leader t-0: 1 → 2",
        f"remove {state_path(tmp_path, 2)}",
    ]


async def test_undrain_recheck_the_record_still_exists_and_matches(tmp_path):
    path = state_path(tmp_path, 2)
    save_record(path, DrainRecord(2, "fake-cluster", "then", {("t", 0): [2, 1, 3]}))
    cluster = FakeCluster([part("t", 0, 1, (1, 3, 2), (1, 2, 3))])
    action = UndrainBroker(FakeSource(cluster), 2, tmp_path)
    assert failing(await action.preflight()) == []
    reads = cluster.reads
    assert [(c.name, c.status) for c in await action.recheck()] == [
        ("drain record unchanged", CheckStatus.PASS)]
    assert cluster.reads == reads  # a file read, no request

    save_record(path, DrainRecord(2, "fake-cluster", "then", {("t", 0): [2, 1, 3],
                                                             ("t", 1): [2, 3, 1]}))
    checks = await action.recheck()
    assert failing(checks) == ["drain record unchanged"]
    assert "changed since the preflight" in checks[0].detail

    path.unlink()
    checks = await action.recheck()
    assert failing(checks) == ["drain record unchanged"] and "no longer exists" in checks[
        0].detail


# --------------------------------------------------------------------------- close


async def test_refused_at_preflight_releases_the_worker_at_once(runner, tmp_path):
    source = FakeSource(balanced())
    action = DrainBroker(source, 7, tmp_path)
    result = await runner.run(action)
    assert result.outcome is Outcome.REFUSED
    assert [a.closed for a in source.admins] == [1]  # by the runner, not by the GC
    assert not source.service_closed
    await action.close()  # idempotent: front ends close what they built too
    assert [a.closed for a in source.admins] == [1]
    with pytest.raises(KafkaActionError, match="closed"):
        action.admin  # a closed action starts no new worker


async def test_close_without_a_worker_starts_none(tmp_path):
    source = FakeSource(balanced())
    action = UndrainBroker(source, 2, tmp_path)
    await action.close()
    await action.close()
    assert source.admins == [] and not source.service_closed


async def test_a_real_worker_ends_when_a_refused_action_is_closed(tmp_path):
    """The real thing: the action's worker process is gone when the runner returns, while the
    action object is still referenced (so not the garbage collector's doing), and the
    service's own worker is left alone."""
    from backends.kafka.service import KafkaService
    from tests.unit.test_kafka_worker import NOBODY, gone

    service = KafkaService(KafkaConfig(NOBODY, request_timeout=1.0))
    try:
        action = ElectLeaders(service)
        worker = action.admin.worker
        await worker.call("ping", budget=30)  # starts it
        pid = worker.pid
        assert pid is not None
        result = await ActionRunner(AuditLog(tmp_path / "audit.jsonl")).run(action)
        assert result.outcome is Outcome.REFUSED
        assert "no broker of 127.0.0.1:1" in (result.error or "")
        assert worker.closed and worker.pid is None
        assert gone(pid)
        assert service.admin.worker.starts == 0 and not service.admin.worker.closed
    finally:
        await service.close()


# --------------------------------------------------------------------------- the contract


class FakeContext:
    def __init__(self, tmp_path: Path, runner: ActionRunner, source: Any,
                 status: Any = None) -> None:
        self.config = parse(f'[sfops]\nstate_dir = "{tmp_path}/state"\n'
                            f'audit_log = "{tmp_path}/audit.jsonl"\n'
                            '[kafka]\nbootstrap_servers = "127.0.0.1:1"\n',
                            tmp_path / "sfops.toml")
        self.runner = runner
        self.source = source
        self.last = status
        self.asked: list[str] = []

    def service(self, backend: str) -> Any:
        self.asked.append(backend)
        return self.source

    def status(self, backend: str) -> Any:
        return self.last


def test_contract_declares_the_three_actions_as_before():
    assert (BACKEND.name, BACKEND.command, BACKEND.title) == ("kafka", "kafka", "Kafka")
    specs = {s.command: s for s in BACKEND.actions}
    assert {c: (s.key, s.target is not None) for c, s in specs.items()} == {
        "elect-leaders": ("e", False), "drain": ("d", True), "undrain": ("u", True)}
    assert [p.flag for p in specs["elect-leaders"].params] == ["--topic"]
    assert [p.flag for p in BACKEND.status_params] == ["--partitions"]
    for spec in specs.values():
        assert spec.action_class().name == spec.name
        assert (spec.destructive, spec.mutating) == (spec.action_class().destructive,
                                                     spec.action_class().mutating)


def test_contract_builds_from_the_tui_row_key_and_the_cli_int(tmp_path, runner):
    context = FakeContext(tmp_path, runner, FakeSource(balanced()))
    drain = BACKEND.spec("drain").build(context, "2", {})
    assert isinstance(drain, DrainBroker) and drain.broker_id == 2 and drain.target == "2"
    assert drain.state_file == tmp_path / "state" / "kafka-drain-2.json"
    undrain = BACKEND.spec("undrain").build(context, 3, {})
    assert isinstance(undrain, UndrainBroker) and undrain.broker_id == 3
    elect = BACKEND.spec("elect-leaders").build(context, None, {"topic": "t"})
    assert isinstance(elect, ElectLeaders) and elect.topic == "t"
    everything = BACKEND.spec("elect-leaders").build(context, None, {"topic": None})
    assert everything.target == "all-partitions"
    assert context.asked == ["kafka"] * 4


@pytest.mark.parametrize("bad", ["kafka-2", "2.5", "", None])
def test_a_target_that_is_not_a_broker_id_is_a_clear_value_error(tmp_path, runner, bad):
    context = FakeContext(tmp_path, runner, FakeSource(balanced()))
    with pytest.raises(ValueError, match="is not a broker id"):
        BACKEND.spec("drain").build(context, bad, {})
    assert context.asked == []  # refused before anything was built
    assert broker_id(" 3 ") == 3


def test_read_only_cannot_build_a_kafka_action(tmp_path):
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"), read_only=True)
    context = FakeContext(tmp_path, runner, FakeSource(balanced()))
    for command in ("elect-leaders", "drain", "undrain"):
        with pytest.raises(ReadOnlyError):
            BACKEND.spec(command).build(context, "2", {})


def test_palette_offers_the_brokers_of_the_last_status(tmp_path, runner):
    context = FakeContext(tmp_path, runner, None)
    choices = BACKEND.spec("drain").target.choices
    assert list(choices(context.config, None)) == []  # before the first poll: none
    status = SimpleNamespace(brokers=[SimpleNamespace(broker_id=1),
                                      SimpleNamespace(broker_id=3)])
    assert list(choices(context.config, status)) == ["1", "3"]


def test_status_json_is_the_redacted_status():
    from tests.unit.test_kafka_worker import sample_status

    data = BACKEND.status_json(sample_status())
    assert data["cluster_id"] == "c" and data["brokers"][0]["broker_id"] == 1
    assert json.dumps(data)


# --------------------------------------------------------------------------- the CLI


def test_cli_commands_keep_their_flags():
    from tests.unit.test_contract import run_cli
    from tui import exitcodes

    code, out, _ = run_cli("kafka", "status", "--help")
    assert code == 0
    for flag in ("--partitions", "--json", "-o", "--timeout"):
        assert flag in out
    code, out, _ = run_cli("kafka", "elect-leaders", "--help")
    assert code == 0 and "--topic T" in out and "--dry-run" in out
    for command in ("drain", "undrain"):
        code, out, _ = run_cli("kafka", command, "--help")
        assert code == 0 and "BROKER" in out and "--yes" in out and "--force" in out
    code, _, err = run_cli("kafka", "drain", "two", "--yes")
    assert code == exitcodes.USAGE and "invalid int value: 'two'" in err
    code, out, _ = run_cli("--help")  # the contract's command, registered once
    assert code == 0 and out.count("\n    kafka ") == 1


async def test_the_preflight_states_the_worst_case_from_the_real_timeouts(tmp_path):
    """The admin worker's budgets (request_timeout 5 s by default), the waits' own timeouts:
    the drain's worst case names each phase and adds them up."""
    action = DrainBroker(FakeSource(balanced()), 2, tmp_path)
    checks = await action.preflight()
    assert checks[-1].name == "worst case" and checks[-1].status is CheckStatus.PASS
    worst = action.worst_case()
    assert [name for name, _ in worst.parts] == ["re-check", "reorder",
                                                 "ISR settling before the election",
                                                 "leadership", "verify"]
    view, elect, _, _ = action._bounds()
    assert view == 6 + 3 * (5 + 1) + 3 + 20  # retry deadline, budget, kill margin, start-up
    assert dict(worst.parts)["leadership"] == view + elect + 60 + view + elect
    assert checks[-1].detail.startswith(f"{worst.seconds:.0f} s: re-check ")
