"""The nginx status value (what one poll saw) and the rules that derive member state."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from backends.nginx.accesslog import MemberTraffic
from backends.nginx.upstream import ServerEntry
from backends.service import Alert, BackendSummary, Figure, Severity
from backends.snapshot import Health

TITLE = "Load balancer"

# A member marked down that was still sent a request this recently is "draining", not
# "drained": in-flight requests on old workers are logged when they finish.
DRAIN_QUIET_SECONDS = 5.0
# 5xx answers from a member in the last TrafficWindow.recent seconds that make it "failing".
FAILING_5XX_THRESHOLD = 3


class MemberState(enum.StrEnum):
    UP = "up"
    DRAINING = "draining"  # marked down, but old workers or recent requests still use it
    DRAINED = "drained"  # marked down and quiet
    FAILING = "failing"  # not marked down, and its probe fails or it answers 5xx
    ABSENT = "absent"  # configured in sfops but not in the upstream block


STATE_HEALTH = {
    MemberState.UP: Health.OK,
    MemberState.DRAINING: Health.DEGRADED,
    MemberState.DRAINED: Health.UNKNOWN,  # intentionally out: neither good nor bad
    MemberState.FAILING: Health.FAILED,
    MemberState.ABSENT: Health.DEGRADED,
}


@dataclass(frozen=True)
class ProbeResult:
    """A direct GET of the member's health URL (bypassing nginx)."""

    ok: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None  # why it failed (connection refused, timeout, circuit open...)
    # The member's own word for a refusal: the "reason" of a JSON answer, as the API's
    # /health/ready gives it ("database unavailable"). Outside text: shown through safe_text.
    reason: str | None = None

    def describe(self) -> str:
        """"HTTP 503 (database unavailable)", "connection refused", "ok"."""
        text = self.error or ("ok" if self.ok else "failing")
        return f"{text} ({self.reason})" if self.reason else text


REASON_LIMIT = 80


def probe_reason(body: bytes, content_type: str | None) -> str | None:
    """The ``reason`` string of a small JSON answer, else None. Never raises: a member may
    answer anything."""
    if not body or len(body) > 4096 or "json" not in (content_type or "").lower():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        return None
    return reason.strip()[:REASON_LIMIT]


@dataclass(frozen=True)
class StubStatus:
    """nginx's global counters (``stub_status``)."""

    active: int
    accepts: int
    handled: int
    requests: int
    reading: int
    writing: int
    waiting: int


