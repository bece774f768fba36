"""The shortcuts that keep a 5,000-pod snapshot cheap give exactly what the full computation
gives (hypothesis): the timeline's Kubernetes facts reused for unchanged pod and node objects,
the facts compared in one pass (:class:`~backends.timeline.model.Delta`), and the topology's
pods looked up by key, name and address instead of walked."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.kubernetes import timeline as k8s_timeline
from backends.kubernetes.model import ClusterStatus, ProbeCache, build_status
from backends.kubernetes.objects import (
    EventInfo,
    NodeInfo,
    PodInfo,
    deployment_from_json,
    event_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
)
from backends.nginx.accesslog import MemberTraffic
from backends.nginx.model import MemberState, NginxStatus, ProbeResult
from backends.nginx.model import MemberStatus as NginxMember
from backends.nginx.upstream import ServerEntry
from backends.timeline.model import Delta, appeared, diff, vanished
from backends.topology.config import TopologyConfig
from backends.topology.model import _by_address, _node_state, build_topology
from tests.unit.test_k8s_objects import deployment, event, node, pod, replicaset

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NAMESPACES = ("a", "b")
DEPLOYMENTS = ("api", "web")
NAMES = (*tuple(f"{d}-abcde-{i}" for d in DEPLOYMENTS for i in range(4)), "bare-0", "bare-1")
NODES = ("node-0", "node-1", "node-2")
IPS = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "")
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def _pod_base(ready: bool, probes: tuple[str, ...], phase: str) -> PodInfo:
    return pod_from_json(pod("x", ready=ready, probes=probes, phase=phase))


# A pod as one hypothesis draw: which pod, and what it looks like now.
pod_states = st.tuples(
    st.sampled_from(NAMESPACES), st.sampled_from(NAMES), st.booleans(),
    st.sampled_from(["Running", "Pending", "Succeeded"]),
    st.lists(st.sampled_from(PROBES), unique=True, max_size=3).map(tuple),
    st.sampled_from(NODES), st.sampled_from(IPS), st.sampled_from(IPS),
    st.lists(st.tuples(st.sampled_from([80, 8000]), st.sampled_from([None, 80, 8000])),
             max_size=2).map(tuple),
    st.booleans())
node_states = st.tuples(st.sampled_from(NODES), st.sampled_from([True, False]), st.booleans())


def pod_info(state: tuple[Any, ...]) -> PodInfo:
    namespace, name, ready, phase, probes, node_name, ip, host_ip, ports, deleting = state
    owner = ("", "") if name.startswith("bare") else ("ReplicaSet", name.rsplit("-", 1)[0])
    return dataclasses.replace(
        _pod_base(ready, probes, phase), namespace=namespace, name=name, uid=f"{namespace}/{name}",
        node=node_name, owner_kind=owner[0], owner_name=owner[1], ip=ip, host_ip=host_ip,
        ports=ports, deleting=deleting)


class Cluster:
    """Stores as the informers keep them: an object is replaced only when it changed, so
    unchanged pods and nodes stay the same objects from one status to the next."""

    def __init__(self) -> None:
        self.pods: dict[str, PodInfo] = {}
        self.nodes: dict[str, NodeInfo] = {n: node_from_json(node(n)) for n in NODES}
        self.events: dict[str, EventInfo] = {}
        self.probe_cache: ProbeCache = {}
        self.deployments = [deployment_from_json(deployment(d, ns, uid=f"{ns}-{d}"))
                            for ns in NAMESPACES for d in DEPLOYMENTS]
        self.replicasets = [replicaset_from_json(replicaset(
            f"{d}-abcde", 2, deployment_name=d, namespace=ns, owner_uid=f"{ns}-{d}"))
            for ns in NAMESPACES for d in DEPLOYMENTS]

    def change(self, pods: list[tuple[Any, ...]], gone: list[tuple[str, str]],
               nodes: list[tuple[str, bool, bool]], warn: list[tuple[str, str]]) -> None:
        for state in pods:
            info = pod_info(state)
            if self.pods.get(info.key) != info:
                self.pods[info.key] = info
        for namespace, name in gone:
            self.pods.pop(f"{namespace}/{name}", None)
        for name, ready, cordoned in nodes:
            info = node_from_json(node(name, ready=ready, unschedulable=cordoned))
            if self.nodes[name] != info:
                self.nodes[name] = info
        self.events = {}
        for namespace, name in warn:
            info = event_from_json(event(f"ev-{name}", name, "Readiness probe failed: 503",
                                         namespace=namespace))
            self.events[info.key] = info

    def status(self) -> ClusterStatus:
        return build_status(
            host="https://k8s", namespaces=NAMESPACES, nodes=list(self.nodes.values()),
            budgets=[], now=NOW, deployments=self.deployments, replicasets=self.replicasets,
            pods=list(self.pods.values()), events=list(self.events.values()),
            probe_cache=self.probe_cache)


steps = st.lists(st.tuples(
    st.lists(pod_states, max_size=8),
    st.lists(st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES)), max_size=2),
    st.lists(node_states, max_size=2),
    st.lists(st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES)), max_size=2),
), min_size=1, max_size=6)


@contextmanager
def nothing_reused() -> Iterator[None]:
    """The full computation: every pod's and node's entries computed afresh."""
    with mock.patch.object(k8s_timeline, "_pod_entries",
                           k8s_timeline.Reuse(k8s_timeline.pod_entries)), \
            mock.patch.object(k8s_timeline, "_node_entries",
                              k8s_timeline.Reuse(k8s_timeline.node_entries)):
        yield


@settings(max_examples=150, deadline=None)
@given(steps)
def test_timeline_facts_reused_for_unchanged_objects_equal_the_full_computation(changes):
    cluster = Cluster()
    for step in changes:
        cluster.change(*step)
        status = cluster.status()
        reused = k8s_timeline.observe(status)
        with nothing_reused():
            full = k8s_timeline.observe(status)
        # The same facts and notes in the same order (the stored JSON is the same too).
        assert list(reused.facts.items()) == list(full.facts.items())
        assert list(reused.notes.items()) == list(full.notes.items())
        assert reused.events == full.events


def test_reuse_recomputes_only_objects_it_has_not_seen():
    computed: list[str] = []
    reuse = k8s_timeline.Reuse(lambda name: (computed.append(name) or ((name, name),), ()))
    first, second, third = "first-object", "second-object", "third-object"
    reuse([first, second])
    reuse([first, second, third])
    assert computed == [first, second, third]  # first and second were not computed again
    reuse([third])
    reuse([first])
    assert computed == [first, second, third, first]  # dropped when not in the last call


facts = st.dictionaries(
    st.sampled_from([f"{prefix}{n}" for prefix in ("pod:", "probe:", "node-ready:", "health")
                     for n in ("", "a", "b", "c", "a:x")]),
    st.sampled_from(["ready", "not ready", "ok", "failed"]), max_size=12)
prefixes = st.sampled_from(["", "pod:", "probe:", "node-ready:", "health", "nothing:"])


@settings(max_examples=300, deadline=None)
@given(facts, facts, prefixes)
def test_one_pass_delta_equals_the_comparison_per_prefix(old, new, prefix):
    # The comparison as it was, sorting every fact for every prefix.
    changed = [(k, old[k], v) for k, v in sorted(new.items())
               if k.startswith(prefix) and k in old and old[k] != v]
    came = sorted(k for k in new if k.startswith(prefix) and k not in old)
    went = sorted(k for k in old if k.startswith(prefix) and k not in new)
    delta = Delta.of(old, new)
    assert delta.diff(prefix) == diff(old, new, prefix) == changed
    assert delta.appeared(prefix) == appeared(old, new, prefix) == came
    assert delta.vanished(prefix) == vanished(old, new, prefix) == went


def member(name: str, address: str) -> NginxMember:
    return NginxMember(name, address, MemberState.UP, ServerEntry(address),
                       ProbeResult(True, 200, 2.0), MemberTraffic())


members = st.lists(st.tuples(
    st.sampled_from(IPS[:3]), st.sampled_from([None, 80, 8000]),
    st.one_of(st.none(), st.tuples(st.sampled_from([None, *NAMESPACES]), st.sampled_from(NAMES))),
), max_size=4)


def walked_links(config: TopologyConfig, status: ClusterStatus,
                 nginx: NginxStatus) -> list[tuple[str, str | None]]:
    """Each member's pod as a walk over every pod finds it."""
    pods = list(status.all_pods())
    found: list[tuple[str, str | None]] = []
    for m in nginx.members:
        wanted = config.member_pods.get(m.name)
        if wanted is not None:
            match = [p for p in pods if p.info.name == wanted[1]
                     and (wanted[0] is None or p.info.namespace == wanted[0])]
        else:
            match = _by_address(m.address, pods)
        found.append((m.name, match[0].info.key if len(match) == 1 else None))
    return found


