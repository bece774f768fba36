"""The Kubernetes snapshot value: deployments with their pods, nodes, budgets, warnings —
built purely from the informers' stores, and summarised for the overview."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backends.config import redact_text
from backends.kubernetes.objects import (
    BudgetInfo,
    DeploymentInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    ProbeOutcome,
    ProbeStatus,
    ReplicaSetInfo,
    Rollout,
    RolloutState,
    probe_statuses,
    rollout_status,
    utcnow,
)
from backends.service import Alert, BackendSummary, Figure, Severity
from backends.snapshot import Health

WARNINGS_SHOWN = 50


@dataclass(frozen=True, slots=True)
class PodStatus:
    info: PodInfo
    probes: tuple[ProbeStatus, ...]
    # The Ready condition, looked up once: the summary, the deployment's health and the row
    # renderer each ask, which at 5,000 pods was 20,000 scans of the conditions per snapshot.
    ready: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ready", self.info.ready)

    @property
    def probe_failure(self) -> str:
        """The first failing probe's detail ("readiness failed 3x in 2 m: HTTP 503")."""
        for probe in self.probes:
            if probe.outcome is ProbeOutcome.FAILING:
                return probe.detail or f"{probe.kind.value} failing"
        return ""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    info: DeploymentInfo
    rollout: Rollout
    current_revision: int | None
    previous_revision: int | None
    previous_images: tuple[tuple[str, str], ...]
    replicasets: tuple[ReplicaSetInfo, ...]  # newest revision first
    pods: tuple[PodStatus, ...]

    @property
    def health(self) -> Health:
        if self.rollout.state is RolloutState.FAILED or (
            self.info.desired > 0 and self.info.available == 0
        ):
            return Health.FAILED
        if self.rollout.state is not RolloutState.COMPLETE or any(
            not p.ready for p in self.pods
        ):
            return Health.DEGRADED
        return Health.OK


@dataclass(frozen=True, slots=True)
class NodeStatus:
    info: NodeInfo
    pods: int
    terminating: int

    @property
    def draining(self) -> bool:
        """Cordoned and either marked by a running sfops drain or still evicting pods."""
        return self.info.unschedulable and (
            self.info.drain_started is not None or self.terminating > 0
        )

    @property
    def health(self) -> Health:
        if self.info.ready is False:
            return Health.FAILED
        if self.info.unschedulable or self.info.ready is None:
            return Health.DEGRADED
        return Health.OK


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    host: str
    namespaces: tuple[str, ...]
    synced: bool
    syncing: tuple[str, ...]  # informers not yet listed
    deployments: tuple[DeploymentStatus, ...]
    other_pods: tuple[PodStatus, ...]  # pods of no Deployment (DaemonSets, bare pods, …)
    nodes: tuple[NodeStatus, ...]
    budgets: tuple[BudgetInfo, ...]
    warnings: tuple[EventInfo, ...]  # newest first
    watch_errors: tuple[str, ...]
    data_age_s: float  # 0 while every watch is connected; else seconds since the oldest break
    pod_count: int

    def deployment(self, namespace: str, name: str) -> DeploymentStatus | None:
        return next((d for d in self.deployments
                     if d.info.namespace == namespace and d.info.name == name), None)

    def node(self, name: str) -> NodeStatus | None:
        return next((n for n in self.nodes if n.info.name == name), None)

    def all_pods(self) -> Iterable[PodStatus]:
        for deployment in self.deployments:
            yield from deployment.pods
        yield from self.other_pods


def _revisions(replicasets: Sequence[ReplicaSetInfo], current: int | None
               ) -> tuple[int | None, tuple[tuple[str, str], ...]]:
    older = [rs for rs in replicasets if rs.revision is not None
             and (current is None or rs.revision < current)]
    if not older:
        return None, ()
    previous = max(older, key=lambda rs: rs.revision or 0)
    return previous.revision, previous.images


@dataclass(frozen=True, slots=True)
class Workloads:
    """The expensive part of a snapshot (every pod), rebuilt only when pods, ReplicaSets,
    Deployments or events changed — not on every node heartbeat."""

    deployments: tuple[DeploymentStatus, ...]
    other_pods: tuple[PodStatus, ...]
    pods_on_node: Mapping[str, int]
    terminating_on_node: Mapping[str, int]
    warnings: tuple[EventInfo, ...]
    pod_count: int


ProbeCache = dict[tuple[str, str], tuple[PodInfo, tuple[EventInfo, ...], PodStatus]]


