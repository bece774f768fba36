"""Unfinished actions: what to check when one was interrupted, and the warnings sfops gives
about them when it starts (CLI action commands, the TUI) and in a backend's preflight.

The records themselves are :mod:`backends.audit`'s; what to check per action kind is declared
with the action (:attr:`backends.contract.ActionSpec.if_interrupted`).
"""

from __future__ import annotations

from collections.abc import Iterable

from backends.audit import INTERRUPTED, RUNNING, UNFINISHED, AuditLog, Unfinished
from backends.service import Alert, Severity

GENERIC = ("it may have stopped half-way: check `sfops {command} status` and the state of "
           "{target} before acting on it again")
UNKNOWN = "it may have stopped half-way: check the state of {target} before acting on it again"


def what_to_check(action: str, target: str) -> str:
    """What to check after ``action`` on ``target`` stopped without an outcome."""
    from backends import registry

    for backend in registry.backends():
        for spec in backend.actions:
            if spec.name == action:
                text = spec.if_interrupted or GENERIC.replace("{command}", backend.command)
                return text.replace("{target}", target)
    return UNKNOWN.replace("{target}", target)


def warning(item: Unfinished) -> str:
    """One plain line (outside text: callers must not render it as markup)."""
    if item.state == RUNNING:
        return f"in progress: {item.describe()}"
    return (f"did not finish: {item.describe()} — "
            f"{what_to_check(item.action, item.target)} (then `sfops audit --ack {item.id}`)")


def warnings(items: Iterable[Unfinished], *, running: bool = True) -> list[str]:
    """Lines for the unresolved unfinished actions (running ones too unless not wanted)."""
    return [warning(u) for u in items
            if not u.resolved and (running or u.state in (INTERRUPTED, UNFINISHED))]


def unfinished_of(audit: AuditLog, family: str) -> list[Unfinished]:
    """The unresolved unfinished actions of one backend's actions (``"nginx"`` for
    nginx.drain and nginx.undrain), oldest first."""
    return [u for u in audit.unfinished() if u.action.partition(".")[0] == family]


def headline(item: Unfinished) -> str:
    """Short, e.g. pg.switchover pg-2 interrupted (started 2026-…, record 3f…) — check …"""
    return (f"{item.action} {item.target} {item.state} (started {item.record.get('ts', '?')} "
            f"by {item.record.get('user', '?')}, record {item.id}) — "
            f"{what_to_check(item.action, item.target)}")


def alerts(items: Iterable[Unfinished]) -> list[Alert]:
    """Lines for "What is wrong now": unresolved actions without an outcome (not running)."""
    return [Alert("audit", f"{u.state}:{u.id}",
                  Severity.CRITICAL if u.state == INTERRUPTED else Severity.WARNING,
                  headline(u))
            for u in items if not u.resolved and u.state in (INTERRUPTED, UNFINISHED)]
