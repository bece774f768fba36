"""The cross-layer view, built purely from the backends' latest statuses and ``[topology]``.

Links and how each is known:

- an nginx member ↔ the API pod behind it: ``[topology.members.NAME] pod`` when configured,
  else by address (the member's ``host:port`` is a pod's IP and container port, or its node's
  IP and a hostPort); without a pod the member is a worker of its own (the lab's);
- the API ↔ PostgreSQL: its readiness needs the primary (``/health/ready`` pings it through
  ``target_session_attrs=read-write``) among the members its connection string lists
  (``api_databases``, default every configured member);
- pods, PostgreSQL members and Kafka brokers ↔ Kubernetes nodes: a pod's ``spec.nodeName``;
  ``[topology.placement]`` for the others.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backends.kubernetes.model import ClusterStatus, NodeStatus, PodStatus
from backends.topology.config import TopologyConfig

if TYPE_CHECKING:
    from backends.kafka.model import KafkaStatus
    from backends.nginx.model import MemberStatus as NginxMember
    from backends.nginx.model import NginxStatus
    from backends.postgres.model import PostgresStatus

MAX_NAMED = 5


def named(names: Sequence[str], limit: int = MAX_NAMED) -> str:
    """"a, b, c and 2 more" (or "none")."""
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return (shown + (f" and {more} more" if more > 0 else "")) or "none"


@dataclass(frozen=True)
class ApiUnit:
    """One API replica as the layers see it: the nginx member that sends it traffic and the
    pod that runs it (either may be unknown)."""

    member: str | None  # nginx member name (None: a pod no member is linked to)
    address: str | None = None
    member_state: str | None = None  # backends.nginx.model.MemberState value
    member_healthy: bool | None = None  # up and answering its probe (None: no nginx status)
    probe: str = ""  # a failing probe, described ("HTTP 503 (database unavailable)")
    probe_answered: bool = False  # the failing probe got an HTTP answer (the process runs)
    pod: str | None = None  # "namespace/name"
    pod_ready: bool | None = None
    pod_why: str = ""  # why the pod is not ready (probe, waiting reason, phase)
    node: str | None = None
    link: str = ""  # how member ↔ pod is known: "address …", "[topology.members.api-1]"

    @property
    def name(self) -> str:
        return self.member or self.pod or "?"

    @property
    def healthy(self) -> bool:
        """Serving as far as every layer that knows it can tell."""
        return self.member_healthy is not False and self.pod_ready is not False

    def describe(self) -> str:
        """"api-1 (pod streamforge/api-x on kwok-node-0)" / "pod streamforge/api-y"."""
        where = f" on {self.node}" if self.node else ""
        if self.member and self.pod:
            return f"{self.member} (pod {self.pod}{where})"
        if self.pod:
            return f"pod {self.pod}{where}"
        return self.member or "?"


@dataclass(frozen=True)
class Database:
    """The PostgreSQL the API needs, as the last status shows it."""

    members: tuple[str, ...]  # the members the API's connection string lists
    writable: bool  # exactly one primary among them
    primary: str | None = None
    problem: str = ""  # why not writable: "read-only: pg-2 is a standby, pg-1 unreachable"
    last_primary: str | None = None  # the member sfops last saw as the primary
    unreachable: tuple[str, ...] = ()
    fenced: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeState:
    name: str
    ready: bool | None
    cordoned: bool
    draining: bool

    @property
    def trouble(self) -> str:
        """"NotReady", "draining", "cordoned" or "" when fine."""
        if self.ready is False:
            return "NotReady"
        return "draining" if self.draining else "cordoned" if self.cordoned else ""


@dataclass(frozen=True)
class Topology:
    config: TopologyConfig = field(default_factory=TopologyConfig)
    units: tuple[ApiUnit, ...] = ()
    pods: Mapping[str, PodStatus] = field(default_factory=dict)  # every pod, by "ns/name"
    api_pods: frozenset[str] = frozenset()
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    database: Database | None = None  # None: PostgreSQL not configured or not read
    postgres_configured: bool = False
    kafka: KafkaStatus | None = None
    # pg actions running now ("pg.failover pg-2"), from the audit log.
    running: tuple[str, ...] = ()
    # What the mapping names but the data does not have (a pod replaced by a rollout).
    problems: tuple[str, ...] = ()
    known: frozenset[str] = frozenset()  # backends whose status this was built from

    def unit(self, member: str) -> ApiUnit | None:
        return next((u for u in self.units if u.member == member), None)

    def unit_of_pod(self, pod: str) -> ApiUnit | None:
        return next((u for u in self.units if u.pod == pod), None)

    def placed_on(self, node: str) -> list[str]:
        """``[topology.placement]`` keys on ``node`` ("pg-1", "broker-2")."""
        return sorted(k for k, v in self.config.placement.items() if v == node)

    def api_topic(self, topic: str) -> bool:
        topics = self.config.api_topics
        if topics is not None:
            return topic in topics
        if self.kafka is not None:
            return any(t.name == topic and not t.internal for t in self.kafka.topics)
        return not topic.startswith("__")


def _split_address(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, None
    host = host.strip("[]")
    return host, int(port) if port.isdigit() else None


def _by_address(address: str, pods: Iterable[PodStatus]) -> list[PodStatus]:
    """Pods reached at ``address``: the pod's IP and one of its container ports (any port
    when it declares none), or its node's IP and one of its hostPorts."""
    host, port = _split_address(address)
    found: list[PodStatus] = []
    for pod in pods:
        info = pod.info
        if pod.info.deleting and not pod.ready:
            continue
        if info.ip and info.ip == host and (
                port is None or not info.ports or any(c == port for c, _ in info.ports)):
            found.append(pod)
        elif info.host_ip and info.host_ip == host and port is not None and any(
                h == port for _, h in info.ports):
            found.append(pod)
    return found


