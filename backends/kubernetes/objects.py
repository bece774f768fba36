"""Immutable views of the Kubernetes objects sfops shows, converted once from the API's JSON
when an object arrives (LIST or watch event), and the pure logic on them: rollout state as
``kubectl rollout status`` computes it, probe outcomes, label selectors."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
DRAIN_ANNOTATION = "sfops.streamforge.io/drain-started"
POD_TEMPLATE_HASH = "pod-template-hash"
TIMES = "\u00d7"  # multiplication sign: "3x in 2 m"

Labels = tuple[tuple[str, str], ...]


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _revision(meta: Mapping[str, Any]) -> int | None:
    value = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
    return _int(value) if value is not None else None


def _labels(meta: Mapping[str, Any]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items()))


def _controller(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("kind", "")), str(ref.get("name", ""))
    return None


def _images(template: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    spec = template.get("spec") or {}
    return tuple((str(c.get("name", "")), str(c.get("image", "")))
                 for c in spec.get("containers") or ())


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True" / "False" / "Unknown"
    reason: str = ""
    message: str = ""
    last_transition: datetime | None = None


def _conditions(status: Mapping[str, Any]) -> tuple[Condition, ...]:
    return tuple(
        Condition(str(c.get("type", "")), str(c.get("status", "Unknown")),
                  str(c.get("reason") or ""), str(c.get("message") or ""),
                  parse_time(c.get("lastTransitionTime")))
        for c in status.get("conditions") or ()
    )


def condition(conditions: Iterable[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector (matchLabels + matchExpressions). An empty selector matches all."""

    match_labels: Labels = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    empty_matches_nothing: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Selector:
        if data is None:
            return cls(empty_matches_nothing=True)
        labels = tuple(sorted((str(k), str(v))
                              for k, v in (data.get("matchLabels") or {}).items()))
        expressions = tuple(
            (str(e.get("key", "")), str(e.get("operator", "")),
             tuple(str(v) for v in e.get("values") or ()))
            for e in data.get("matchExpressions") or ()
        )
        return cls(labels, expressions)

    def matches(self, labels: Labels | Mapping[str, str]) -> bool:
        have = dict(labels)
        if not self.match_labels and not self.expressions:
            return not self.empty_matches_nothing
        if any(have.get(k) != v for k, v in self.match_labels):
            return False
        for key, operator, values in self.expressions:
            if operator == "In" and have.get(key) not in values:
                return False
            if operator == "NotIn" and key in have and have[key] in values:
                return False
            if operator == "Exists" and key not in have:
                return False
            if operator == "DoesNotExist" and key in have:
                return False
        return True


# --------------------------------------------------------------------------- deployments


