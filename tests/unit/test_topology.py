"""The cross-layer view (backends.topology) on fake statuses: how nginx members, pods, the
API's database, Kafka partitions and nodes are linked; the likely causes that group "What is
wrong now"; the blast-radius checks of the preflights; the ``[topology]`` section."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backends.actions import ActionRunner, CheckStatus, Outcome
from backends.audit import AuditLog
from backends.config import ConfigError, parse
from backends.kafka.actions import DrainBroker
from backends.kafka.model import (
    BrokerState,
    GroupState,
    KafkaStatus,
    PartitionLag,
    PartitionState,
    TopicState,
)
from backends.kafka.plan import min_isr_loss
from backends.kubernetes.model import build_status, summarize_status
from backends.kubernetes.objects import (
    deployment_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
)
from backends.nginx.accesslog import MemberTraffic
from backends.nginx.model import MemberState, NginxStatus, ProbeResult, probe_reason
from backends.nginx.model import MemberStatus as NginxMember
from backends.nginx.model import summarize_status as nginx_summary
from backends.nginx.upstream import ServerEntry
from backends.postgres.model import LastPrimaryLsn, Role, StandbyRow, build_cluster
from backends.postgres.model import MemberStatus as PgMember
from backends.postgres.model import summarize_status as pg_summary
from backends.service import Alert, BackendSummary, Severity, wrong_now
from backends.topology import blast
from backends.topology.causes import explain, grouped
from backends.topology.config import TopologyConfig
from backends.topology.model import build_topology
from tests.unit.test_k8s_objects import deployment, node, pod, replicaset
from tests.unit.test_kafka_actions import FakeCluster, FakeSource, part
from tui.render.overview import alert_text

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PODS = {"api-abcde-0": ("node-0", "10.0.0.10"), "api-abcde-1": ("node-0", "10.0.0.11"),
        "api-abcde-2": ("node-1", "10.0.0.12")}


# --------------------------------------------------------------------------- fake statuses


def api_pod(name: str, *, ready: bool = True, ip: str | None = None, port: int = 8000,
            node_name: str | None = None, message: str = "") -> dict[str, Any]:
    data = pod(name, node=node_name or PODS[name][0], ready=ready, ready_message=message)
    data["status"]["podIP"] = ip or PODS[name][1]
    data["spec"]["containers"][0]["ports"] = [{"containerPort": port}]
    return data


def cluster(pods: Sequence[dict[str, Any]] | None = None, *, cordoned: str | None = None,
            not_ready: str | None = None) -> Any:
    pods = pods if pods is not None else [api_pod(name) for name in PODS]
    return build_status(
        host="https://k8s", namespaces=["streamforge"], now=NOW,
        nodes=[node_from_json(node(n, ready=n != not_ready, unschedulable=n == cordoned))
               for n in ("node-0", "node-1", "node-2")],
        budgets=[], deployments=[deployment_from_json(deployment())],
        replicasets=[replicaset_from_json(replicaset("api-abcde", 2))],
        pods=[pod_from_json(p) for p in pods])


def member(name: str, address: str, *, probe: ProbeResult | None = None,
           down: bool = False) -> NginxMember:
    probe = probe or ProbeResult(True, 200, 2.0)
    state = (MemberState.DRAINED if down else MemberState.UP if probe.ok
             else MemberState.FAILING)
    return NginxMember(name, address, state, ServerEntry(address, down=down), probe,
                       MemberTraffic())


def nginx(*members: NginxMember) -> NginxStatus:
    return NginxStatus(0.0, "api_backend", tuple(members), None, 0, 30.0)


def by_address(**probes: ProbeResult) -> NginxStatus:
    """api-1..3 addressed at the pods' IPs."""
    names = dict(zip(("api-1", "api-2", "api-3"), PODS.values(), strict=True))
    return nginx(*(member(n, f"{ip}:8000", probe=probes.get(n.replace("-", "_")))
                   for n, (_, ip) in names.items()))


NOT_READY = ProbeResult(False, 503, 3.0, "HTTP 503", "database unavailable")


def pg(*, primary_up: bool = True, fenced: Sequence[str] = ()) -> Any:
    standby = PgMember("pg-2", "127.0.0.1", 5433, True, role=Role.STANDBY, timeline=3)
    if primary_up:
        row = StandbyRow("pg-2", None, "streaming", "async", 1, 1, 1, 1, None, None, None, 0)
        primary = PgMember("pg-1", "127.0.0.1", 5432, True, role=Role.PRIMARY, timeline=3,
                           current_lsn=100, standbys=(row,))
    else:
        primary = PgMember("pg-1", "127.0.0.1", 5432, False, error="connection refused")
    return build_cluster([primary, standby], fenced={n: {} for n in fenced},
                         last_primary_lsn=LastPrimaryLsn("pg-1", 100, 3, 0.0))


