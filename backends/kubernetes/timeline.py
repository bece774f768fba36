"""Kubernetes on the timeline: rollouts and revisions, pod readiness flips (with the failing
probe), liveness and startup probe failures, pods that appear or go, cordons and node
readiness as facts compared between readings; warning events as events with their own time,
recorded once whoever sees them (backends.timeline.model).

A readiness failure reads on the pod's readiness flip ("ready → not ready: readiness failed
3 times in 2 m: HTTP 503"), not a second time as a probe line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backends.kubernetes.model import ClusterStatus
from backends.kubernetes.objects import TIMES, ProbeKind, ProbeOutcome, RolloutState
from backends.timeline.model import (
    CRITICAL,
    INFO,
    OK,
    WARNING,
    Change,
    Facts,
    Observation,
    appeared,
    collapse,
    diff,
    vanished,
)

SOURCE = "kubernetes"
ROLLOUT, REVISION, POD, PROBE = "rollout:", "revision:", "pod:", "probe:"
CORDON, NODE_READY = "cordon:", "node-ready:"
DONE_PHASES = ("Succeeded", "Failed")
ROLLOUT_LEVEL = {RolloutState.COMPLETE.value: OK, RolloutState.ROLLING.value: INFO,
                 RolloutState.PAUSED.value: WARNING, RolloutState.FAILED.value: CRITICAL}


def observe(status: ClusterStatus, section: Any = None) -> Observation:
    facts: dict[str, str] = {}
    notes: dict[str, str] = {}
    for d in status.deployments:
        key = d.info.key
        facts[ROLLOUT + key] = d.rollout.state.value
        notes[ROLLOUT + key] = d.rollout.message
        if d.current_revision is not None:
            facts[REVISION + key] = str(d.current_revision)
            notes[REVISION + key] = ", ".join(f"{c}={image}" for c, image in d.info.images)
    for pod in status.all_pods():
        if pod.info.phase in DONE_PHASES:
            continue
        key = pod.info.key
        facts[POD + key] = "ready" if pod.ready else "not ready"
        notes[POD + key] = pod.probe_failure or pod.info.waiting_reason or pod.info.phase
        for probe in pod.probes:
            if probe.kind is ProbeKind.READINESS:
                continue  # read on the pod's readiness flip
            facts[f"{PROBE}{key}:{probe.kind.value}"] = probe.outcome.value
            notes[f"{PROBE}{key}:{probe.kind.value}"] = probe.detail
    for node in status.nodes:
        facts[CORDON + node.info.name] = "cordoned" if node.info.unschedulable else "schedulable"
        ready = node.info.ready
        facts[NODE_READY + node.info.name] = ("unknown" if ready is None
                                              else "ready" if ready else "not ready")
        notes[NODE_READY + node.info.name] = node.info.ready_reason
    events = tuple(
        Change(SOURCE, "warning-event", f"{e.object_kind}/{e.object_name}",
               f"{e.reason} {e.object_kind.lower()}/{e.object_name}: {e.message}"
               + (f" ({TIMES}{e.count})" if e.count > 1 else ""), WARNING,
               at=_epoch(e.last or e.first),
               key=f"k8s-event:{e.namespace}/{e.name}:{e.count}",
               data={"namespace": e.namespace, "reason": e.reason, "count": e.count})
        for e in status.warnings)
    return Observation(facts, notes, events)


def changes(old: Facts, new: Observation) -> list[Change]:
    found: list[Change] = []
    for key, before, after in diff(old, new.facts, ROLLOUT):
        name = key.removeprefix(ROLLOUT)
        message = f"{name} rollout {before} → {after}"
        if note := new.notes.get(key):
            message += f": {note}"
        found.append(Change(SOURCE, "rollout", name, message, ROLLOUT_LEVEL.get(after, INFO)))
    for key, before, after in diff(old, new.facts, REVISION):
        name = key.removeprefix(REVISION)
        images = new.notes.get(key, "")
        found.append(Change(SOURCE, "revision", name,
                            f"{name} revision {before} → {after}"
                            + (f" ({images})" if images else ""), INFO,
                            data={"from": before, "to": after}))
    found += _readiness(old, new, POD, "pod", WARNING)
    found += [Change(SOURCE, "pod-appeared", k.removeprefix(POD),
                     f"pod {k.removeprefix(POD)} appeared ({new.facts[k]})", INFO)
              for k in appeared(old, new.facts, POD)]
    found += [Change(SOURCE, "pod-gone", k.removeprefix(POD), f"pod {k.removeprefix(POD)} gone",
                     INFO) for k in vanished(old, new.facts, POD)]
    for key, _, after in diff(old, new.facts, PROBE):
        if after != ProbeOutcome.FAILING.value:
            continue
        pod, _, kind = key.removeprefix(PROBE).rpartition(":")
        detail = new.notes.get(key) or f"{kind} failing"
        found.append(Change(SOURCE, "probe-failure", pod, f"pod {pod} {detail}", WARNING))
    for key, _, after in diff(old, new.facts, CORDON):
        node = key.removeprefix(CORDON)
        found.append(Change(SOURCE, "cordon", node, f"node {node} {after}",
                            WARNING if after == "cordoned" else OK))
    found += _readiness(old, new, NODE_READY, "node", CRITICAL)
    return [*collapse(found), *new.events]


def _readiness(old: Facts, new: Observation, prefix: str, what: str,
               bad: str) -> list[Change]:
    """A pod's or a node's readiness flips, with why when it is not ready."""
    found = []
    for key, before, after in diff(old, new.facts, prefix):
        name = key.removeprefix(prefix)
        why = new.notes.get(key) if after != "ready" else None
        found.append(Change(SOURCE, f"{what}-ready", name,
                            f"{what} {name} {before} → {after}" + (f": {why}" if why else ""),
                            OK if after == "ready" else bad))
    return found


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