def walked_api_pods(status: ClusterStatus, linked: set[str]) -> frozenset[str]:
    keys = set()
    for d in status.deployments:
        if any(p.info.key in linked for p in d.pods):
            keys |= {p.info.key for p in d.pods}
    return frozenset(keys | linked)


@settings(max_examples=150, deadline=None)
@given(steps, members)
def test_topology_lookups_equal_walking_every_pod(changes, wanted):
    cluster = Cluster()
    for step in changes:
        cluster.change(*step)
    status = cluster.status()
    nginx = NginxStatus(0.0, "api_backend", tuple(
        member(f"api-{i}", f"{ip}:{port}" if port else ip)
        for i, (ip, port, _) in enumerate(wanted)), None, 0, 30.0)
    config = TopologyConfig(member_pods={f"api-{i}": by_name for i, (_, _, by_name)
                                         in enumerate(wanted) if by_name is not None})
    topology = build_topology(config, {"kubernetes": status, "nginx": nginx})

    links = walked_links(config, status, nginx)
    assert [(u.member, u.pod) for u in topology.units if u.member] == links
    linked = {pod_key for _, pod_key in links if pod_key}
    assert topology.api_pods == walked_api_pods(status, linked)
    every: Mapping[str, Any] = {p.info.key: p for p in status.all_pods()}
    assert dict(topology.pods) == every and len(topology.pods) == len(every)
    assert all(topology.pods.get(key) is value for key, value in every.items())
    assert topology.pods.get("a/no-such-pod") is None
    assert dict(topology.nodes) == {n.info.name: _node_state(n) for n in status.nodes}
    assert topology.nodes.get("no-such-node") is None
