"""What every backend slice (nginx, postgres, kafka, kubernetes) gives the CLI and the TUI.

A slice module exposes ``build_service(config: Config) -> BackendService | None`` (None when
its section is absent). The overview renders ``BackendSummary`` generically; drill-down
screens and actions are the slice's own.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from backends.resilience import CircuitBreaker
from backends.snapshot import Health, Snapshot


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class Alert:
    """Something wrong right now. ``key`` identifies it across polls so "since" is kept."""

    source: str  # "nginx", "postgres", ...
    key: str  # stable identity, e.g. "member-failing:api-2"
    severity: Severity
    message: str  # outside text allowed: the UI never renders it as markup


@dataclass(frozen=True)
class Figure:
    """One key figure on an overview panel, e.g. ("upstreams up", "3/3")."""

    label: str
    value: str
    health: Health = Health.OK


@dataclass(frozen=True)
class BackendSummary:
    """What the overview shows for one backend, derived purely from its last snapshot."""

    name: str
    title: str
    health: Health
    figures: Sequence[Figure] = ()
    alerts: Sequence[Alert] = ()
    # One number per poll for the panel's sparkline (e.g. requests/s, replication lag bytes).
    spark_label: str = ""
    spark_value: float | None = None
    error: str | None = None  # the last poll's error, redacted


@dataclass(frozen=True)
class ActionSpec:
    """An action the TUI offers on this backend (a key in its screen, a palette entry)."""

    name: str  # "nginx.drain"
    label: str  # "Drain member"
    key: str  # binding in the drill-down screen, e.g. "d"
    destructive: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class BackendService(Protocol):
    name: str
    title: str
    breaker: CircuitBreaker | None

    async def poll(self) -> Any:
        """Read the backend once, bounded by timeouts; returns the status value (raises on
        failure: the poller turns that into a failed Snapshot keeping the last good value)."""
        ...

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary: ...

    async def close(self) -> None: ...


def summary_for_failure(name: str, title: str, snapshot: Snapshot[Any]) -> BackendSummary:
    """The summary of a backend whose polls fail and which has never answered."""
    return BackendSummary(
        name=name,
        title=title,
        health=Health.FAILED,
        alerts=(
            Alert(name, f"{name}-unreachable", Severity.CRITICAL, f"{title}: {snapshot.error}"),
        ),
        error=snapshot.error,
    )


def since_text(first_seen: datetime, now: datetime) -> str:
    seconds = int((now - first_seen).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