def summaries(**statuses: Any) -> list[BackendSummary]:
    made: list[BackendSummary] = []
    if "nginx" in statuses:
        made.append(nginx_summary(statuses["nginx"]))
    if "postgres" in statuses:
        made.append(pg_summary(statuses["postgres"]))
    if "kubernetes" in statuses:
        made.append(summarize_status(statuses["kubernetes"]))
    return made


def explained(config: TopologyConfig | None = None, **statuses: Any) -> list[Alert]:
    topology = build_topology(config or TopologyConfig(), statuses)
    return explain(wrong_now(summaries(**statuses)), topology)


# --------------------------------------------------------------------------- links


def test_nginx_members_are_linked_to_pods_by_address():
    topology = build_topology(TopologyConfig(), {"nginx": by_address(),
                                                 "kubernetes": cluster()})
    unit = topology.unit("api-2")
    assert unit is not None
    assert (unit.pod, unit.node, unit.link) == ("streamforge/api-abcde-1", "node-0",
                                                "address 10.0.0.11:8000")
    assert topology.api_pods == {f"streamforge/{n}" for n in PODS}
    assert unit.describe() == "api-2 (pod streamforge/api-abcde-1 on node-0)"


def test_a_port_that_does_not_match_links_nothing():
    status = nginx(member("api-1", "10.0.0.10:9999"))
    topology = build_topology(TopologyConfig(), {"nginx": status, "kubernetes": cluster()})
    unit = topology.unit("api-1")
    assert unit is not None and unit.pod is None and unit.link == ""


def test_the_mapping_links_where_addresses_cannot_and_names_a_vanished_pod():
    lab = nginx(member("api-1", "127.0.0.1:15401"), member("api-2", "127.0.0.1:15402"))
    config = TopologyConfig(api_deployment=("streamforge", "api"),
                            member_pods={"api-1": (None, "api-abcde-2"),
                                         "api-2": ("streamforge", "api-gone-0")})
    topology = build_topology(config, {"nginx": lab, "kubernetes": cluster()})
    first, second = topology.unit("api-1"), topology.unit("api-2")
    assert first is not None and first.pod == "streamforge/api-abcde-2"
    assert first.link == "[topology.members.api-1] pod"
    assert second is not None and second.pod is None
    assert topology.problems == ("[topology.members.api-2] pod: no pod "
                                 "streamforge/api-gone-0 (replaced by a rollout?)",)
    # The API's other pods are units of their own (no nginx member sends them traffic).
    assert {u.pod for u in topology.units if u.member is None} == {
        "streamforge/api-abcde-0", "streamforge/api-abcde-1"}


def test_the_database_the_api_needs():
    config = TopologyConfig()
    database = build_topology(config, {"postgres": pg()}).database
    assert database is not None and database.writable and database.primary == "pg-1"
    down = build_topology(config, {"postgres": pg(primary_up=False)}).database
    assert down is not None and not down.writable
    assert down.problem == "read-only: pg-2 is a standby, pg-1 unreachable"
    assert down.last_primary == "pg-1"
    only_standby = TopologyConfig(api_databases=("pg-2",))
    outside = build_topology(only_standby, {"postgres": pg()}).database
    assert outside is not None and not outside.writable
    assert "the primary pg-1 is not in [topology] api_databases (pg-2)" in outside.problem


def test_the_probe_keeps_the_members_json_reason_and_nothing_else():
    assert probe_reason(b'{"ready": false, "reason": "database unavailable"}',
                        "application/json") == "database unavailable"
    assert probe_reason(b'{"reason": "x"}', "text/html") is None
    assert probe_reason(b"not json", "application/json") is None
    assert probe_reason(b'["reason"]', "application/json") is None
    assert probe_reason(json.dumps({"reason": "r" * 500}).encode(), "application/json") == \
        "r" * 80
    assert NOT_READY.describe() == "HTTP 503 (database unavailable)"


# --------------------------------------------------------------------------- causes