def build_workloads(
    *,
    deployments: Iterable[DeploymentInfo],
    replicasets: Iterable[ReplicaSetInfo],
    pods: Iterable[PodInfo],
    events: Iterable[EventInfo],
    now: datetime,
    probe_cache: ProbeCache | None = None,
) -> Workloads:
    rs_by_deployment: dict[tuple[str, str], list[ReplicaSetInfo]] = defaultdict(list)
    rs_owner: dict[tuple[str, str], str] = {}
    for rs in replicasets:
        if rs.deployment:
            rs_by_deployment[(rs.namespace, rs.deployment)].append(rs)
            rs_owner[(rs.namespace, rs.name)] = rs.deployment
    pod_events: dict[tuple[str, str], list[EventInfo]] = defaultdict(list)
    warnings: list[EventInfo] = []
    for event in events:
        if event.object_kind == "Pod":
            pod_events[(event.namespace, event.object_name)].append(event)
        warnings.append(event)
    warnings.sort(key=lambda e: e.last or now, reverse=True)

    pods_by_deployment: dict[tuple[str, str], list[PodStatus]] = defaultdict(list)
    other: list[PodStatus] = []
    pods_on_node: dict[str, int] = defaultdict(int)
    terminating_on_node: dict[str, int] = defaultdict(int)
    cache: ProbeCache = probe_cache if probe_cache is not None else {}
    seen: set[tuple[str, str]] = set()
    count = 0
    for pod in pods:
        count += 1
        key = (pod.namespace, pod.name)
        seen.add(key)
        evs = tuple(pod_events.get(key, ()))
        cached = cache.get(key)
        if cached is not None and cached[0] is pod and not evs and not cached[1]:
            status = cached[2]  # same object, no probe events: nothing to recompute
        else:
            status = PodStatus(pod, probe_statuses(pod, evs, now))
            cache[key] = (pod, evs, status)
        if pod.node:
            pods_on_node[pod.node] += 1
            if pod.deleting:
                terminating_on_node[pod.node] += 1
        owner = rs_owner.get((pod.namespace, pod.owner_name)) if pod.owner_kind == "ReplicaSet" \
            else None
        if owner is not None:
            pods_by_deployment[(pod.namespace, owner)].append(status)
        else:
            other.append(status)
    if len(cache) > len(seen):
        for stale in set(cache) - seen:
            del cache[stale]

    deployment_list: list[DeploymentStatus] = []
    for d in sorted(deployments, key=lambda d: (d.namespace, d.name)):
        owned = sorted(rs_by_deployment.get((d.namespace, d.name), ()),
                       key=lambda rs: rs.revision or 0, reverse=True)
        previous, previous_images = _revisions(owned, d.revision)
        deployment_list.append(DeploymentStatus(
            info=d,
            rollout=rollout_status(d),
            current_revision=d.revision,
            previous_revision=previous,
            previous_images=previous_images,
            replicasets=tuple(owned),
            pods=tuple(sorted(pods_by_deployment.get((d.namespace, d.name), ()),
                              key=lambda p: p.info.name)),
        ))
    return Workloads(
        deployments=tuple(deployment_list),
        other_pods=tuple(sorted(other, key=lambda p: (p.info.namespace, p.info.name))),
        pods_on_node=dict(pods_on_node),
        terminating_on_node=dict(terminating_on_node),
        warnings=tuple(warnings[:WARNINGS_SHOWN]),
        pod_count=count,
    )


def build_status(
    *,
    host: str,
    namespaces: Sequence[str],
    nodes: Iterable[NodeInfo],
    budgets: Iterable[BudgetInfo],
    now: datetime,
    deployments: Iterable[DeploymentInfo] = (),
    replicasets: Iterable[ReplicaSetInfo] = (),
    pods: Iterable[PodInfo] = (),
    events: Iterable[EventInfo] = (),
    workloads: Workloads | None = None,
    syncing: Sequence[str] = (),
    watch_errors: Sequence[str] = (),
    data_age_s: float = 0.0,
    probe_cache: ProbeCache | None = None,
) -> ClusterStatus:
    if workloads is None:
        workloads = build_workloads(deployments=deployments, replicasets=replicasets, pods=pods,
                                    events=events, now=now, probe_cache=probe_cache)
    node_list = tuple(
        NodeStatus(n, workloads.pods_on_node.get(n.name, 0),
                   workloads.terminating_on_node.get(n.name, 0))
        for n in sorted(nodes, key=lambda n: n.name)
    )
    return ClusterStatus(
        host=host,
        namespaces=tuple(namespaces),
        synced=not syncing,
        syncing=tuple(syncing),
        deployments=workloads.deployments,
        other_pods=workloads.other_pods,
        nodes=node_list,
        budgets=tuple(sorted(budgets, key=lambda b: (b.namespace, b.name))),
        warnings=workloads.warnings,
        watch_errors=tuple(watch_errors),
        data_age_s=data_age_s,
        pod_count=workloads.pod_count,
    )


