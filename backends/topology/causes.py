"""Likely causes: "What is wrong now" grouped under them.

Each rule links one symptom (an alert) to the alert that most likely causes it, with the
evidence in between, where the data shows the link::

    api-2 failing: HTTP 503 (database unavailable)
      ← readiness: read-only: pg-2 is a standby, pg-1 unreachable
      ← no primary: no reachable member accepts writes
      ← pg-1 unreachable: connection refused

Rules: an nginx member ← its pod not ready, or (its process answering "not ready") the
database the API needs; a pod not ready ← its node (NotReady, draining, cordoned) or, for an
API pod, the database; "no primary" ← the unreachable last primary; a PostgreSQL member or a
Kafka broker down ← its node (``[topology.placement]``); Kafka offline / under-min-ISR /
under-replicated partitions ← the down broker among their replicas; a consumer group's
trouble ← its lagging partitions being offline. Pure: unit-tested without a lab.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backends.service import Alert, alert_order
from backends.topology.model import Topology, named

# Kubernetes alerts carry their backend's name as source.
K8S = "kubernetes"


@dataclass(frozen=True)
class Link:
    """``symptom`` is likely caused by ``cause`` (an alert's "source:key"; None: by what
    ``via`` says, which no alert names), through the evidence ``via``."""

    symptom: str
    via: tuple[str, ...]
    cause: str | None


class _Rules:
    def __init__(self, alerts: Mapping[str, Alert], topology: Topology) -> None:
        self.alerts = alerts
        self.topology = topology

    def has(self, ident: str) -> str | None:
        return ident if ident in self.alerts else None

    # -- the database the API needs ---------------------------------------------------------
    def database(self) -> tuple[tuple[str, ...], str | None] | None:
        """(evidence, the alert to blame) when the API's database is not writable; None
        when it is, or nothing is known about it."""
        topology = self.topology
        database = topology.database
        running = [r for r in topology.running if r.startswith("pg.")]
        note = f" ({'; '.join(running)} running)" if running else ""
        if database is None:
            if (unreachable := self.has("postgres:postgres-unreachable")) is not None:
                return (f"readiness: database unreachable{note}",), unreachable
            return None
        if database.writable:
            return None
        via = (f"readiness: database {database.problem}{note}",)
        for ident in ("postgres:split-brain:*", "postgres:no-primary:*"):
            if ident in self.alerts:
                return via, ident
        return via, self.has(f"postgres:member-unreachable:{database.last_primary}")

    # -- a pod --------------------------------------------------------------------------
    def pod(self, key: str, *, api: bool) -> tuple[tuple[str, ...], str | None] | None:
        """Why pod ``key`` is not ready: its node, or (an API pod whose readiness fails)
        the database."""
        pod = self.topology.pods.get(key)
        if pod is None or pod.ready:
            return None
        node = self.topology.nodes.get(pod.info.node) if pod.info.node else None
        if node is not None and node.trouble:
            kind = "node-not-ready" if node.ready is False else "node-cordoned"
            return (f"on node {node.name} ({node.trouble})",), self.has(f"{K8S}:{kind}:"
                                                                        f"{node.name}")
        if api and pod.probe_failure and (db := self.database()) is not None:
            return db
        return None

    # -- the rules, by symptom ----------------------------------------------------------
    def link(self, alert: Alert) -> Link | None:
        ident = alert.ident
        kind, _, subject = alert.key.partition(":")
        found: tuple[tuple[str, ...], str | None] | None = None
        if alert.source == "nginx" and kind == "member-failing":
            found = self._member(subject)
        elif alert.source == "nginx" and kind == "no-member-up":
            found = self._every_member()
        elif alert.source == K8S and kind == "pod-not-ready":
            found = self.pod(subject, api=subject in self.topology.api_pods)
        elif alert.source == "postgres" and kind == "no-primary":
            last = self.topology.database.last_primary if self.topology.database else None
            found = ((), self.has(f"postgres:member-unreachable:{last}")) if last else None
        elif alert.source == "postgres" and kind == "member-unreachable":
            found = self._placed(subject, "postgres")
        elif alert.source == "kafka" and kind == "broker-down":
            found = self._placed(f"broker-{subject}", "kafka")
        elif alert.source == "kafka" and kind in ("partitions-offline",
                                                   "partitions-under-min-isr",
                                                   "partitions-under-replicated"):
            found = self._broker_of(kind)
        elif alert.source == "kafka" and kind in ("group-idle", "group-error"):
            found = self._group(subject)
        if found is None:
            return None
        via, cause = found
        if cause == ident or (cause is None and not via):
            return None
        return Link(ident, via, cause)

    def _member(self, member: str) -> tuple[tuple[str, ...], str | None] | None:
        unit = self.topology.unit(member)
        if unit is None:
            return None
        if unit.pod is not None and unit.pod_ready is False:
            step = f"pod {unit.pod} not ready: {unit.pod_why}".rstrip(": ")
            pod_alert = self.has(f"{K8S}:pod-not-ready:{unit.pod}")
            if pod_alert is not None:
                return (), pod_alert
            deeper = self.pod(unit.pod, api=True)
            return ((step, *deeper[0]), deeper[1]) if deeper else ((step,), None)
        if unit.probe_answered:  # the process runs and says it is not ready
            return self.database()
        if unit.node is not None:
            node = self.topology.nodes.get(unit.node)
            if node is not None and node.trouble:
                kind = "node-not-ready" if node.ready is False else "node-cordoned"
                return ((f"pod {unit.pod} on node {node.name} ({node.trouble})",),
                        self.has(f"{K8S}:{kind}:{node.name}"))
        return None

    def _every_member(self) -> tuple[tuple[str, ...], str | None] | None:
        """No member up: the likely cause every failing member shares, if they share one."""
        failing = [u.member for u in self.topology.units
                   if u.member is not None and u.member_healthy is False]
        causes = {self._member(m) for m in failing}
        if len(causes) != 1 or (found := causes.pop()) is None:
            return None
        return (f"every member failing ({', '.join(f for f in failing if f)})", *found[0]), \
            found[1]

    def _placed(self, key: str, source: str) -> tuple[tuple[str, ...], str | None] | None:
        node_name = self.topology.config.placement.get(key)
        node = self.topology.nodes.get(node_name) if node_name else None
        if node is None or not node.trouble:
            return None
        kind = "node-not-ready" if node.ready is False else "node-cordoned"
        cause = self.has(f"{K8S}:{kind}:{node.name}")
        return ((f"runs on node {node.name} ({node.trouble}, [topology.placement])",), cause)

    def _broker_of(self, kind: str) -> tuple[tuple[str, ...], str | None] | None:
        kafka = self.topology.kafka
        if kafka is None:
            return None
        test: Callable[[object], bool] = {
            "partitions-offline": lambda p: getattr(p, "offline", False),
            "partitions-under-min-isr": lambda p: getattr(p, "under_min_isr", False),
            "partitions-under-replicated": lambda p: getattr(p, "under_replicated", False),
        }[kind]
        down = {b.broker_id for b in kafka.brokers if not b.up}
        counts: dict[int, list[str]] = {}
        for p in kafka.partitions():
            if test(p):
                for broker in set(p.replicas) & down:
                    counts.setdefault(broker, []).append(p.name)
        if not counts:
            return None
        broker = max(sorted(counts), key=lambda b: len(counts[b]))
        return ((f"broker {broker} is a replica of {named(counts[broker])}",),
                self.has(f"kafka:broker-down:{broker}"))

    def _group(self, group_id: str) -> tuple[tuple[str, ...], str | None] | None:
        kafka = self.topology.kafka
        if kafka is None:
            return None
        group = next((g for g in kafka.groups if g.group_id == group_id), None)
        if group is None:
            return None
        offline = {p.name for p in kafka.partitions() if p.offline}
        lagging = [f"{p.topic}-{p.partition}" for p in group.partitions if (p.lag or 0) > 0]
        hit = [name for name in lagging if name in offline]
        if not hit:
            return None
        return ((f"lagging partitions without a leader: {named(hit)}",),
                self.has("kafka:partitions-offline"))


def links(alerts: Iterable[Alert], topology: Topology) -> dict[str, Link]:
    """Each alert's likely cause, where a rule finds one (symptom "source:key" → link)."""
    by_ident = {a.ident: a for a in alerts}
    rules = _Rules(by_ident, topology)
    found: dict[str, Link] = {}
    for alert in by_ident.values():
        link = rules.link(alert)
        if link is not None:
            found[alert.ident] = link
    return found