def test_a_dead_primary_is_the_likely_cause_of_failing_api_members():
    alerts = explained(nginx=by_address(api_1=NOT_READY, api_2=NOT_READY, api_3=NOT_READY),
                       postgres=pg(primary_up=False), kubernetes=cluster())
    idents = [a.ident for a in alerts]
    root = "postgres:member-unreachable:pg-1"
    # The root first, everything it causes right after it, the nearest first.
    assert idents[:2] == [root, "postgres:no-primary:*"]
    assert set(idents[2:5]) == {"nginx:member-failing:api-1", "nginx:member-failing:api-2",
                                "nginx:member-failing:api-3"}
    none_up = alerts[5]
    assert none_up.ident == "nginx:no-member-up" and none_up.cause == root
    assert none_up.chain[1] == "every member failing (api-1, api-2, api-3)"
    api2 = next(a for a in alerts if a.ident == "nginx:member-failing:api-2")
    assert api2.cause == root
    assert api2.chain == (
        "api-2 failing: HTTP 503 (database unavailable)",
        "readiness: database read-only: pg-2 is a standby, pg-1 unreachable",
        "no primary: no reachable member accepts writes",
        "pg-1 unreachable: connection refused",
    )
    assert alert_text(api2).startswith("\u21b3 api-2 failing: HTTP 503 (database unavailable)"
                                       " \u2190 readiness: database read-only")
    no_primary = next(a for a in alerts if a.ident == "postgres:no-primary:*")
    assert no_primary.cause == root and len(no_primary.chain) == 2
    assert alert_text(alerts[0]) == alerts[0].message  # the root reads as before


def test_a_running_failover_is_named_in_the_chain():
    topology = build_topology(TopologyConfig(), {"nginx": by_address(api_1=NOT_READY),
                                                 "postgres": pg(primary_up=False)},
                              running=("pg.failover pg-2", "nginx.drain api-3"))
    alerts = explain(wrong_now(summaries(nginx=by_address(api_1=NOT_READY),
                                         postgres=pg(primary_up=False))), topology)
    api1 = next(a for a in alerts if a.ident == "nginx:member-failing:api-1")
    assert api1.chain[1] == ("readiness: database read-only: pg-2 is a standby, pg-1 "
                             "unreachable (pg.failover pg-2 running)")


def test_a_member_whose_process_is_gone_is_its_own_cause():
    refused = ProbeResult(False, None, None, "ConnectError: connection refused")
    alerts = explained(nginx=by_address(api_1=refused), postgres=pg(primary_up=False))
    api1 = next(a for a in alerts if a.ident == "nginx:member-failing:api-1")
    assert api1.cause is None and api1.chain == ()


def test_a_healthy_database_is_never_blamed():
    alerts = explained(nginx=by_address(api_1=NOT_READY), postgres=pg())
    api1 = next(a for a in alerts if a.ident == "nginx:member-failing:api-1")
    assert api1.cause is None and api1.chain == ()


def test_pod_not_ready_on_a_cordoned_node_through_the_member():
    pods = [api_pod("api-abcde-0", ready=False), api_pod("api-abcde-1"), api_pod("api-abcde-2")]
    alerts = explained(nginx=by_address(api_1=ProbeResult(False, None, None, "timeout")),
                       kubernetes=cluster(pods, cordoned="node-0"))
    member_alert = next(a for a in alerts if a.ident == "nginx:member-failing:api-1")
    assert member_alert.cause == "kubernetes:node-cordoned:node-0"
    assert member_alert.chain[1].startswith("pod streamforge/api-abcde-0 not ready")
    assert member_alert.chain[2] == "on node node-0 (cordoned)"
    assert member_alert.chain[3] == "node node-0 cordoned"
    idents = [a.ident for a in alerts]
    assert idents.index("kubernetes:node-cordoned:node-0") < idents.index(
        "nginx:member-failing:api-1")


def test_an_api_pod_failing_readiness_points_at_the_database():
    pods = [api_pod("api-abcde-0", ready=False,
                    message="Readiness probe failed: HTTP probe failed with statuscode: 503"),
            api_pod("api-abcde-1"), api_pod("api-abcde-2")]
    config = TopologyConfig(api_deployment=("streamforge", "api"))
    alerts = explained(config, kubernetes=cluster(pods), postgres=pg(primary_up=False))
    pod_alert = next(a for a in alerts if a.ident ==
                     "kubernetes:pod-not-ready:streamforge/api-abcde-0")
    assert pod_alert.cause == "postgres:member-unreachable:pg-1"
    assert pod_alert.chain[1].startswith("readiness: database read-only")