class RolloutState(enum.StrEnum):
    COMPLETE = "complete"
    ROLLING = "rolling"
    FAILED = "failed"  # ProgressDeadlineExceeded
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class Rollout:
    state: RolloutState
    message: str

    @property
    def done(self) -> bool:
        return self.state is RolloutState.COMPLETE


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    namespace: str
    name: str
    uid: str
    generation: int
    observed_generation: int
    desired: int  # spec.replicas
    replicas: int  # status.replicas (all ReplicaSets)
    updated: int
    ready: int
    available: int
    paused: bool
    progress_deadline_s: int
    revision: int | None
    images: tuple[tuple[str, str], ...]  # (container, image)
    conditions: tuple[Condition, ...]
    selector: Selector
    created: datetime | None
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def deployment_from_json(obj: Mapping[str, Any]) -> DeploymentInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return DeploymentInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        desired=_int(spec.get("replicas"), 1),
        replicas=_int(status.get("replicas")),
        updated=_int(status.get("updatedReplicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        paused=bool(spec.get("paused")),
        progress_deadline_s=_int(spec.get("progressDeadlineSeconds"), 600),
        revision=_revision(meta),
        images=_images(spec.get("template") or {}),
        conditions=_conditions(status),
        selector=Selector.from_json(spec.get("selector")),
        created=parse_time(meta.get("creationTimestamp")),
        resource_version=str(meta.get("resourceVersion", "")),
    )


def rollout_status(d: DeploymentInfo) -> Rollout:
    """The verdict of ``kubectl rollout status`` (DeploymentStatusViewer), plus "paused"."""
    if d.generation > d.observed_generation:
        return Rollout(RolloutState.ROLLING,
                       "waiting for the deployment spec update to be observed")
    progressing = condition(d.conditions, "Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return Rollout(RolloutState.FAILED,
                       f"exceeded its progress deadline ({d.progress_deadline_s} s)")
    if d.paused:
        return Rollout(RolloutState.PAUSED, "rollout paused")
    if d.updated < d.desired:
        return Rollout(RolloutState.ROLLING,
                       f"{d.updated} of {d.desired} new replicas updated")
    if d.replicas > d.updated:
        return Rollout(RolloutState.ROLLING,
                       f"{d.replicas - d.updated} old replicas pending termination")
    if d.available < d.updated:
        return Rollout(RolloutState.ROLLING,
                       f"{d.available} of {d.updated} updated replicas available")
    return Rollout(RolloutState.COMPLETE, "successfully rolled out")


@dataclass(frozen=True, slots=True)
class ReplicaSetInfo:
    namespace: str
    name: str
    uid: str
    deployment: str | None  # controlling Deployment's name
    revision: int | None
    desired: int
    replicas: int
    ready: int
    available: int
    images: tuple[tuple[str, str], ...]
    created: datetime | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def replicaset_from_json(obj: Mapping[str, Any]) -> ReplicaSetInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    owner = _controller(meta)
    return ReplicaSetInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        deployment=owner[1] if owner and owner[0] == "Deployment" else None,
        revision=_revision(meta),
        desired=_int(spec.get("replicas"), 1),
        replicas=_int(status.get("replicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        images=_images(spec.get("template") or {}),
        created=parse_time(meta.get("creationTimestamp")),
    )


# --------------------------------------------------------------------------- pods


class ProbeKind(enum.StrEnum):
    STARTUP = "startup"
    LIVENESS = "liveness"
    READINESS = "readiness"


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    phase: str
    node: str
    owner_kind: str  # controller kind: ReplicaSet, DaemonSet, StatefulSet, Job, "" (bare pod)
    owner_name: str
    ready_containers: int
    total_containers: int
    restarts: int
    last_restart_reason: str  # e.g. "OOMKilled", "Error" (lastState.terminated.reason)
    waiting_reason: str  # e.g. "CrashLoopBackOff", "ImagePullBackOff"
    probes: frozenset[ProbeKind]
    started: bool  # every container's startup probe passed (containerStatuses[].started)
    conditions: tuple[Condition, ...]
    labels: Labels
    mirror: bool
    deleting: bool
    created: datetime | None
    # Where it is reached (backends.topology links an nginx member to it by address): the
    # pod's IP, its node's IP, and each container port with its hostPort (None: none).
    ip: str = ""
    host_ip: str = ""
    ports: tuple[tuple[int, int | None], ...] = ()
    # metadata.deletionTimestamp: when a deleted pod's grace period ends (None: not deleted).
    deletion_deadline: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ready(self) -> bool:
        c = condition(self.conditions, "Ready")
        return c is not None and c.status == "True"


def pod_from_json(obj: Mapping[str, Any]) -> PodInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("containers") or ()
    probes: set[ProbeKind] = set()
    for c in containers:
        for field_name, kind in (("startupProbe", ProbeKind.STARTUP),
                                 ("livenessProbe", ProbeKind.LIVENESS),
                                 ("readinessProbe", ProbeKind.READINESS)):
            if c.get(field_name):
                probes.add(kind)
    statuses = status.get("containerStatuses") or ()
    restarts, last_reason, waiting = 0, "", ""
    latest: datetime | None = None
    for cs in statuses:
        restarts += _int(cs.get("restartCount"))
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        finished = parse_time(terminated.get("finishedAt"))
        if terminated and (latest is None or (finished is not None and finished > latest)):
            latest, last_reason = finished, str(terminated.get("reason") or "")
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason:
            waiting = str(reason)
    owner = _controller(meta) or ("", "")
    annotations = meta.get("annotations") or {}
    return PodInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        phase=str(status.get("phase") or "Pending"),
        node=str(spec.get("nodeName") or ""),
        owner_kind=owner[0],
        owner_name=owner[1],
        ready_containers=sum(1 for cs in statuses if cs.get("ready")),
        total_containers=len(containers),
        restarts=restarts,
        last_restart_reason=last_reason,
        waiting_reason=waiting,
        probes=frozenset(probes),
        started=bool(statuses) and all(cs.get("started", True) for cs in statuses),
        conditions=_conditions(status),
        labels=_labels(meta),
        mirror=MIRROR_ANNOTATION in annotations,
        deleting=meta.get("deletionTimestamp") is not None,
        created=parse_time(meta.get("creationTimestamp")),
        ip=str(status.get("podIP") or ""),
        host_ip=str(status.get("hostIP") or ""),
        ports=_ports(containers),
        deletion_deadline=parse_time(meta.get("deletionTimestamp")),
    )


def _ports(containers: Iterable[Mapping[str, Any]]) -> tuple[tuple[int, int | None], ...]:
    found: list[tuple[int, int | None]] = []
    for container in containers:
        for port in container.get("ports") or ():
            number = _int(port.get("containerPort"), -1)
            host = _int(port.get("hostPort"), -1)
            if number > 0:
                found.append((number, host if host > 0 else None))
    return tuple(found)


# --------------------------------------------------------------------------- nodes, budgets


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    ready: bool | None  # None: no Ready condition reported yet
    ready_reason: str
    unschedulable: bool
    drain_started: datetime | None  # our annotation: a drain is in progress
    created: datetime | None
    kubelet_version: str = ""

    @property
    def key(self) -> str:
        return self.name


def node_from_json(obj: Mapping[str, Any]) -> NodeInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = condition(_conditions(status), "Ready")
    return NodeInfo(
        name=str(meta.get("name", "")),
        ready=None if ready is None else ready.status == "True",
        ready_reason="" if ready is None else ready.reason,
        unschedulable=bool(spec.get("unschedulable")),
        drain_started=parse_time((meta.get("annotations") or {}).get(DRAIN_ANNOTATION)),
        created=parse_time(meta.get("creationTimestamp")),
        kubelet_version=str((status.get("nodeInfo") or {}).get("kubeletVersion") or ""),
    )


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    namespace: str
    name: str
    selector: Selector
    disruptions_allowed: int
    current_healthy: int
    desired_healthy: int
    expected_pods: int
    spec_text: str  # "maxUnavailable 1" / "minAvailable 2"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def covers(self, pod: PodInfo) -> bool:
        return pod.namespace == self.namespace and self.selector.matches(pod.labels)


def budget_from_json(obj: Mapping[str, Any]) -> BudgetInfo:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if "maxUnavailable" in spec:
        text = f"maxUnavailable {spec['maxUnavailable']}"
    elif "minAvailable" in spec:
        text = f"minAvailable {spec['minAvailable']}"
    else:
        text = ""
    return BudgetInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        selector=Selector.from_json(spec.get("selector")),
        disruptions_allowed=_int(status.get("disruptionsAllowed")),
        current_healthy=_int(status.get("currentHealthy")),
        desired_healthy=_int(status.get("desiredHealthy")),
        expected_pods=_int(status.get("expectedPods")),
        spec_text=text,
    )


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class EventInfo:
    namespace: str
    name: str
    type: str
    reason: str
    message: str
    object_kind: str
    object_name: str
    count: int
    first: datetime | None
    last: datetime | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def event_from_json(obj: Mapping[str, Any]) -> EventInfo:
    meta = obj.get("metadata") or {}
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    series = obj.get("series") or {}
    last = (parse_time(series.get("lastObservedTime")) or parse_time(obj.get("lastTimestamp"))
            or parse_time(obj.get("eventTime")) or parse_time(meta.get("creationTimestamp")))
    first = parse_time(obj.get("firstTimestamp")) or parse_time(obj.get("eventTime")) or last
    return EventInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        type=str(obj.get("type") or ""),
        reason=str(obj.get("reason") or ""),
        message=str(obj.get("message") or obj.get("note") or ""),
        object_kind=str(involved.get("kind") or ""),
        object_name=str(involved.get("name") or ""),
        count=max(1, _int(series.get("count")) or _int(obj.get("count"), 1)),
        first=first,
        last=last,
    )