# --------------------------------------------------------------------------- summary

_EVENT_SEVERITY: Mapping[str, Severity] = {
    "FailedScheduling": Severity.WARNING,
    "BackOff": Severity.CRITICAL,
    "Unhealthy": Severity.WARNING,
    "FailedMount": Severity.WARNING,
    "Evicted": Severity.WARNING,
    "OOMKilling": Severity.CRITICAL,
    "NodeNotReady": Severity.CRITICAL,
}


def worst_event(events: Sequence[EventInfo]) -> EventInfo | None:
    """The most severe recent warning (then the most repeated, then the newest)."""
    if not events:
        return None
    return max(events, key=lambda e: (_EVENT_SEVERITY.get(e.reason, Severity.WARNING),
                                      e.count, e.last.timestamp() if e.last else 0.0))


# A deleted pod is on its way out (a rollout, a drain, a scale-down): not an alert while its
# grace period runs. Still there this long after it ended, it is stuck (a kubelet or node that
# does not act, a finalizer): that is one.
STUCK_TERMINATING_SECONDS = 60.0


def stuck_terminating(pod: PodInfo, now: datetime) -> float | None:
    """Seconds a deleted pod has outlived its grace period by, past the margin; else None."""
    if not pod.deleting or pod.deletion_deadline is None:
        return None
    late = (now - pod.deletion_deadline).total_seconds()
    return late if late > STUCK_TERMINATING_SECONDS else None


def summarize_status(status: ClusterStatus, title: str = "Kubernetes",
                     name: str = "kubernetes", *, now: datetime | None = None) -> BackendSummary:
    """The overview's summary of one good status (a failed refresh: backends.service)."""
    now = now or utcnow()
    healthy = sum(1 for d in status.deployments if d.health is Health.OK)
    rolling = sum(1 for d in status.deployments
                  if d.rollout.state in (RolloutState.ROLLING, RolloutState.PAUSED))
    failed = [d for d in status.deployments if d.health is Health.FAILED]
    not_ready = [p for p in status.all_pods()
                 if not p.ready and p.info.phase not in ("Succeeded", "Failed")
                 and not p.info.deleting]
    stuck = [(p, late) for p in status.all_pods()
             if (late := stuck_terminating(p.info, now)) is not None]
    cordoned = [n for n in status.nodes if n.info.unschedulable]
    not_ready_nodes = [n for n in status.nodes if n.info.ready is False]
    alerts: list[Alert] = []
    for d in status.deployments:
        if d.rollout.state is RolloutState.FAILED:
            alerts.append(Alert(name, f"rollout-failed:{d.info.key}", Severity.CRITICAL,
                                f"{d.info.key}: rollout {d.rollout.message}"))
        elif d.health is Health.FAILED:
            alerts.append(Alert(name, f"unavailable:{d.info.key}", Severity.CRITICAL,
                                f"{d.info.key}: 0/{d.info.desired} available"))
    for pod in not_ready[:5]:
        why = pod.probe_failure or pod.info.waiting_reason or pod.info.phase
        alerts.append(Alert(name, f"pod-not-ready:{pod.info.key}", Severity.WARNING,
                            f"pod {pod.info.key} not ready: {why}"))
    for pod, late in stuck[:5]:
        where = f" on node {pod.info.node}" if pod.info.node else ""
        alerts.append(Alert(name, f"pod-stuck-terminating:{pod.info.key}", Severity.WARNING,
                            f"pod {pod.info.key} still terminating{where}, "
                            f"{late:.0f} s past its grace period"))
    for node in not_ready_nodes[:5]:
        alerts.append(Alert(name, f"node-not-ready:{node.info.name}", Severity.CRITICAL,
                            f"node {node.info.name} NotReady {node.info.ready_reason}".rstrip()))
    for node in cordoned[:5]:
        state = "draining" if node.draining else "cordoned"
        alerts.append(Alert(name, f"node-cordoned:{node.info.name}", Severity.INFO,
                            f"node {node.info.name} {state}"))
    event = worst_event(status.warnings)
    if event is not None:
        alerts.append(Alert(name, f"event:{event.reason}:{event.object_kind}/{event.object_name}",
                            Severity.INFO,
                            f"{event.reason} {event.object_kind.lower()}/{event.object_name}: "
                            f"{event.message}"))
    for error in status.watch_errors[:2]:
        alerts.append(Alert(name, "watch-error", Severity.WARNING, f"watch: {error}"))

    if failed or not_ready_nodes:
        health = Health.FAILED
    elif rolling or not_ready or stuck or cordoned or status.watch_errors:
        health = Health.DEGRADED
    elif not status.synced:
        health = Health.UNKNOWN
    else:
        health = Health.OK
    total = len(status.deployments)
    figures = [
        Figure("deployments", f"{healthy}/{total} ok",
               Health.OK if healthy == total else Health.DEGRADED),
        Figure("rolling", str(rolling), Health.DEGRADED if rolling else Health.OK),
        Figure("failed", str(len(failed)), Health.FAILED if failed else Health.OK),
        Figure("pods not ready", f"{len(not_ready)}/{status.pod_count}",
               Health.DEGRADED if not_ready else Health.OK),
        Figure("nodes cordoned", f"{len(cordoned)}/{len(status.nodes)}",
               Health.DEGRADED if cordoned else Health.OK),
    ]
    if not status.synced:
        figures.append(Figure("syncing", ", ".join(status.syncing), Health.UNKNOWN))
    return BackendSummary(
        name=name, title=title, health=health, figures=tuple(figures), alerts=tuple(alerts),
        spark_label="pods not ready", spark_value=float(len(not_ready)),
    )