def _root(ident: str, found: Mapping[str, Link]) -> tuple[str, list[tuple[bool, str]]]:
    """(the root cause's "source:key", the steps after the symptom: (True, an alert's
    "source:key") or (False, evidence text))."""
    steps: list[tuple[bool, str]] = []
    seen = {ident}
    current = ident
    while (link := found.get(current)) is not None:
        steps.extend((False, text) for text in link.via)
        if link.cause is None or link.cause in seen:
            break
        seen.add(link.cause)
        current = link.cause
        steps.append((True, current))
    return current, steps


def explain(alerts: Sequence[Alert], topology: Topology) -> list[Alert]:
    """``alerts`` with their likely cause (``cause``: the root alert, ``chain``: the steps from
    the symptom to it), grouped: each root cause first, its symptoms right after it. The
    groups keep the order of :func:`~backends.service.wrong_now` (unreachable first, then by
    severity) by their root."""
    by_ident = {a.ident: a for a in alerts}
    found = links(alerts, topology)
    explained: list[Alert] = []
    for alert in alerts:
        root, steps = _root(alert.ident, found)
        if not steps:
            explained.append(alert)
            continue
        chain = [alert.message, *(by_ident[value].message if is_alert else value
                                  for is_alert, value in steps)]
        explained.append(replace(alert, cause=root if root != alert.ident else None,
                                 chain=tuple(chain)))
    return grouped(explained)


def grouped(alerts: Iterable[Alert], tiebreak: Callable[[Alert], Any] | None = None,
            ) -> list[Alert]:
    """Root causes in :func:`~backends.service.alert_order` (then ``tiebreak``), each followed
    by the alerts it causes, nearest first, then in the same order. The overview's tracker
    and ``sfops status`` both list them so."""
    items = list(alerts)
    by_ident = {a.ident: a for a in items}

    def order(alert: Alert) -> tuple[object, ...]:
        extra = tiebreak(alert) if tiebreak is not None else 0
        return (*alert_order(alert), extra)

    def root_of(alert: Alert) -> Alert:
        return by_ident.get(alert.cause or "", alert)

    roots = sorted({id(root_of(a)): root_of(a) for a in items}.values(), key=order)
    rank = {root.ident: index for index, root in enumerate(roots)}
    # Within a group: the root, then the symptoms nearest to it (shorter chains) first.
    return sorted(items, key=lambda a: (rank[root_of(a).ident], a.cause is not None,
                                        len(a.chain), order(a)))
