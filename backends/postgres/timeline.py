"""PostgreSQL on the timeline: each member's role (primary, standby, down) and timeline,
replication lag crossing its bound, fencing and streaming, as facts compared between readings
(backends.timeline.model)."""

from __future__ import annotations

from typing import Any

from backends.postgres.model import PostgresStatus, Role, format_bytes
from backends.timeline.model import (
    CRITICAL,
    INFO,
    OK,
    WARNING,
    Change,
    Facts,
    Observation,
    diff,
)

SOURCE = "postgres"
# The bound replication lag is judged by: the lag beyond which a failover to the standby is
# refused ([postgres] max_lag_on_failover) — the figure that matters at 03:00.
DEFAULT_LAG_BOUND = 1024 * 1024
ROLE, TIMELINE, LAG, FENCED, STREAMING = "role:", "timeline:", "lag:", "fenced:", "streaming:"


def observe(status: PostgresStatus, section: Any = None) -> Observation:
    bound = int(getattr(section, "max_lag_on_failover", DEFAULT_LAG_BOUND))
    facts: dict[str, str] = {}
    notes: dict[str, str] = {}
    for m in status.members:
        if not m.reachable:
            facts[ROLE + m.name] = "down"
            notes[ROLE + m.name] = m.error or "no answer"
        else:
            facts[ROLE + m.name] = m.role.value
            if m.timeline is not None:
                facts[TIMELINE + m.name] = str(m.timeline)
        facts[FENCED + m.name] = "yes" if m.fenced else "no"
        if m.is_standby:
            facts[STREAMING + m.name] = "yes" if m.streaming else "no"
            if m.replication_lag_bytes is not None:
                facts[LAG + m.name] = "over" if m.replication_lag_bytes > bound else "within"
                notes[LAG + m.name] = (f"lag {format_bytes(m.replication_lag_bytes)}, bound "
                                       f"{format_bytes(bound)} (max_lag_on_failover)")
    return Observation(facts, notes)


def changes(old: Facts, new: Observation) -> list[Change]:
    found: list[Change] = []
    for key, before, after in diff(old, new.facts, ROLE):
        name = key.removeprefix(ROLE)
        why = new.notes.get(key) if after == "down" else None
        level = (CRITICAL if after in ("down", Role.UNKNOWN.value) else
                 OK if before == "down" else WARNING)  # a role swap is worth a look
        message = f"{name} {before} → {after}" + (f": {why}" if why else "")
        found.append(Change(SOURCE, "role", name, message, level,
                            data={"from": before, "to": after}))
    for key, before, after in diff(old, new.facts, TIMELINE):
        name = key.removeprefix(TIMELINE)
        found.append(Change(SOURCE, "timeline", name,
                            f"{name} timeline {before} → {after}", INFO,
                            data={"from": before, "to": after}))
    for key, _, after in diff(old, new.facts, LAG):
        name = key.removeprefix(LAG)
        detail = new.notes.get(key, "")
        if after == "over":
            found.append(Change(SOURCE, "lag", name, f"{name} lag over its bound: {detail}",
                                WARNING))
        else:
            found.append(Change(SOURCE, "lag", name, f"{name} lag back within its bound: "
                                f"{detail}", OK))
    for key, _, after in diff(old, new.facts, FENCED):
        name = key.removeprefix(FENCED)
        found.append(Change(SOURCE, "fencing", name,
                            f"{name} fenced (former primary)" if after == "yes"
                            else f"{name} no longer fenced", WARNING if after == "yes" else OK))
    for key, _, after in diff(old, new.facts, STREAMING):
        name = key.removeprefix(STREAMING)
        found.append(Change(SOURCE, "streaming", name,
                            f"{name} streaming again" if after == "yes"
                            else f"{name} stopped streaming", OK if after == "yes" else WARNING))
    return found