# --------------------------------------------------------------------------- JSON


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def pod_json(p: PodStatus) -> dict[str, Any]:
    info = p.info
    return {
        "namespace": info.namespace, "name": info.name, "phase": info.phase,
        "ready": p.ready, "ready_containers": info.ready_containers,
        "containers": info.total_containers, "restarts": info.restarts,
        "last_restart_reason": info.last_restart_reason or None,
        "waiting_reason": info.waiting_reason or None, "node": info.node or None,
        "terminating": info.deleting, "created": _time(info.created),
        "probes": [{"kind": s.kind.value, "outcome": s.outcome.value, "detail": s.detail or None}
                   for s in p.probes],
    }


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """A plain, stable JSON shape for `sfops k8s status --json` and scripts (the contract's
    status JSON). Redacted here: a ClusterStatus holds no credential (the client keeps the
    token in its headers), and a password in the server URL or an error is scrubbed."""
    return {
        "host": redact_text(status.host),
        "namespaces": list(status.namespaces),
        "synced": status.synced,
        "syncing": list(status.syncing),
        "data_age_s": round(status.data_age_s, 1),
        "watch_errors": [redact_text(e) for e in status.watch_errors],
        "deployments": [
            {
                "namespace": d.info.namespace, "name": d.info.name,
                "health": d.health.value,
                "desired": d.info.desired, "updated": d.info.updated, "ready": d.info.ready,
                "available": d.info.available, "paused": d.info.paused,
                "rollout": d.rollout.state.value, "rollout_message": d.rollout.message,
                "revision": d.current_revision, "previous_revision": d.previous_revision,
                "images": dict(d.info.images), "previous_images": dict(d.previous_images),
                "replicasets": [
                    {"name": rs.name, "revision": rs.revision, "desired": rs.desired,
                     "ready": rs.ready, "available": rs.available, "images": dict(rs.images)}
                    for rs in d.replicasets
                ],
                "pods": [pod_json(p) for p in d.pods],
            }
            for d in status.deployments
        ],
        "other_pods": [pod_json(p) for p in status.other_pods],
        "nodes": [
            {"name": n.info.name, "ready": n.info.ready, "cordoned": n.info.unschedulable,
             "draining": n.draining, "pods": n.pods, "health": n.health.value}
            for n in status.nodes
        ],
        "budgets": [
            {"namespace": b.namespace, "name": b.name, "spec": b.spec_text,
             "disruptions_allowed": b.disruptions_allowed, "current_healthy": b.current_healthy,
             "expected_pods": b.expected_pods}
            for b in status.budgets
        ],
        "warnings": [
            {"namespace": e.namespace, "reason": e.reason, "object": f"{e.object_kind}/"
             f"{e.object_name}", "message": e.message, "count": e.count, "last": _time(e.last)}
            for e in status.warnings
        ],
    }
