"""Member state derivation, stub_status parsing and the overview summary."""

from __future__ import annotations

import pytest

from backends.nginx.accesslog import MemberTraffic
from backends.nginx.model import (
    MemberState,
    MemberStatus,
    NginxStatus,
    ProbeResult,
    derive_state,
    parse_stub_status,
    summarize_status,
)
from backends.nginx.upstream import ServerEntry
from backends.service import Severity
from backends.snapshot import Health

UP = ServerEntry("a:1")
DOWN = ServerEntry("a:1", down=True)
OK = ProbeResult(True, 200, 3.0)
BAD = ProbeResult(False, None, None, "ConnectError: refused")
NOW = 1000.0


def state(server: ServerEntry | None, probe: ProbeResult | None = OK,
          traffic: MemberTraffic | None = None, old_workers: int = 0) -> MemberState:
    return derive_state(server, probe, traffic or MemberTraffic(), old_workers=old_workers,
                        now=NOW)


def test_up_failing_absent() -> None:
    assert state(UP) is MemberState.UP
    assert state(UP, probe=None) is MemberState.UP  # no health_url: judged by traffic only
    assert state(UP, probe=BAD) is MemberState.FAILING
    assert state(UP, probe=ProbeResult(False, 503, 2.0, "HTTP 503")) is MemberState.FAILING
    assert state(UP, traffic=MemberTraffic(recent_5xx=3)) is MemberState.FAILING
    assert state(UP, traffic=MemberTraffic(recent_5xx=2)) is MemberState.UP
    assert state(None) is MemberState.ABSENT


def test_draining_vs_drained() -> None:
    assert state(DOWN) is MemberState.DRAINED
    assert state(DOWN, probe=BAD) is MemberState.DRAINED  # a drained member may be stopped
    assert state(DOWN, old_workers=1) is MemberState.DRAINING
    recent = MemberTraffic(last_request_at=NOW - 1.0)
    assert state(DOWN, traffic=recent) is MemberState.DRAINING
    quiet = MemberTraffic(last_request_at=NOW - 30.0)
    assert state(DOWN, traffic=quiet) is MemberState.DRAINED


def test_stub_status() -> None:
    stub = parse_stub_status(
        "Active connections: 2 \nserver accepts handled requests\n 10 11 25 \n"
        "Reading: 0 Writing: 1 Waiting: 1 \n")
    assert (stub.active, stub.accepts, stub.handled, stub.requests) == (2, 10, 11, 25)
    assert (stub.reading, stub.writing, stub.waiting) == (0, 1, 1)
    with pytest.raises(ValueError, match="unexpected stub_status"):
        parse_stub_status("<html>502</html>")


def member(name: str, st: MemberState, probe: ProbeResult | None = OK,
           server: ServerEntry | None = UP) -> MemberStatus:
    return MemberStatus(name, f"{name}:1", st, server, probe, MemberTraffic(requests_per_s=1.0))


def status(*members: MemberStatus) -> NginxStatus:
    return NginxStatus(NOW, "api_backend", tuple(members), None, 0, 30.0)


def test_summary_health_and_alerts() -> None:
    healthy = summarize_status(status(member("a", MemberState.UP), member("b", MemberState.UP)))
    assert healthy.health is Health.OK
    assert healthy.alerts == ()
    assert healthy.figures[0].value == "2/2"
    assert healthy.spark_value == pytest.approx(2.0)

    failing = summarize_status(status(member("a", MemberState.UP),
                                      member("b", MemberState.FAILING, probe=BAD)))
    assert failing.health is Health.DEGRADED
    assert [(a.key, a.severity) for a in failing.alerts] == [
        ("member-failing:b", Severity.CRITICAL)]
    assert "refused" in failing.alerts[0].message

    drained = summarize_status(status(member("a", MemberState.UP),
                                      member("b", MemberState.DRAINED, server=DOWN)))
    assert drained.health is Health.OK  # planned maintenance is not an incident
    assert drained.alerts[0].severity is Severity.INFO

    none_up = summarize_status(status(member("a", MemberState.DRAINED, server=DOWN)))
    assert none_up.health is Health.FAILED
    assert any(a.key == "no-member-up" for a in none_up.alerts)