def kafka(*, down: int | None = None, lag_on: tuple[str, int] | None = None) -> KafkaStatus:
    brokers = tuple(BrokerState(b, "127.0.0.1", 9000 + b, registered=b != down)
                    for b in (1, 2, 3))
    partitions = (PartitionState("events", 0, -1 if down == 2 else 2, (2,), () if down == 2
                                 else (2,), 1),
                  PartitionState("events", 1, 1, (1, 2, 3), (1, 3) if down == 2 else (1, 2, 3),
                                 2))
    lag = (PartitionLag(*lag_on, 5, 10),) if lag_on else ()
    return KafkaStatus("b", "c", 1, brokers, (TopicState("events", partitions, min_isr=2),),
                       (GroupState("consumers", "EMPTY", 0, lag),))


def test_kafka_partitions_and_a_consumer_group_point_at_the_down_broker():
    status = kafka(down=2, lag_on=("events", 0))
    from backends.kafka.model import summarize_status as kafka_summary

    topology = build_topology(TopologyConfig(), {"kafka": status})
    alerts = explain(wrong_now([kafka_summary(status)]), topology)
    causes = {a.ident: a.cause for a in alerts}
    assert causes["kafka:partitions-offline"] == "kafka:broker-down:2"
    assert causes["kafka:partitions-under-replicated"] == "kafka:broker-down:2"
    assert causes["kafka:group-idle:consumers"] == "kafka:broker-down:2"
    group = next(a for a in alerts if a.ident == "kafka:group-idle:consumers")
    assert "lagging partitions without a leader: events-0" in group.chain


def test_a_node_placement_explains_a_down_broker():
    status = kafka(down=2)
    from backends.kafka.model import summarize_status as kafka_summary

    config = TopologyConfig(placement={"broker-2": "node-2"})
    cluster_status = cluster(not_ready="node-2")
    topology = build_topology(config, {"kafka": status, "kubernetes": cluster_status})
    alerts = explain(wrong_now([kafka_summary(status), summarize_status(cluster_status)]),
                     topology)
    broker = next(a for a in alerts if a.ident == "kafka:broker-down:2")
    assert broker.cause == "kubernetes:node-not-ready:node-2"


def test_grouped_keeps_unreachable_roots_first_and_symptoms_under_them():
    root = Alert("b", "down", Severity.WARNING, "b down", unreachable=True)
    other = Alert("a", "x", Severity.CRITICAL, "a broken")
    symptom = Alert("c", "s", Severity.CRITICAL, "c failing", cause="b:down", chain=("c", "b"))
    assert [a.ident for a in grouped([other, symptom, root])] == ["b:down", "c:s", "a:x"]
    assert explain([], build_topology(TopologyConfig(), {})) == []


# --------------------------------------------------------------------------- blast radius


def topology_for_drain(**probes: ProbeResult) -> Any:
    return build_topology(TopologyConfig(), {"nginx": by_address(**probes),
                                             "kubernetes": cluster(), "postgres": pg()})


def test_a_node_drain_names_the_pods_and_their_members():
    topology = topology_for_drain()
    (check,) = blast.node_drain(topology, "node-0", {"streamforge/api-abcde-0",
                                                      "streamforge/api-abcde-1"})
    assert check.status is CheckStatus.PASS
    assert "api-1 (pod streamforge/api-abcde-0 on node-0)" in check.detail
    assert "api-2 (pod streamforge/api-abcde-1 on node-0)" in check.detail
    assert check.detail.endswith("still healthy: api-3 (pod streamforge/api-abcde-2 on node-1)")


def test_a_node_drain_that_takes_the_last_healthy_members_is_refused():
    topology = topology_for_drain(api_3=NOT_READY)
    (check,) = blast.node_drain(topology, "node-0", {"streamforge/api-abcde-0",
                                                      "streamforge/api-abcde-1"})
    assert check.status is CheckStatus.FAIL
    assert "the last healthy API member(s)" in check.detail and "--force" in check.detail


