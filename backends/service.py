"""What every backend slice (nginx, postgres, kafka, kubernetes) gives the CLI and the TUI.

A slice module exposes ``build_service(config: Config) -> BackendService | None`` (None when
its section is absent). The overview renders ``BackendSummary`` generically; drill-down
screens and actions are the slice's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from backends.resilience import BreakerState, CircuitBreaker, describe_error, with_timeout
from backends.secrets import redact_known
from backends.snapshot import Health, Snapshot

# The default budget of one reachability probe. Short on purpose: a hung server (SIGSTOP, a
# dead host behind a live TCP stack) must read UNREACHABLE within two refreshes plus this.
CONTACT_TIMEOUT = 2.0


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
    # No contact with the backend or one of its members (down, hung, refused): listed first.
    unreachable: bool = False
    # Its likely cause across the layers (backends.topology.causes): the root alert's
    # "source:key", and the steps from this symptom to it, e.g. ("api-2 failing: HTTP 503",
    # "pod streamforge/api-x not ready", "no primary: …"). None / empty: it is a root.
    cause: str | None = None
    chain: tuple[str, ...] = ()

    @property
    def ident(self) -> str:
        """"source:key": how a cause names its alert (and the overview its row)."""
        return f"{self.source}:{self.key}"


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
    # True when the figures are from before the last failed contact: they may no longer hold.
    last_known: bool = False


@dataclass(frozen=True)
class ActionSpec:
    """An action the TUI offers on this backend (a key in its screen, a palette entry)."""

    name: str  # "nginx.drain"
    label: str  # "Drain member"
    key: str  # binding in the drill-down screen, e.g. "d"
    destructive: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class BackendUnreachable(Exception):
    """The backend's reachability probe failed: nothing it showed before can be vouched for."""

    describes_itself = True  # shown as its message, without the class name

    def __init__(self, message: str, value: Any = None) -> None:
        # Redacted as it is made: the message quotes servers (which may echo credentials
        # back) and URLs from the configuration.
        super().__init__(redact_known(message))
        # What the backend could still say (PostgreSQL: every member marked down), for a
        # one-shot `status` that prints it; a refresh keeps the last good value instead.
        self.value = value


class BackendService(Protocol):
    """The contract every slice follows.

    The liveness rule: every refresh runs :meth:`contact` — an explicit probe of the server
    itself with its own short budget (``contact_timeout``), never answered from a watch, a
    cache or a pool — beside :meth:`poll`. A snapshot succeeds only when both did, so a
    snapshot's time *is* the time of the last successful contact. :func:`observe` enforces it;
    the TUI and ``sfops status`` only ever poll through it.
    """

    name: str
    title: str
    breaker: CircuitBreaker | None

    @property
    def contact_timeout(self) -> float:
        """The budget of :meth:`contact` (seconds)."""
        ...

    async def contact(self) -> None:
        """Prove the backend answers now (raise naming what did not answer). Must hit the
        server: a Kubernetes ``/readyz``, a Kafka request every broker must process, nginx's
        status endpoint and master process, each PostgreSQL member."""
        ...

    async def poll(self) -> Any:
        """Read the backend once, bounded by timeouts; returns the status value (raises on
        failure: the poller turns that into a failed Snapshot keeping the last good value)."""
        ...

    # Optional: ``def unreachable(self, value) -> str | None`` — for a backend probed per
    # member inside its poll (PostgreSQL), why the value means no contact at all (no member
    # answered). :func:`observe` then fails the refresh; direct callers of ``poll`` (actions,
    # ``sfops pg status``) still get the value with every member marked down.

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary: ...

    async def close(self) -> None: ...


