"""Blast radius: what else an action affects across the layers, as preflight checks.

Before a Kubernetes node drain, an nginx member drain, a Kafka broker drain and a PostgreSQL
failover or switchover, the preflight names the API replicas (nginx members and their pods),
the PostgreSQL members and the Kafka partitions it touches. A check fails — the action is
refused unless ``--force``, which the audit record notes (``forced``, with the failed check)
— when the action would take away the last healthy API member or the PostgreSQL primary, or
push partitions under ``min.insync.replicas``. Checks a layer already makes are extended, not
repeated: nginx's "another healthy member remains" keeps refusing the last member by its
probes (this adds what the other layers say), Kafka's takeover check keeps refusing for the
partitions the broker leads (this adds the ones it follows). Pure: unit-tested with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

from backends.actions import CheckResult
from backends.kafka.model import PartitionState
from backends.kafka.plan import min_isr_loss
from backends.topology.model import ApiUnit, Topology, named

if TYPE_CHECKING:
    from backends.topology.view import LayerView

CHECK_API = "blast radius: API members"
CHECK_PRIMARY = "blast radius: PostgreSQL primary"
CHECK_MIN_ISR = "blast radius: min.insync.replicas"
CHECK_LAYERS = "blast radius: other layers"
FORCE_NOTE = " (--force overrides; the audit record notes it)"


def _units(units: Iterable[ApiUnit]) -> str:
    return named([u.describe() for u in units])


async def cross_layer(layers: LayerView | None, backends: Iterable[str],
                      judge: Callable[[Topology], list[CheckResult]]) -> list[CheckResult]:
    """``judge``'s checks on the cross-layer view read from ``backends``, after a warning
    naming any that could not be read; nothing when the action has no view (built without a
    context: a unit test of one action)."""
    if layers is None:
        return []
    topology, problems = await layers.topology(backends)
    return [*layers_check([*problems, *topology.problems]), *judge(topology)]


def layers_check(problems: Sequence[str]) -> list[CheckResult]:
    """A warning naming the layers that could not be read (the checks below are as good as
    what was read)."""
    if not problems:
        return []
    return [CheckResult.warned(CHECK_LAYERS, "not known, so not judged: " + "; ".join(problems))]


def api_members(topology: Topology, affected: Sequence[ApiUnit], doing: str) -> CheckResult:
    """The API replicas ``doing`` takes away, and whether a healthy one remains (fails when
    it would take the last ones)."""
    if not topology.units:
        return CheckResult.passed(CHECK_API, "no API member known (no nginx status, no API "
                                  "pods: see [topology] api_deployment)")
    if not affected:
        healthy = [u for u in topology.units if u.healthy]
        return CheckResult.passed(CHECK_API, f"none affected; healthy: {_units(healthy)}")
    names = {id(u) for u in affected}
    remaining = [u for u in topology.units if id(u) not in names and u.healthy]
    taken = [u for u in affected if u.healthy]
    detail = f"{doing} takes away {_units(affected)}"
    if remaining:
        return CheckResult.passed(CHECK_API, f"{detail}; still healthy: {_units(remaining)}")
    if taken:
        return CheckResult.failed(CHECK_API, f"{detail}: the last healthy API member(s), "
                                  f"nothing would serve{FORCE_NOTE}")
    return CheckResult.warned(CHECK_API, f"{detail}; no API member is healthy now anyway")


def min_isr(partitions: Iterable[PartitionState], brokers: Collection[int], *,
            api_topic: Callable[[str], bool], when: str,
            refused_elsewhere: Collection[str] = ()) -> CheckResult:
    """The partitions that would fall to or under ``min.insync.replicas`` without
    ``brokers``; fails for those under it (acks=all writes to them would fail), except the
    ones another check already refuses (``refused_elsewhere``, by partition name)."""
    loss = min_isr_loss(partitions, brokers)
    who = "broker " + ", ".join(map(str, sorted(brokers)))
    under = [p for p in loss.under if p.name not in refused_elsewhere]
    elsewhere = len(loss.under) - len(under)
    api = sorted({p.topic for p in (*loss.under, *loss.at) if api_topic(p.topic)})
    api_note = f"; the API writes {', '.join(api)}" if api else ""
    if under:
        listed = named([f"{p.name} (ISR {list(p.isr)}, min {p.min_isr})" for p in under])
        return CheckResult.failed(
            CHECK_MIN_ISR, f"{len(under)} partition(s) would fall under min.insync.replicas "
            f"{when} ({who}): {listed}; acks=all writes to them would fail{api_note}"
            f"{FORCE_NOTE}")
    parts: list[str] = []
    if elsewhere:
        parts.append(f"{elsewhere} partition(s) it leads would fall under it (the takeover "
                     "check refuses them)")
    if loss.at:
        parts.append(f"{len(loss.at)} partition(s) would be at min.insync.replicas {when}: "
                     f"{named([p.name for p in loss.at])} (one more broker lost stops "
                     f"acks=all writes{api_note})")
    if loss.unknown:
        parts.append(f"min.insync.replicas unknown for {len(loss.unknown)}: "
                     f"{named([p.name for p in loss.unknown])}")
    if loss.at or loss.unknown:
        return CheckResult.warned(CHECK_MIN_ISR, "; ".join(parts))
    return CheckResult.passed(CHECK_MIN_ISR, "; ".join(parts) or f"every partition {who} is "
                              f"in sync for keeps more than min.insync.replicas {when}")


def _node_pg(topology: Topology, node: str, members: Sequence[str]) -> CheckResult:
    database = topology.database
    where = f"on node {node} ([topology.placement])"
    if database is None:
        return CheckResult.warned(CHECK_PRIMARY, f"{', '.join(members)} run {where}; "
                                  "PostgreSQL's status is not known: cannot tell whether one "
                                  "is the primary")
    if database.primary in members:
        return CheckResult.failed(
            CHECK_PRIMARY, f"{database.primary}, the primary, runs {where}: draining it takes "
            f"the primary away; switch over first (`sfops pg switchover --to MEMBER`)"
            f"{FORCE_NOTE}")
    return CheckResult.warned(CHECK_PRIMARY, f"{', '.join(members)} (not the primary) run "
                              f"{where}: the standby goes away with it")


def node_drain(topology: Topology, node: str, evicted: Collection[str]) -> list[CheckResult]:
    """Draining ``node`` (evicting the pods ``evicted``, "namespace/name"): the API members
    whose pods go, the PostgreSQL members and Kafka brokers placed there."""
    affected = [u for u in topology.units if u.pod is not None and u.pod in evicted]
    checks = [api_members(topology, affected, f"draining {node}")]
    placed = topology.placed_on(node)
    members = [k for k in placed if not k.startswith("broker-")]
    if members:
        checks.append(_node_pg(topology, node, members))
    brokers = {int(k.removeprefix("broker-")) for k in placed if k.startswith("broker-")}
    if brokers:
        if topology.kafka is None:
            checks.append(CheckResult.warned(
                CHECK_MIN_ISR, f"broker {', '.join(map(str, sorted(brokers)))} runs on node "
                f"{node}; Kafka's status is not known: partitions not judged"))
        else:
            checks.append(min_isr(topology.kafka.partitions(), brokers,
                                  api_topic=topology.api_topic, when=f"once {node} is drained"))
    return checks


def member_drain(topology: Topology, member: str) -> list[CheckResult]:
    """Draining nginx member ``member``: what serves it (pod, node) and which members stay
    healthy across the layers. nginx's own "another healthy member remains" refuses the last
    member by its probes; this warns where Kubernetes disagrees (pods not ready)."""
    unit = topology.unit(member)
    if unit is None or not topology.units:
        return []
    others = [u for u in topology.units if u is not unit]
    healthy = [u for u in others if u.healthy]
    only_nginx = [u for u in others if u.member_healthy and u.pod_ready is False]
    detail = f"takes away {unit.describe()}"
    if unit.link:
        detail += f" (linked by {unit.link})"
    if only_nginx and not healthy:
        return [CheckResult.warned(
            CHECK_API, f"{detail}; the members left answer nginx's probes but Kubernetes "
            f"reports their pods not ready: {_units(only_nginx)}")]
    detail += f"; still healthy: {_units(healthy)}"
    if only_nginx:
        return [CheckResult.warned(CHECK_API, f"{detail}; pods not ready: "
                                   f"{_units(only_nginx)}")]
    return [CheckResult.passed(CHECK_API, detail)]


def role_change(topology: Topology, to: str, old: Sequence[str], doing: str
                ) -> list[CheckResult]:
    """A failover or switchover to ``to``: every API member reconnects (which ones), and the
    API must be able to reach the new primary (fails when ``[topology] api_databases`` does
    not list it: no API member could write afterwards)."""
    checks: list[CheckResult] = []
    databases = topology.config.api_databases
    if databases is not None and to not in databases:
        checks.append(CheckResult.failed(
            CHECK_API, f"the API's connection string ([topology] api_databases: "
            f"{', '.join(databases)}) does not list {to}: after the {doing} no API member "
            f"could write; add {to} to the API's conninfo and to api_databases{FORCE_NOTE}"))
    elif topology.units:
        affected = [u for u in topology.units]
        checks.append(CheckResult.passed(
            CHECK_API, f"every API member loses its database connections during the "
            f"{doing} and reconnects to {to}: {_units(affected)}"))
    else:
        checks.append(CheckResult.passed(CHECK_API, "no API member known (no nginx status, "
                                         "no API pods)"))
    former = ", ".join(old) or "the old primary"
    what = "rejoins as a standby" if doing == "switchover" else "is fenced"
    node_name = topology.config.placement.get(to)
    node = topology.nodes.get(node_name) if node_name else None
    if node is not None and node.trouble:
        checks.append(CheckResult.warned(
            CHECK_PRIMARY, f"{to} runs on node {node.name}, which is {node.trouble} "
            f"([topology.placement]); {former} {what}"))
    else:
        checks.append(CheckResult.passed(CHECK_PRIMARY, f"{to} becomes the primary; "
                                         f"{former} {what}"))
    return checks