def test_a_node_drain_that_takes_the_primary_or_min_isr_is_refused():
    config = TopologyConfig(placement={"pg-1": "node-2", "broker-2": "node-2"})
    status = KafkaStatus("b", "c", 1, (), (TopicState("events", (
        PartitionState("events", 0, 1, (1, 2), (1, 2), 2),
        PartitionState("events", 1, 1, (1, 2, 3), (1, 2, 3), 2)), min_isr=2),))
    topology = build_topology(config, {"postgres": pg(), "kafka": status,
                                       "kubernetes": cluster()})
    checks = {c.name: c for c in blast.node_drain(topology, "node-2", set())}
    assert checks[blast.CHECK_API].status is CheckStatus.PASS
    assert checks[blast.CHECK_PRIMARY].status is CheckStatus.FAIL
    assert "pg-1, the primary, runs on node node-2" in checks[blast.CHECK_PRIMARY].detail
    min_isr = checks[blast.CHECK_MIN_ISR]
    assert min_isr.status is CheckStatus.FAIL
    assert "events-0 (ISR [1, 2], min 2)" in min_isr.detail
    assert "the API writes events" in min_isr.detail
    standby_only = TopologyConfig(placement={"pg-2": "node-2"})
    topology = build_topology(standby_only, {"postgres": pg(), "kubernetes": cluster()})
    (_, standby) = blast.node_drain(topology, "node-2", set())
    assert standby.status is CheckStatus.WARN


def test_min_isr_loss_and_its_check():
    partitions = [part("t", 0, 1, (1, 2, 3), (1, 2, 3)),  # 3 → 2: at min
                  part("t", 1, 2, (2, 3), (2, 3)),  # 2 → 1: under (led by 2)
                  part("t", 2, 3, (3, 2), (3,)),  # 2 not in sync: untouched
                  part("t", 3, 1, (1, 2), (1, 2), None)]  # unknown
    loss = min_isr_loss(partitions, {2})
    assert [p.name for p in loss.at] == ["t-0"]
    assert [p.name for p in loss.under] == ["t-1"]
    assert [p.name for p in loss.unknown] == ["t-3"]
    check = blast.min_isr(partitions, {2}, api_topic=lambda t: False, when="once it stops")
    assert check.status is CheckStatus.FAIL and "t-1" in check.detail
    led = blast.min_isr(partitions, {2}, api_topic=lambda t: False, when="once it stops",
                        refused_elsewhere={"t-1"})
    assert led.status is CheckStatus.WARN
    assert "1 partition(s) it leads would fall under it" in led.detail


def test_an_nginx_drain_warns_where_kubernetes_disagrees():
    pods = [api_pod("api-abcde-0"), api_pod("api-abcde-1", ready=False),
            api_pod("api-abcde-2", ready=False)]
    topology = build_topology(TopologyConfig(), {"nginx": by_address(),
                                                 "kubernetes": cluster(pods)})
    (check,) = blast.member_drain(topology, "api-1")
    assert check.status is CheckStatus.WARN
    assert "takes away api-1 (pod streamforge/api-abcde-0 on node-0)" in check.detail
    assert "Kubernetes reports their pods not ready" in check.detail
    (fine,) = blast.member_drain(topology_for_drain(), "api-1")
    assert fine.status is CheckStatus.PASS and "still healthy: api-2" in fine.detail
    assert blast.member_drain(build_topology(TopologyConfig(), {}), "api-1") == []


def test_a_role_change_names_every_api_member_and_refuses_an_unreachable_primary():
    (api, primary) = blast.role_change(topology_for_drain(), "pg-2", ["pg-1"], "switchover")
    assert api.status is CheckStatus.PASS and "reconnects to pg-2" in api.detail
    assert "api-3 (pod streamforge/api-abcde-2 on node-1)" in api.detail
    assert primary.detail == "pg-2 becomes the primary; pg-1 rejoins as a standby"
    narrow = build_topology(TopologyConfig(api_databases=("pg-1",)), {"postgres": pg()})
    (refused, _) = blast.role_change(narrow, "pg-2", ["pg-1"], "failover")
    assert refused.status is CheckStatus.FAIL
    assert "does not list pg-2: after the failover no API member could write" in refused.detail


def test_layers_that_could_not_be_read_are_named():
    (check,) = blast.layers_check(["kubernetes: no status yet"])
    assert check.status is CheckStatus.WARN and "kubernetes: no status yet" in check.detail
    assert blast.layers_check([]) == []


# --------------------------------------------------------------------------- a Kafka drain