# --------------------------------------------------------------------------- probe outcomes


class ProbeOutcome(enum.StrEnum):
    PASSING = "passing"
    FAILING = "failing"
    PENDING = "pending"  # not yet run / not yet started
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    kind: ProbeKind
    outcome: ProbeOutcome
    detail: str = ""  # "readiness failed 3x in 2 m: HTTP 503" (with a multiplication sign)


_PROBE_MESSAGE = re.compile(r"^(Startup|Liveness|Readiness) probe (?:failed|errored)[:]?\s*(.*)$",
                            re.IGNORECASE | re.DOTALL)
_STATUS_CODE = re.compile(r"status ?code:? ?(\d{3})", re.IGNORECASE)


def probe_failure_cause(message: str) -> str:
    """A short cause from a kubelet probe message: "HTTP 503", "connection refused",
    "timeout", else the message's first 60 characters."""
    match = _STATUS_CODE.search(message)
    if match:
        return f"HTTP {match[1]}"
    lowered = message.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "deadline exceeded" in lowered or "timeout" in lowered or "timed out" in lowered:
        return "timeout"
    if "exit code" in lowered or "command" in lowered:
        return message.strip()[:60]
    return message.strip()[:60]


def _duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} m"
    return f"{round(seconds / 3600)} h"


def probe_statuses(pod: PodInfo, events: Sequence[EventInfo], now: datetime,
                   window_s: float = 600.0) -> tuple[ProbeStatus, ...]:
    """Each configured probe's latest outcome: readiness from the Ready/ContainersReady
    conditions, startup from the containers' ``started``, liveness from restarts; any probe
    with ``Unhealthy`` events in the last ``window_s`` seconds says how often and why."""
    failures: dict[ProbeKind, list[EventInfo]] = {}
    for event in events:
        if event.reason != "Unhealthy" or event.last is None:
            continue
        if (now - event.last).total_seconds() > window_s:
            continue
        match = _PROBE_MESSAGE.match(event.message)
        if match is None:
            continue
        failures.setdefault(ProbeKind(match[1].lower()), []).append(event)
    containers_ready = condition(pod.conditions, "ContainersReady")
    ready = condition(pod.conditions, "Ready")
    results: list[ProbeStatus] = []
    for kind in (ProbeKind.STARTUP, ProbeKind.LIVENESS, ProbeKind.READINESS):
        if kind not in pod.probes:
            continue
        recent = failures.get(kind, [])
        detail = _failure_detail(kind, recent, now)
        if pod.phase != "Running":
            outcome = ProbeOutcome.PENDING
        elif kind is ProbeKind.READINESS:
            gate = containers_ready or ready
            if gate is None:
                outcome = ProbeOutcome.UNKNOWN
            elif gate.status == "True":
                outcome = ProbeOutcome.PASSING
            else:
                outcome = ProbeOutcome.FAILING if pod.started else ProbeOutcome.PENDING
                if not detail and gate.message:
                    detail = f"{kind.value}: {probe_failure_cause(gate.message)}"
        elif kind is ProbeKind.STARTUP:
            outcome = ProbeOutcome.PASSING if pod.started else ProbeOutcome.PENDING
            if recent and not pod.started:
                outcome = ProbeOutcome.FAILING
        else:  # liveness: failing when it failed recently (the kubelet restarts on it)
            outcome = ProbeOutcome.FAILING if recent else ProbeOutcome.PASSING
        results.append(ProbeStatus(kind, outcome, detail))
    return tuple(results)


def _failure_detail(kind: ProbeKind, events: Sequence[EventInfo], now: datetime) -> str:
    if not events:
        return ""
    count = sum(e.count for e in events)
    first = min((e.first or e.last or now) for e in events)
    latest = max(events, key=lambda e: e.last or now)
    span = (now - first).total_seconds()
    match = _PROBE_MESSAGE.match(latest.message)
    cause = probe_failure_cause(match[2] if match else latest.message)
    return f"{kind.value} failed {count}{TIMES} in {_duration_text(span)}: {cause}"


def utcnow() -> datetime:
    return datetime.now(UTC)