def _pod_why(pod: PodStatus) -> str:
    return pod.probe_failure or pod.info.waiting_reason or (
        "terminating" if pod.info.deleting else pod.info.phase)


def _link_pods(config: TopologyConfig, members: Sequence[NginxMember],
               cluster: ClusterStatus | None
               ) -> tuple[dict[str, tuple[PodStatus | None, str]], list[str]]:
    """nginx member → (its pod or None, how the link is known); the mapping's problems."""
    links: dict[str, tuple[PodStatus | None, str]] = {}
    problems: list[str] = []
    default_ns = config.api_deployment[0] if config.api_deployment else None
    for member in members:
        wanted = config.member_pods.get(member.name)
        if wanted is not None:
            namespace, name = wanted[0] or default_ns, wanted[1]
            key = f"[topology.members.{member.name}] pod"
            match = [p for p in (cluster.pods_named(name) if cluster is not None else ())
                     if namespace is None or p.info.namespace == namespace]
            if cluster is not None and not match:
                problems.append(f"{key}: no pod {namespace + '/' if namespace else ''}{name} "
                                "(replaced by a rollout?)")
            links[member.name] = (match[0] if len(match) == 1 else None, key)
            continue
        host, _ = _split_address(member.address)
        found = _by_address(member.address, cluster.pods_at(host)) if cluster is not None \
            else []
        if len(found) == 1:
            links[member.name] = (found[0], f"address {member.address}")
        else:
            links[member.name] = (None, "")
    return links, problems


def _api_pods(config: TopologyConfig, cluster: ClusterStatus | None,
              linked: Iterable[PodStatus]) -> list[PodStatus]:
    """The API's pods: its configured Deployment's, else those of the Deployments whose pods
    serve nginx members."""
    if cluster is None:
        return []
    if config.api_deployment is not None:
        deployment = cluster.deployment(*config.api_deployment)
        return list(deployment.pods) if deployment is not None else []
    linked = list(linked)
    owners = {id(d) for p in linked if (d := cluster.deployment_of(p.info.key)) is not None}
    pods: list[PodStatus] = []
    for deployment in cluster.deployments:
        if id(deployment) in owners:
            pods.extend(deployment.pods)
    known = {p.info.key for p in pods}
    pods += [p for p in linked if p.info.key not in known]
    return pods


def _unit(member: NginxMember | None, pod: PodStatus | None, link: str) -> ApiUnit:
    probe = member.probe if member is not None else None
    failing = probe is not None and not probe.ok
    return ApiUnit(
        member=member.name if member is not None else None,
        address=member.address if member is not None else None,
        member_state=member.state.value if member is not None else None,
        member_healthy=member.healthy if member is not None else None,
        probe=probe.describe() if failing and probe is not None else "",
        probe_answered=failing and probe is not None and probe.status_code is not None,
        pod=pod.info.key if pod is not None else None,
        pod_ready=pod.ready if pod is not None else None,
        pod_why="" if pod is None or pod.ready else _pod_why(pod),
        node=(pod.info.node or None) if pod is not None else None,
        link=link,
    )