async def test_a_kafka_drain_is_refused_while_a_partition_it_follows_sits_at_min_isr(tmp_path):
    # Broker 2 follows t-0, whose ISR [1, 2] is at min.insync.replicas=2: once 2 is stopped,
    # acks=all writes to t-0 fail. It leads nothing, so the takeover check alone passes.
    cluster_ = FakeCluster([part("t", 0, 1, (1, 2), (1, 2)), part("t", 1, 3, (3, 1), (3, 1))])
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"))
    action = DrainBroker(FakeSource(cluster_), 2, tmp_path)
    result = await runner.run(action)
    assert result.outcome is Outcome.REFUSED and cluster_.writes == []
    assert "blast radius: min.insync.replicas" in (result.error or "")
    forced = await runner.run(DrainBroker(FakeSource(cluster_), 2, tmp_path), force=True)
    assert forced.outcome is Outcome.SUCCEEDED
    record = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert record["forced"] is True
    assert {"name": "blast radius: min.insync.replicas", "status": "fail"}.items() <= next(
        c for c in record["preflight"] if c["name"] == "blast radius: min.insync.replicas"
    ).items()


# --------------------------------------------------------------------------- configuration

BASE = """
[nginx]
config_file = "/etc/nginx/nginx.conf"
upstream_name = "api_backend"
upstream_file = "/etc/nginx/conf.d/upstream.conf"
[nginx.members.api-1]
address = "127.0.0.1:15401"
[postgres]
dbname = "d"
user = "u"
[postgres.members.pg-1]
host = "127.0.0.1"
"""


def test_the_topology_section_is_read():
    config = parse(BASE + """
[topology]
api_deployment = "streamforge/streamforge-api"
api_databases = ["pg-1"]
api_topics = ["streamforge.events"]
[topology.members.api-1]
pod = "streamforge-api-5d9f-abcde"
[topology.placement]
pg-1 = "kwok-node-0"
broker-2 = "kwok-node-1"
""", Path("/tmp/sfops.toml"))
    topology = config.topology
    assert isinstance(topology, TopologyConfig)
    assert topology.api_deployment == ("streamforge", "streamforge-api")
    assert topology.api_databases == ("pg-1",)
    assert topology.member_pods == {"api-1": (None, "streamforge-api-5d9f-abcde")}
    assert topology.broker_node(2) == "kwok-node-1" and topology.placement["pg-1"] == \
        "kwok-node-0"


@pytest.mark.parametrize(("section", "problem"), [
    ('api_databases = ["pg-9"]', 'topology.api_databases: "pg-9" is not a [postgres.members] '
     "name (configured: pg-1)"),
    ('api_deployment = "streamforge-api"', "topology.api_deployment: "
     '"streamforge-api": expected NAMESPACE/DEPLOYMENT'),
    ('[topology.members.api-9]\npod = "x"', "[topology.members.api-9]: not an "
     "[nginx.members] name (configured: api-1)"),
    ('[topology.members.api-1]\npod = "Bad_Pod"', "topology.members.api-1.pod: \"Bad_Pod\": "
     "expected POD or NAMESPACE/POD"),
    ('[topology.placement]\nkafka-1 = "n"', "topology.placement.kafka-1: expected a "
     "[postgres.members] name (configured: pg-1) or broker-N"),
    ("colour = 1", "topology.colour: unknown key"),
])
def test_topology_mistakes_name_the_key(section, problem):
    with pytest.raises(ConfigError) as caught:
        parse(BASE + "[topology]\n" + section + "\n", Path("/tmp/sfops.toml"))
    assert any(problem in line for line in caught.value.problems), caught.value.problems


# --------------------------------------------------------------------------- the view


class _Config:
    def __init__(self, **sections: Any) -> None:
        self.__dict__.update(sections)


async def test_the_view_uses_last_statuses_polls_only_without_and_names_failures():
    config = _Config(nginx=object(), kubernetes=object(), postgres=object(), kafka=None,
                     topology=TopologyConfig())
    polled: list[str] = []

    async def fresh(backend: str) -> Any:
        polled.append(backend)
        if backend == "postgres":
            raise RuntimeError("connection refused")
        return cluster()

    from backends.topology.view import LayerView

    last = {"nginx": by_address()}
    view = LayerView(config, last.get, fresh)
    topology, problems = await view.topology(["nginx", "kubernetes", "postgres", "kafka"])
    assert polled == ["kubernetes", "postgres"]  # nginx had a last status; kafka: no section
    assert problems == ["postgres: RuntimeError: connection refused"]
    assert topology.unit("api-1") is not None and topology.unit("api-1").pod  # type: ignore[union-attr]
    tui = LayerView(config, last.get)  # the TUI: no polling, a missing status is named
    _, problems = await tui.topology(["nginx", "kubernetes"])
    assert problems == ["kubernetes: no status yet"]
    await view.close()
