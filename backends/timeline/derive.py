"""From a backend's status and summary to an :class:`Observation`, and from two observations
to the changes — for any backend.

A backend says what it contributes in ``backends/<name>/timeline.py`` (``observe(status,
section) -> Observation`` and ``changes(old facts, observation) -> list[Change]``). One
without (a fifth backend) is followed by what every backend already computes: its alerts
appearing and clearing. Every backend's overall health (the panel's colour) is a fact too.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from backends.service import BackendSummary
from backends.timeline.model import (
    CRITICAL,
    INFO,
    OK,
    WARNING,
    Change,
    Derive,
    Facts,
    Observation,
    diff,
    level_of,
)
from backends.timeline.model import appeared as appeared_keys
from backends.timeline.model import vanished as vanished_keys

HEALTH = "health"
ALERT = "alert:"


@cache
def _module(backend: str) -> ModuleType | None:
    from backends.registry import optional_module

    if optional_module(f"backends.{backend}") is None:  # registered at run time (a plugin)
        return None
    return optional_module(f"backends.{backend}.timeline")


def observation(backend: str, status: Any, summary: BackendSummary,
                section: Any = None) -> Observation:
    """What one good reading says. ``section`` is the backend's configuration section (its
    bounds, e.g. PostgreSQL's ``max_lag_on_failover``)."""
    module = _module(backend)
    if module is not None:
        found: Observation = module.observe(status, section)
        facts, notes, events = dict(found.facts), dict(found.notes), found.events
    else:
        facts, notes, events = {}, {}, ()
        for alert in summary.alerts:
            facts[ALERT + alert.key] = alert.severity.name.lower()
            notes[ALERT + alert.key] = alert.message
    facts[HEALTH] = summary.health.value
    notes[HEALTH] = next((a.message for a in summary.alerts), "")
    return Observation(facts, notes, events)


def derive_for(backend: str, title: str) -> Derive:
    """``(old facts, observation) → changes`` for one backend (see module docstring)."""
    module = _module(backend)

    def derive(old: Facts, new: Observation) -> list[Change]:
        # What changed first, then what it did to the backend's health.
        found = (module.changes(old, new) if module is not None
                 else _alert_changes(backend, old, new))
        for _, before, after in diff(old, new.facts, HEALTH):
            found.append(Change(backend, "health", "*", f"{title} {before} → {after}",
                                level_of([after]), data={"from": before, "to": after}))
        return found

    return derive


def _alert_changes(backend: str, old: Facts, new: Observation) -> list[Change]:
    found = [Change(backend, "alert", key.removeprefix(ALERT),
                    new.notes.get(key, key), _level(new.facts[key]))
             for key in appeared_keys(old, new.facts, ALERT)]
    found += [Change(backend, "alert-cleared", key.removeprefix(ALERT),
                     f"cleared: {key.removeprefix(ALERT)}", OK)
              for key in vanished_keys(old, new.facts, ALERT)]
    return found


def _level(severity: str) -> str:
    return {"info": INFO, "warning": WARNING, "critical": CRITICAL}.get(severity, INFO)