def parse_stub_status(text: str) -> StubStatus:
    """Parse::

        Active connections: 2
        server accepts handled requests
         10 10 25
        Reading: 0 Writing: 1 Waiting: 1
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    try:
        active = int(lines[0].split(":", 1)[1])
        accepts, handled, requests = (int(v) for v in lines[2].split())
        parts = lines[3].split()
        reading, writing, waiting = int(parts[1]), int(parts[3]), int(parts[5])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"unexpected stub_status output: {text[:120]!r}") from exc
    return StubStatus(active, accepts, handled, requests, reading, writing, waiting)


@dataclass(frozen=True)
class MemberStatus:
    name: str  # as in the sfops configuration (api-1)
    address: str  # as in the upstream's server line (127.0.0.1:15401)
    state: MemberState
    server: ServerEntry | None  # the configured parameters; None when absent
    probe: ProbeResult | None  # None when the member has no health_url
    traffic: MemberTraffic

    @property
    def health(self) -> Health:
        return STATE_HEALTH[self.state]

    @property
    def marked_down(self) -> bool:
        return self.server is not None and self.server.down

    @property
    def healthy(self) -> bool:
        """Serving and answering: what "the last healthy member" counts."""
        return (self.server is not None and not self.server.down
                and (self.probe is None or self.probe.ok))


@dataclass(frozen=True)
class NginxStatus:
    """One poll of nginx. ``taken_at`` is epoch seconds (the access log's clock)."""

    taken_at: float
    upstream_name: str
    members: tuple[MemberStatus, ...]
    stub: StubStatus | None  # None when stub_status is not configured
    old_workers: int  # worker processes "shutting down" after a reload (-1: unknown)
    log_window_s: float
    problems: tuple[str, ...] = ()  # partial failures (access log unreadable, ...)

    def member(self, name: str) -> MemberStatus | None:
        return next((m for m in self.members if m.name == name), None)

    def count(self, state: MemberState) -> int:
        return sum(1 for m in self.members if m.state is state)


def derive_state(
    server: ServerEntry | None,
    probe: ProbeResult | None,
    traffic: MemberTraffic,
    *,
    old_workers: int,
    now: float,
) -> MemberState:
    if server is None:
        return MemberState.ABSENT
    if server.down:
        recently_used = (traffic.last_request_at is not None
                         and now - traffic.last_request_at < DRAIN_QUIET_SECONDS)
        # Old workers finishing requests after a reload may be serving this member.
        if recently_used or old_workers > 0:
            return MemberState.DRAINING
        return MemberState.DRAINED
    if probe is not None and not probe.ok:
        return MemberState.FAILING
    if traffic.recent_5xx >= FAILING_5XX_THRESHOLD:
        return MemberState.FAILING
    return MemberState.UP


def summarize_status(status: NginxStatus, title: str = TITLE) -> BackendSummary:
    """The overview's summary of one good status (a failed refresh: backends.service)."""
    total = len(status.members)
    up = status.count(MemberState.UP)
    draining = status.count(MemberState.DRAINING)
    drained = status.count(MemberState.DRAINED)
    failing = status.count(MemberState.FAILING)
    absent = status.count(MemberState.ABSENT)
    alerts: list[Alert] = []
    for member in status.members:
        if member.state is MemberState.FAILING:
            probe = member.probe
            reason = (probe.describe() if probe is not None and not probe.ok
                      else f"{member.traffic.recent_5xx} recent 5xx")
            alerts.append(Alert("nginx", f"member-failing:{member.name}", Severity.CRITICAL,
                                f"{member.name} failing: {reason}"))
        elif member.state is MemberState.ABSENT:
            alerts.append(Alert("nginx", f"member-absent:{member.name}", Severity.WARNING,
                                f"{member.name} ({member.address}) is not in upstream "
                                f"{status.upstream_name}"))
        elif member.state in (MemberState.DRAINING, MemberState.DRAINED):
            alerts.append(Alert("nginx", f"member-{member.state.value}:{member.name}",
                                Severity.INFO, f"{member.name} {member.state.value}"))
    for problem in status.problems:
        alerts.append(Alert("nginx", f"problem:{problem[:40]}", Severity.WARNING, problem))
    if up == 0:
        health = Health.FAILED
        alerts.append(Alert("nginx", "no-member-up", Severity.CRITICAL,
                            f"no member of {status.upstream_name} is up"))
    elif failing or absent or status.problems:
        health = Health.DEGRADED
    else:
        health = Health.OK
    total_rps = sum(m.traffic.requests_per_s for m in status.members)
    total_5xx = sum(m.traffic.errors_5xx_per_s for m in status.members)
    figures = [
        Figure("up", f"{up}/{total}", Health.OK if up == total else
               (Health.FAILED if up == 0 else Health.DEGRADED)),
        Figure("draining/drained", f"{draining}/{drained}",
               Health.OK if not draining and not drained else Health.DEGRADED),
        Figure("failing", str(failing), Health.FAILED if failing else Health.OK),
        Figure("req/s", f"{total_rps:.1f}"),
        Figure("5xx/s", f"{total_5xx:.2f}", Health.DEGRADED if total_5xx > 0 else Health.OK),
    ]
    if status.stub is not None:
        figures.append(Figure("connections", str(status.stub.active)))
    return BackendSummary(
        name="nginx", title=title, health=health, figures=tuple(figures), alerts=tuple(alerts),
        spark_label="req/s", spark_value=total_rps,
    )