async def observe(service: BackendService) -> Any:
    """One refresh under the liveness rule: the contact probe and the poll run together; a
    failed probe fails the refresh at once (the poll is abandoned), so a hung server costs
    ``contact_timeout``, not the poll's whole budget."""
    contact = asyncio.ensure_future(
        with_timeout(service.contact(), service.contact_timeout, f"{service.title} contact"))
    poll = asyncio.ensure_future(service.poll())
    try:
        try:
            await contact
        except BackendUnreachable:
            raise
        except Exception as exc:
            raise BackendUnreachable(describe_error(exc)) from exc
        # The contact probe is the breaker's half-open probe: the server answers again, so
        # the poll may go through now rather than after the breaker's reset timeout.
        breaker = service.breaker
        if breaker is not None and breaker.state is not BreakerState.CLOSED:
            breaker.reset()
        value = await poll
    finally:
        for task in (contact, poll):
            if task.done():
                _retrieve(task)  # e.g. a poll that failed too, after a failed contact
            else:
                task.cancel()
                task.add_done_callback(_retrieve)
        pending = [t for t in (contact, poll) if not t.done()]
        if pending:
            # Cancelled reads close their sockets at once; never wait long for one that doesn't.
            with contextlib.suppress(Exception):
                await asyncio.wait(pending, timeout=0.5)
    # A backend probed per member (PostgreSQL) is unreachable when no member answered.
    judge = getattr(service, "unreachable", None)
    if judge is not None and (reason := judge(value)) is not None:
        raise BackendUnreachable(reason, value)
    return value


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned poll's error is expected: never "never retrieved"


def summary_for_failure(name: str, title: str, snapshot: Snapshot[Any]) -> BackendSummary:
    """The summary of a backend whose polls fail and which has never answered."""
    return BackendSummary(
        name=name,
        title=title,
        health=Health.UNREACHABLE,
        alerts=(
            Alert(name, f"{name}-unreachable", Severity.CRITICAL,
                  f"{title} unreachable: {snapshot.error}", unreachable=True),
        ),
        error=snapshot.error,
        last_known=True,
    )


def summary_of(service: BackendService, snapshot: Snapshot[Any]) -> BackendSummary:
    """What the overview and ``sfops status`` show for one snapshot.

    After a failed contact or poll the backend reads UNREACHABLE — never the health of its
    last good value — its figures are marked last known, and the alerts of that old value are
    dropped (they may have cleared, or worse things may have happened): the one alert is that
    we cannot see it.
    """
    if snapshot.best is None:
        return summary_for_failure(service.name, service.title, snapshot)
    try:
        summary = service.summarize(snapshot)
    except Exception as exc:  # a summary bug must not blank the panel or kill polling
        return summary_for_failure(
            service.name, service.title,
            snapshot.failed(f"summary failed: {describe_error(exc)}"))
    if snapshot.ok:
        return summary
    stale = [Figure(f.label, f.value, Health.UNKNOWN) for f in summary.figures]
    alert = Alert(service.name, f"{service.name}-unreachable", Severity.CRITICAL,
                  f"{service.title} unreachable: {snapshot.error}", unreachable=True)
    return replace(summary, health=Health.UNREACHABLE, figures=tuple(stale), alerts=(alert,),
                   error=snapshot.error, last_known=True, spark_value=None)


def wrong_now(summaries: Iterable[BackendSummary]) -> list[Alert]:
    """Every alert, unreachable backends and members first, then by severity — and one line
    for every backend that is not OK but raised no alert, so the list never says "nothing is
    wrong" while a panel is not green."""
    alerts: list[Alert] = []
    for summary in summaries:
        alerts.extend(summary.alerts)
        if summary.health is not Health.OK and not summary.alerts:
            if summary.health is Health.UNKNOWN:
                message = f"{summary.title}: no answer yet"
                severity = Severity.WARNING
            else:
                message = f"{summary.title} is {summary.health.value}"
                severity = (Severity.WARNING if summary.health is Health.DEGRADED
                            else Severity.CRITICAL)
            alerts.append(Alert(summary.name, f"{summary.name}-{summary.health.value}",
                                severity, message,
                                unreachable=summary.health is Health.UNREACHABLE))
    return sorted(alerts, key=alert_order)


def alert_order(alert: Alert) -> tuple[bool, int]:
    """Sort key: unreachable first, then the most severe (stable within equal keys)."""
    return (not alert.unreachable, -alert.severity)


def since_text(first_seen: datetime, now: datetime) -> str:
    return duration_text((now - first_seen).total_seconds())


def duration_text(seconds: float) -> str:
    """"45s", "1m05s", "2h03m"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