def database_of(status: PostgresStatus, config: TopologyConfig) -> Database:
    """Whether the API can write: exactly one primary among the members it lists."""
    names = config.api_databases or tuple(m.name for m in status.members)
    members = [m for m in status.members if m.name in names]
    primaries = [m.name for m in members if m.is_primary]
    unreachable = tuple(m.name for m in members if not m.reachable)
    fenced = tuple(m.name for m in members if m.fenced)
    last = status.last_primary_lsn.member if status.last_primary_lsn is not None else None
    writable = len(primaries) == 1
    problem = ""
    if len(primaries) > 1:
        problem = f"split brain: {' and '.join(primaries)} both accept writes"
    elif not primaries:
        outside = [m.name for m in status.primaries if m.name not in names]
        standbys = [m.name for m in members if m.is_standby]
        parts = [f"{n} is a standby" for n in standbys]
        parts += [f"{n} unreachable" for n in unreachable]
        parts += [f"{n} fenced" for n in fenced if n not in unreachable]
        if outside:
            problem = (f"read-only for the API: the primary {', '.join(outside)} is not in "
                       f"[topology] api_databases ({', '.join(names)})")
        elif standbys:
            problem = "read-only: " + ", ".join(parts)
        else:
            problem = "unreachable: " + (", ".join(parts) or "no member")
    return Database(tuple(names), writable, primaries[0] if writable else None, problem,
                    last, unreachable, fenced)


def _loaded(value: Any, backend: str, type_name: str) -> Any:
    """``value`` if it is the backend's status type, else None. The type is looked up where
    its module is already loaded, not imported: a status of it can only exist then, and a
    start-up that polls none of nginx, PostgreSQL and Kafka saves their models' imports."""
    module = sys.modules.get(f"backends.{backend}.model")
    status_type = getattr(module, type_name, None)
    return value if status_type is not None and isinstance(value, status_type) else None


def build_topology(config: TopologyConfig, statuses: Mapping[str, Any], *,
                   running: Sequence[str] = (), postgres_configured: bool | None = None,
                   ) -> Topology:
    """The cross-layer view of the latest statuses (backend name → status value; a backend
    without one is simply not known). Pure."""
    nginx: NginxStatus | None = _loaded(statuses.get("nginx"), "nginx", "NginxStatus")
    cluster = statuses.get("kubernetes")
    cluster = cluster if isinstance(cluster, ClusterStatus) else None
    postgres: PostgresStatus | None = _loaded(statuses.get("postgres"), "postgres",
                                              "PostgresStatus")
    kafka: KafkaStatus | None = _loaded(statuses.get("kafka"), "kafka", "KafkaStatus")
    members = nginx.members if nginx is not None else ()
    links, problems = _link_pods(config, members, cluster)
    linked = [pod for pod, _ in links.values() if pod is not None]
    api_pods = _api_pods(config, cluster, linked)
    units = [_unit(m, *links[m.name]) for m in members]
    covered = {u.pod for u in units if u.pod}
    units += [_unit(None, pod, "") for pod in api_pods if pod.info.key not in covered]
    return Topology(
        config=config,
        units=tuple(units),
        pods=Pods(cluster) if cluster is not None else {},
        api_pods=frozenset(p.info.key for p in api_pods),
        nodes=Nodes(cluster) if cluster is not None else {},
        database=database_of(postgres, config) if postgres is not None else None,
        postgres_configured=(postgres is not None if postgres_configured is None
                             else postgres_configured),
        kafka=kafka,
        running=tuple(running),
        problems=tuple(problems),
        known=frozenset(name for name, value in statuses.items() if value is not None),
    )


def _node_state(node: NodeStatus) -> NodeState:
    return NodeState(node.info.name, node.info.ready, node.info.unschedulable, node.draining)


class Pods(Mapping[str, PodStatus]):
    """Every pod of the cluster by "namespace/name", indexed on the first lookup (once per
    cluster status): most refreshes of "What is wrong now" ask for none of 5,000 pods."""

    def __init__(self, cluster: ClusterStatus) -> None:
        self._cluster = cluster

    def __getitem__(self, key: str) -> PodStatus:
        return self._cluster.pods_by_key()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cluster.pods_by_key())

    def __len__(self) -> int:
        return len(self._cluster.pods_by_key())


class Nodes(Mapping[str, NodeState]):
    """The cluster's nodes by name, each made into a :class:`NodeState` when asked for:
    the causes and the blast radius ask for one or two nodes of 500."""

    def __init__(self, cluster: ClusterStatus) -> None:
        self._cluster = cluster

    def __getitem__(self, name: str) -> NodeState:
        node = self._cluster.node(name)
        if node is None:
            raise KeyError(name)
        return _node_state(node)

    def __iter__(self) -> Iterator[str]:
        return iter({n.info.name: None for n in self._cluster.nodes})

    def __len__(self) -> int:
        return len({n.info.name for n in self._cluster.nodes})
