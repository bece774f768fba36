"""The timeline's change derivation, pure: each backend's facts and how their changes read,
the generic fallback (alerts) and health, and the step from the stored state and a reading
to the changes (baseline, unreachable and back, a reading older than the stored one, changes
that happened while nobody saw the source)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from backends.kafka.model import BrokerState
from backends.kubernetes.model import build_status
from backends.kubernetes.objects import (
    deployment_from_json,
    event_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
)
from backends.nginx.accesslog import MemberTraffic
from backends.nginx.model import MemberState, MemberStatus, NginxStatus, ProbeResult
from backends.nginx.upstream import ServerEntry
from backends.postgres.model import MemberStatus as PgMember
from backends.postgres.model import Role, StandbyRow, WalReceiver, build_cluster
from backends.service import Alert, BackendSummary, Severity
from backends.snapshot import Health
from backends.timeline.derive import derive_for, observation
from backends.timeline.model import (
    COLLAPSE_AFTER,
    CRITICAL,
    OK,
    WARNING,
    Change,
    Observation,
    Reading,
    apply_reading,
    collapse,
)
from tests.unit.test_k8s_objects import deployment, event, node, pod, replicaset
from tests.unit.test_kafka_model import part, status_of

SUMMARY_OK = BackendSummary("x", "X", Health.OK)


def changes_between(backend: str, old_status, new_status, section=None,
                    old_summary=SUMMARY_OK, new_summary=SUMMARY_OK) -> list[Change]:
    old = observation(backend, old_status, old_summary, section)
    new = observation(backend, new_status, new_summary, section)
    return derive_for(backend, backend.title())(old.facts, new)


def messages(changes: list[Change]) -> list[str]:
    return [c.message for c in changes]


# --------------------------------------------------------------------------- nginx


def member(name: str, state: MemberState, *, error: str | None = None,
           rate_5xx: float = 0.0) -> MemberStatus:
    probe = ProbeResult(error is None, 200 if error is None else None, 1.0, error)
    return MemberStatus(name, f"127.0.0.1:{name[-1]}", state,
                        ServerEntry(f"127.0.0.1:{name[-1]}",
                                    down=state in (MemberState.DRAINED, MemberState.DRAINING)),
                        probe, MemberTraffic(errors_5xx_per_s=rate_5xx))


def nginx(*members: MemberStatus) -> NginxStatus:
    return NginxStatus(1000.0, "api", tuple(members), None, 0, 30.0)


def test_nginx_member_flip_names_the_member_states_and_why():
    up = nginx(member("api-1", MemberState.UP), member("api-2", MemberState.UP))
    failing = nginx(member("api-1", MemberState.UP),
                    member("api-2", MemberState.FAILING, error="ConnectError: refused"))
    found = changes_between("nginx", up, failing)
    assert messages(found) == ["api-2 up → failing: ConnectError: refused"]
    assert found[0].level == CRITICAL and found[0].subject == "api-2"
    back = changes_between("nginx", failing, up)
    assert messages(back) == ["api-2 failing → up"] and back[0].level == OK
    drained = nginx(member("api-1", MemberState.UP), member("api-2", MemberState.DRAINED))
    assert messages(changes_between("nginx", up, drained)) == ["api-2 up → drained"]


def test_nginx_5xx_spike_starts_and_ends_once():
    calm = nginx(member("api-1", MemberState.UP, rate_5xx=0.2))
    spike = nginx(member("api-1", MemberState.UP, rate_5xx=2.5))
    found = changes_between("nginx", calm, spike)
    assert len(found) == 1 and found[0].kind == "5xx-spike" and found[0].level == WARNING
    assert "2.50 5xx/s" in found[0].message and "api-1" in found[0].message
    assert changes_between("nginx", spike, spike) == []
    assert messages(changes_between("nginx", spike, calm))[0].startswith("5xx back to normal")


# --------------------------------------------------------------------------- postgres


def pg_member(name: str, role: Role, *, timeline: int = 3, lag: int = 0,
              reachable: bool = True, streaming: bool = True) -> PgMember:
    if not reachable:
        return PgMember(name, "127.0.0.1", 5432, False, error="connection refused")
    if role is Role.PRIMARY:
        return PgMember(name, "127.0.0.1", 5432, True, role=role, timeline=timeline,
                        current_lsn=10_000_000,
                        standbys=(StandbyRow("pg-2", None, "streaming", "async", None, None,
                                             None, None, None, None, None, None),))
    receiver = WalReceiver("streaming" if streaming else "stopped", timeline, None, None, None,
                           None, None)
    return PgMember(name, "127.0.0.1", 5432, True, role=role, timeline=timeline,
                    received_lsn=10_000_000 - lag, replayed_lsn=10_000_000 - lag,
                    wal_receiver=receiver)


def test_postgres_switchover_reads_as_role_and_timeline_changes():
    before = build_cluster([pg_member("pg-1", Role.PRIMARY), pg_member("pg-2", Role.STANDBY)])
    after = build_cluster([pg_member("pg-1", Role.STANDBY, timeline=4),
                           pg_member("pg-2", Role.PRIMARY, timeline=4)])
    found = messages(changes_between("postgres", before, after))
    assert "pg-1 primary → standby" in found and "pg-2 standby → primary" in found
    assert "pg-2 timeline 3 → 4" in found and "pg-1 timeline 3 → 4" in found


def test_postgres_member_down_and_lag_over_its_bound_and_fencing():
    section = type("Section", (), {"max_lag_on_failover": 1024})()
    before = build_cluster([pg_member("pg-1", Role.PRIMARY), pg_member("pg-2", Role.STANDBY)])
    lagging = build_cluster([pg_member("pg-1", Role.PRIMARY),
                             pg_member("pg-2", Role.STANDBY, lag=4096)])
    found = changes_between("postgres", before, lagging, section)
    assert [c.kind for c in found] == ["lag"] and found[0].level == WARNING
    assert "pg-2 lag over its bound" in found[0].message and "4.0 KiB" in found[0].message
    back = changes_between("postgres", lagging, before, section)
    assert back[0].message.startswith("pg-2 lag back within its bound") and back[0].level == OK
    down = build_cluster([pg_member("pg-1", Role.PRIMARY, reachable=False),
                          pg_member("pg-2", Role.STANDBY)],
                         fenced={"pg-1": {"at": 1}})
    found = changes_between("postgres", before, down)
    role = next(c for c in found if c.kind == "role")
    assert role.message == "pg-1 primary → down: connection refused"
    assert role.level == CRITICAL
    assert "pg-1 fenced (former primary)" in messages(found)


# --------------------------------------------------------------------------- kafka


def test_kafka_broker_down_urp_and_leader_moves_in_one_line():
    healthy = status_of([part(partition=i, leader=1 + i % 3) for i in range(6)])
    brokers = [BrokerState(1, "127.0.0.1", 9001, reachable=True),
               BrokerState(2, "127.0.0.1", 9002, registered=False, reachable=False),
               BrokerState(3, "127.0.0.1", 9003, reachable=True)]
    degraded = status_of([part(partition=i, leader=1 if i % 3 == 1 else 1 + i % 3,
                               isr=(1, 3)) for i in range(6)], brokers=brokers)
    found = changes_between("kafka", healthy, degraded)
    by_kind = {c.kind: c for c in found}
    assert by_kind["broker"].message == "broker 2 (127.0.0.1:9002) down"
    assert by_kind["broker"].level == CRITICAL
    assert by_kind["urp"].message.startswith("under-replicated partitions 0 → 6: t-0, t-1")
    moves = by_kind["leader-moves"]
    assert moves.message.startswith("2 leadership(s) moved (2→1 \u00d72)")
    assert moves.data["count"] == 2
    back = changes_between("kafka", degraded, healthy)
    assert {c.kind: c.level for c in back}["urp"] == OK


def test_kafka_under_min_isr_and_offline_are_critical():
    healthy = status_of([part()])
    bad = status_of([part(isr=(1,)), part(partition=1, leader=-1, isr=())])
    levels = {c.kind: c.level for c in changes_between("kafka", healthy, bad)}
    assert levels["offline"] == CRITICAL and levels["under-min-isr"] == CRITICAL


# --------------------------------------------------------------------------- kubernetes

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def cluster(*, pods=None, nodes=None, revision=2, events=(), updated=3):
    return build_status(
        host="https://k", namespaces=("streamforge",), now=NOW,
        deployments=[deployment_from_json(deployment(revision=revision, image=f"r/api:{revision}",
                                                     updated=updated))],
        replicasets=[replicaset_from_json(replicaset("api-abcde", revision))],
        pods=[pod_from_json(p) for p in (pods if pods is not None else
                                        [pod(f"api-abcde-{i}") for i in range(3)])],
        nodes=[node_from_json(n) for n in (nodes or [node("node-1")])],
        budgets=[], events=[event_from_json(e) for e in events])


def test_kubernetes_readiness_flip_with_its_probe_cordon_and_revision():
    before = cluster()
    after = cluster(pods=[pod("api-abcde-0", ready=False,
                              ready_message="readiness: HTTP 503")]
                    + [pod(f"api-abcde-{i}") for i in (1, 2)],
                    nodes=[node("node-1", unschedulable=True)], revision=3)
    found = changes_between("kubernetes", before, after)
    by_kind = {c.kind: c for c in found}
    assert by_kind["pod-ready"].message.startswith(
        "pod streamforge/api-abcde-0 ready → not ready")
    assert by_kind["cordon"].message == "node node-1 cordoned"
    assert by_kind["revision"].message == "streamforge/api revision 2 → 3 (api=r/api:3)"
    rolling = cluster(updated=1)
    rollout = changes_between("kubernetes", before, rolling)
    assert any(c.kind == "rollout" and "complete → rolling" in c.message for c in rollout)


def test_kubernetes_warning_events_carry_their_own_time_and_a_dedupe_key():
    warned = cluster(events=[event("ev1", "api-abcde-0", "Readiness probe failed: 503",
                                   count=2)])
    found = changes_between("kubernetes", cluster(), warned)
    (ev,) = [c for c in found if c.kind == "warning-event"]
    assert ev.at == NOW.timestamp() and ev.key == "k8s-event:streamforge/ev1:2"
    assert "Unhealthy pod/api-abcde-0" in ev.message and "\u00d72" in ev.message


def test_many_changes_of_one_kind_collapse_into_one_line():
    before = cluster(pods=[pod(f"api-abcde-{i}") for i in range(20)])
    after = cluster(pods=[pod(f"api-abcde-{i}", ready=False) for i in range(20)])
    found = [c for c in changes_between("kubernetes", before, after) if c.kind == "pod-ready"]
    assert len(found) == 1 and found[0].message.startswith("20 changes (pod-ready): ")
    assert len(found[0].data["subjects"]) == 20
    few = [Change("s", "k", str(i), str(i)) for i in range(COLLAPSE_AFTER)]
    assert collapse(few) == few


# --------------------------------------------------------------------------- generic


def test_a_backend_without_a_timeline_module_is_followed_by_its_alerts_and_health():
    alert = Alert("fifth", "disk", Severity.WARNING, "disk 91% full")
    calm = BackendSummary("fifth", "Fifth", Health.OK)
    worse = BackendSummary("fifth", "Fifth", Health.DEGRADED, alerts=(alert,))
    found = changes_between("fifth", object(), object(), old_summary=calm, new_summary=worse)
    # What changed first, then what it did to the health.
    assert [(c.kind, c.message, c.level) for c in found] == [
        ("alert", "disk 91% full", WARNING), ("health", "Fifth ok → degraded", WARNING)]
    cleared = changes_between("fifth", object(), object(), old_summary=worse, new_summary=calm)
    assert [c.kind for c in cleared] == ["alert-cleared", "health"]


def reading(at: float, facts: dict[str, str] | None, error: str | None = None) -> Reading:
    return Reading("nginx", "Load balancer", at,
                   None if facts is None else Observation(facts), error)


def derive(old, new):
    return derive_for("nginx", "Load balancer")(old, new)


def test_first_reading_is_a_baseline_then_changes_then_unreachable_and_back():
    changes, state = apply_reading(None, reading(100.0, {"member:api-2": "up"}), derive,
                                   unseen_after=30)
    assert changes == [] and state.reachable and state.facts_at == 100.0
    changes, state = apply_reading(state, reading(102.0, {"member:api-2": "failing"}), derive,
                                   unseen_after=30)
    assert messages(changes) == ["api-2 up → failing"]
    changes, state = apply_reading(state, reading(104.0, None, "connect timeout"), derive,
                                   unseen_after=30)
    assert messages(changes) == ["Load balancer unreachable: connect timeout"]
    assert not state.reachable and state.facts == {"member:api-2": "failing"}
    changes, state = apply_reading(state, reading(106.0, None, "connect timeout"), derive,
                                   unseen_after=30)
    assert changes == []  # still unreachable: said once
    changes, state = apply_reading(state, reading(200.0, {"member:api-2": "up"}), derive,
                                   unseen_after=30)
    assert messages(changes)[0].startswith("Load balancer answers again")
    # Compared with facts 98 s old: it changed while nobody saw it, and says so.
    assert messages(changes)[1].startswith("api-2 failing → up (changed while not seen")
    assert changes[1].data["unseen_since"] == 102.0


def test_a_reading_older_than_the_stored_one_changes_nothing():
    _, state = apply_reading(None, reading(100.0, {"member:api-2": "up"}), derive,
                             unseen_after=30)
    _, state = apply_reading(state, reading(105.0, {"member:api-2": "failing"}), derive,
                             unseen_after=30)
    changes, after = apply_reading(state, reading(104.0, {"member:api-2": "up"}), derive,
                                   unseen_after=30)
    assert changes == [] and after.facts == state.facts


def test_events_with_their_own_time_are_kept_from_the_first_reading():
    event_change = Change("kubernetes", "warning-event", "Pod/x", "BackOff", WARNING,
                          at=50.0, key="k8s-event:ns/x:1")
    first = Reading("kubernetes", "Kubernetes", 100.0,
                    Observation({"health": "ok"}, events=(event_change,)))
    changes, _ = apply_reading(None, first, lambda old, new: [], unseen_after=30)
    assert changes == [event_change]
    assert replace(event_change, at=None) not in changes
