"""nginx on the timeline: member state flips (up, draining, drained, failing, absent) and 5xx
spikes, as facts compared between readings (backends.timeline.model)."""

from __future__ import annotations

from typing import Any

from backends.nginx.model import STATE_HEALTH, MemberState, NginxStatus
from backends.timeline.model import OK, WARNING, Change, Facts, Observation, diff, level_of

SOURCE = "nginx"
# 5xx answers per second (over the access-log window, all members) that make a spike: a
# handful a second is what users notice; a stray one is not an incident.
SPIKE_5XX_PER_S = 1.0
MEMBER = "member:"
SPIKE = "5xx"


def observe(status: NginxStatus, section: Any = None) -> Observation:
    facts: dict[str, str] = {}
    notes: dict[str, str] = {}
    for member in status.members:
        facts[MEMBER + member.name] = member.state.value
        if member.state is MemberState.FAILING:
            notes[MEMBER + member.name] = (
                member.probe.error or "probe failed"
                if member.probe is not None and not member.probe.ok
                else f"{member.traffic.recent_5xx} recent 5xx")
    rate = sum(m.traffic.errors_5xx_per_s for m in status.members)
    facts[SPIKE] = "spike" if rate >= SPIKE_5XX_PER_S else "normal"
    worst = max(status.members, key=lambda m: m.traffic.errors_5xx_per_s, default=None)
    detail = f"{rate:.2f} 5xx/s"
    if worst is not None and worst.traffic.errors_5xx_per_s > 0:
        detail += f", most from {worst.name} ({worst.traffic.errors_5xx_per_s:.2f}/s)"
    notes[SPIKE] = detail
    return Observation(facts, notes)


def changes(old: Facts, new: Observation) -> list[Change]:
    found: list[Change] = []
    for key, before, after in diff(old, new.facts, MEMBER):
        name = key.removeprefix(MEMBER)
        why = new.notes.get(key)
        message = f"{name} {before} → {after}" + (f": {why}" if why else "")
        found.append(Change(SOURCE, "member-state", name, message,
                            level_of([_health(after)]), data={"from": before, "to": after}))
    for _, _before, after in diff(old, new.facts, SPIKE):
        detail = new.notes.get(SPIKE, "")
        if after == "spike":
            found.append(Change(SOURCE, "5xx-spike", "*", f"5xx spike: {detail}", WARNING))
        else:
            found.append(Change(SOURCE, "5xx-spike", "*", f"5xx back to normal: {detail}", OK))
    return found


def _health(state: str) -> str:
    try:
        return STATE_HEALTH[MemberState(state)].value
    except ValueError:
        return "unknown"
