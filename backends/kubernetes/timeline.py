"""Kubernetes on the timeline: rollouts and revisions, pod readiness flips (with the failing
probe), liveness and startup probe failures, pods that appear or go, cordons and node
readiness as facts compared between readings; warning events as events with their own time,
recorded once whoever sees them (backends.timeline.model).

A readiness failure reads on the pod's readiness flip ("ready → not ready: readiness failed
3 times in 2 m: HTTP 503"), not a second time as a probe line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import chain
from typing import Any, Generic, TypeVar

from backends.kubernetes.model import ClusterStatus, PodStatus
from backends.kubernetes.objects import TIMES, NodeInfo, ProbeKind, ProbeOutcome, RolloutState
from backends.timeline.model import (
    CRITICAL,
    INFO,
    OK,
    WARNING,
    Change,
    Delta,
    Facts,
    Observation,
    collapse,
)

SOURCE = "kubernetes"
ROLLOUT, REVISION, POD, PROBE = "rollout:", "revision:", "pod:", "probe:"
CORDON, NODE_READY = "cordon:", "node-ready:"
DONE_PHASES = ("Succeeded", "Failed")
ROLLOUT_LEVEL = {RolloutState.COMPLETE.value: OK, RolloutState.ROLLING.value: INFO,
                 RolloutState.PAUSED.value: WARNING, RolloutState.FAILED.value: CRITICAL}


Entries = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]  # facts, notes
K = TypeVar("K")


class Reuse(Generic[K]):
    """Each object's entries, computed again only for objects not in the previous status.

    Why: the informers keep an unchanged pod's status object from one snapshot to the next
    (backends.kubernetes.model.build_workloads reuses it), so at 5,000 pods a reading that
    changed a few pods recomputes a few pods' facts, not 11,000 f-strings. Entries are a pure
    function of an immutable object, so reusing them by identity gives exactly the full
    computation (tests/unit/test_timeline_incremental.py). Entries are keyed by ``id`` with
    the object held, so an id cannot be reused while its entry is kept; only the objects of
    the latest call are kept. A lock: the timeline writers of two environments may call at
    once."""

    def __init__(self, compute: Callable[[K], Entries]) -> None:
        self._compute = compute
        self._entries: dict[int, tuple[K, Entries]] = {}
        self._lock = threading.Lock()

    def __call__(self, objects: Iterable[K]) -> list[Entries]:
        with self._lock:
            previous, kept = self._entries, {}
            found = []
            for obj in objects:
                hit = previous.get(id(obj))
                if hit is None or hit[0] is not obj:
                    hit = (obj, self._compute(obj))
                kept[id(obj)] = hit
                found.append(hit[1])
            self._entries = kept
        return found


def pod_entries(pod: PodStatus) -> Entries:
    if pod.info.phase in DONE_PHASES:
        return (), ()
    key = pod.info.key
    facts = [(POD + key, "ready" if pod.ready else "not ready")]
    notes = [(POD + key, pod.probe_failure or pod.info.waiting_reason or pod.info.phase)]
    for probe in pod.probes:
        if probe.kind is ProbeKind.READINESS:
            continue  # read on the pod's readiness flip
        facts.append((f"{PROBE}{key}:{probe.kind.value}", probe.outcome.value))
        notes.append((f"{PROBE}{key}:{probe.kind.value}", probe.detail))
    return tuple(facts), tuple(notes)


def node_entries(node: NodeInfo) -> Entries:
    ready = node.ready
    return ((CORDON + node.name, "cordoned" if node.unschedulable else "schedulable"),
            (NODE_READY + node.name, "unknown" if ready is None
             else "ready" if ready else "not ready")), \
        ((NODE_READY + node.name, node.ready_reason),)


_pod_entries = Reuse(pod_entries)
_node_entries = Reuse(node_entries)


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
    entries = [*_pod_entries(status.all_pods()), *_node_entries(n.info for n in status.nodes)]
    facts.update(chain.from_iterable(fact for fact, _ in entries))
    notes.update(chain.from_iterable(note for _, note in entries))
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
    delta = Delta.of(old, new.facts)  # one pass over the facts, not one per kind of change
    found: list[Change] = []
    for key, before, after in delta.diff(ROLLOUT):
        name = key.removeprefix(ROLLOUT)
        message = f"{name} rollout {before} → {after}"
        if note := new.notes.get(key):
            message += f": {note}"
        found.append(Change(SOURCE, "rollout", name, message, ROLLOUT_LEVEL.get(after, INFO)))
    for key, before, after in delta.diff(REVISION):
        name = key.removeprefix(REVISION)
        images = new.notes.get(key, "")
        found.append(Change(SOURCE, "revision", name,
                            f"{name} revision {before} → {after}"
                            + (f" ({images})" if images else ""), INFO,
                            data={"from": before, "to": after}))
    found += _readiness(delta, new, POD, "pod", WARNING)
    found += [Change(SOURCE, "pod-appeared", k.removeprefix(POD),
                     f"pod {k.removeprefix(POD)} appeared ({new.facts[k]})", INFO)
              for k in delta.appeared(POD)]
    found += [Change(SOURCE, "pod-gone", k.removeprefix(POD), f"pod {k.removeprefix(POD)} gone",
                     INFO) for k in delta.vanished(POD)]
    for key, _, after in delta.diff(PROBE):
        if after != ProbeOutcome.FAILING.value:
            continue
        pod, _, kind = key.removeprefix(PROBE).rpartition(":")
        detail = new.notes.get(key) or f"{kind} failing"
        found.append(Change(SOURCE, "probe-failure", pod, f"pod {pod} {detail}", WARNING))
    for key, _, after in delta.diff(CORDON):
        node = key.removeprefix(CORDON)
        found.append(Change(SOURCE, "cordon", node, f"node {node} {after}",
                            WARNING if after == "cordoned" else OK))
    found += _readiness(delta, new, NODE_READY, "node", CRITICAL)
    return [*collapse(found), *new.events]


def _readiness(delta: Delta, new: Observation, prefix: str, what: str,
               bad: str) -> list[Change]:
    """A pod's or a node's readiness flips, with why when it is not ready."""
    found = []
    for key, before, after in delta.diff(prefix):
        name = key.removeprefix(prefix)
        why = new.notes.get(key) if after != "ready" else None
        found.append(Change(SOURCE, f"{what}-ready", name,
                            f"{what} {name} {before} → {after}" + (f": {why}" if why else ""),
                            OK if after == "ready" else bad))
    return found


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
