"""Read-only is least privilege, checked on the lab's real servers.

Kubernetes: the API server's audit log (deploy/lab/k8s.py turns it on, Metadata for every
request) says who asked for what. sfops's requests carry the user agent ``sfops``; in read-only
mode — the TUI, ``sfops status``, ``sfops k8s status`` — every one of them is a get, list or
watch by the read-only ServiceAccount, and the operator's never appears. Outside read-only
mode the actions (and their Leases) are the operator's, the reads still the read-only one's.

PostgreSQL: the poll sessions are the non-superuser monitoring role, in read-only sessions;
the actions (tests/integration/test_pg.py) run as the operator role.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backends.config import SfopsConfig, load
from deploy.lab import k8s
from deploy.lab import postgres as lab_postgres
from tests.integration.test_k8s import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.k8s]

READONLY_SA = f"system:serviceaccount:{k8s.NAMESPACE}:sfops"
OPERATOR_SA = f"system:serviceaccount:{k8s.NAMESPACE}:sfops-operator"
READ_VERBS = {"get", "list", "watch"}
SFOPS_AGENT = "sfops"  # backends/kubernetes/client.py sends it with every request


# ----------------------------------------------------------------------------- helpers


def now_utc() -> datetime:
    return datetime.now(UTC)


def audit_events(lab: Any, since: datetime) -> list[dict[str, Any]]:
    """Every audit event received at or after ``since`` (the live file and its backup)."""
    events: list[dict[str, Any]] = []
    for path in sorted(k8s.audit_log(lab.lab).parent.glob("audit*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            received = datetime.fromisoformat(event["requestReceivedTimestamp"])
            if received >= since:
                events.append(event)
    return events


def sfops_events(lab: Any, since: datetime) -> list[dict[str, Any]]:
    return [e for e in audit_events(lab, since) if e.get("userAgent") == SFOPS_AGENT]


def resources(events: list[dict[str, Any]], verb: str) -> set[str]:
    return {e["objectRef"]["resource"] for e in events
            if e["verb"] == verb and e.get("objectRef")}


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted({(e["user"]["username"], e["verb"], e["requestURI"].split("?")[0])
                   for e in events})


@pytest.fixture(scope="module")
def full_lab(lab: Any) -> Iterator[Any]:
    lab.ensure("pg", "k8s")
    assert k8s.audit_log(lab.lab).exists(), (
        "the lab's API server writes no audit log (started before deploy/lab/k8s.py turned it "
        "on): `sfops lab stop kube-apiserver`, then `sfops lab start kube-apiserver`")
    yield lab


@pytest.fixture(scope="module")
def config_path(full_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's configuration (read-only and operator identities, [postgres] and
    [kubernetes]) with an audit log and state of its own."""
    text = full_lab.config_path.read_text()
    path = tmp_path_factory.mktemp("least") / "sfops.toml"
    config = load(full_lab.config_path)
    text = text.replace(str(config.sfops.audit_log), str(path.parent / "audit.jsonl"))
    text = text.replace(str(config.sfops.state_dir), str(path.parent / "state"))
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- Kubernetes


def test_read_only_cli_reads_as_the_read_only_account_and_never_mutates(
        full_lab: Any, config_path: Path) -> None:
    since = now_utc()
    for args in (("k8s", "status", "--json"), ("status", "-o", "json")):
        done = _sfops(full_lab, config_path, "--read-only", *args)
        # Healthy or not (the lab's config may name backends that are down now): it ran.
        assert done.returncode in (0, 1, 5), (args, done.stderr)
        assert json.loads(done.stdout)
    # A mutating command in read-only mode is refused before any request.
    refused = _sfops(full_lab, config_path, "--read-only", "k8s", "restart", k8s.DEPLOYMENT,
                     "--yes")
    assert refused.returncode == 4, refused.stderr

    events = wait_for("sfops's list and watch requests in the audit log",
                      lambda: (lambda ev: ev if resources(ev, "watch") >= {
                          "deployments", "pods", "nodes"} else None)(
                          sfops_events(full_lab, since)), timeout=30.0)
    users = {e["user"]["username"] for e in events}
    verbs = {e["verb"] for e in events}
    print(f"read-only CLI: {len(events)} requests, verbs {sorted(verbs)}, users {users}")
    assert users == {READONLY_SA}, summary(events)
    assert verbs <= READ_VERBS, summary(events)
    assert resources(events, "list") == {"deployments", "replicasets", "pods", "nodes",
                                         "poddisruptionbudgets", "events"}
    everyone = audit_events(full_lab, since)
    assert not [e for e in everyone if e["user"]["username"] == OPERATOR_SA], \
        summary([e for e in everyone if e["user"]["username"] == OPERATOR_SA])
    assert not [e for e in everyone if e["user"]["username"] == READONLY_SA
                and e["verb"] not in READ_VERBS]


async def test_read_only_tui_reads_as_the_read_only_account_and_never_mutates(
        full_lab: Any, config_path: Path, tmp_path: Path) -> None:
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.locks import manager_for
    from backends.services import build_services
    from tui.app import SfopsApp
    from tui.virtualtable import VirtualTable

    # What `sfops --read-only` builds (tui/commands/ui.py).
    config: SfopsConfig = load(config_path).as_read_only()
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"), read_only=True,
                          locks=manager_for(config))
    since = now_utc()
    app = SfopsApp(config, build_services(config), runner=runner)
    async with app.run_test(size=(80, 24)) as pilot:
        await _until(lambda: {"kubernetes", "postgres"} <= set(app.snapshots), 30,
                     "the first polls")
        order = [s.name for s in app.services]
        await pilot.press(str(order.index("kubernetes") + 1))
        await _until(lambda: app.screen.query_one("#table", VirtualTable).row_count > 3, 30,
                     "the kubernetes table")
        table = app.screen.query_one("#table", VirtualTable)
        table.move_cursor(row=table.get_row_index(f"deploy:{k8s.NAMESPACE}/{k8s.DEPLOYMENT}"))
        for key in ("R", "U", "p", "P", "plus", "minus", "c", "C", "D", "r"):
            await pilot.press(key)
        await pilot.press("escape")
        await pilot.press(str(order.index("postgres") + 1))
        for key in ("f", "s", "j", "r"):
            await pilot.press(key)
        # A few more refreshes, so the watches and probes have run a while.
        polled = app.snapshots["kubernetes"].taken_at
        await _until(lambda: app.snapshots["kubernetes"].taken_at > polled, 30,
                     "another kubernetes refresh")
        assert len(app.screen_stack) == 2  # no dialog was opened
    events = await asyncio.to_thread(
        wait_for, "the TUI's watches in the audit log",
        lambda: (lambda ev: ev if resources(ev, "watch") >= {"deployments", "pods", "nodes"}
                 else None)(sfops_events(full_lab, since)))
    verbs = {e["verb"] for e in events}
    print(f"read-only TUI: {len(events)} requests, verbs {sorted(verbs)}")
    assert {e["user"]["username"] for e in events} == {READONLY_SA}, summary(events)
    assert verbs <= READ_VERBS, summary(events)
    assert not [e for e in audit_events(full_lab, since)
                if e["user"]["username"] == OPERATOR_SA]


def test_actions_act_as_the_operator_and_reads_stay_read_only(full_lab: Any,
                                                               config_path: Path) -> None:
    since = now_utc()
    try:
        for command in ("pause", "resume"):
            done = _sfops(full_lab, config_path, "k8s", command, k8s.DEPLOYMENT, "--yes")
            assert done.returncode == 0, (command, done.stderr)
    finally:
        k8s.kubectl(full_lab.lab, "-n", k8s.NAMESPACE, "patch", "deployment",
                    k8s.DEPLOYMENT, "--type=merge", "-p", '{"spec":{"paused":false}}')
    events = wait_for("the two patches in the audit log", lambda: (
        lambda ev: ev if len([e for e in ev if e["verb"] == "patch"]) >= 2 else None)(
            sfops_events(full_lab, since)), timeout=30.0)
    writes = [e for e in events if e["verb"] not in READ_VERBS]
    print(f"actions: {summary(writes)}")
    assert {e["user"]["username"] for e in writes} == {OPERATOR_SA}, summary(writes)
    assert {"deployments", "leases"} <= {e["objectRef"]["resource"] for e in writes}
    assert not [e for e in events if e["user"]["username"] == READONLY_SA
                and e["verb"] not in READ_VERBS]


def _sfops(lab: Any, config: Path, *args: str) -> Any:
    import subprocess
    import sys

    from tests.conftest import REPO

    return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
                          stdin=subprocess.DEVNULL)


async def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # the screen may not be built yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- PostgreSQL


def superuser(lab: Any, member: str = "pg-1") -> psycopg.Connection[Any]:
    component = lab.component(member)
    return psycopg.connect(**component.superuser_conninfo(lab.lab), autocommit=True)


SESSION_SQL = """
SELECT current_user AS usename,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS rolsuper,
       current_setting('default_transaction_read_only') AS default_read_only,
       current_setting('transaction_read_only') AS read_only,
       pg_has_role(current_user, 'pg_monitor', 'MEMBER') AS monitor
"""


async def _poll_sessions(config: SfopsConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll once, then ask each member, over the poll's own sessions, who they are."""
    from backends.postgres.service import build_service

    service = build_service(config)
    assert service is not None
    try:
        status = await service.poll(use_breaker=False)
        sessions = [await service.connection(name).fetchone(SESSION_SQL, what="session")
                    for name in service.connections]
        return {"members": [(m.name, m.reachable, m.error, m.timeline, m.system_identifier)
                            for m in status.members]}, sessions
    finally:
        await service.close()


def test_postgres_polls_run_read_only_as_a_non_superuser_monitor(full_lab: Any,
                                                                 config_path: Path) -> None:
    config = load(config_path).as_read_only()
    status, sessions = asyncio.run(_poll_sessions(config))
    # Every figure of the status is read under pg_monitor (nothing missing, nothing failed).
    for name, reachable, error, timeline, system_identifier in status["members"]:
        assert reachable and error is None, (name, error)
        assert timeline and system_identifier, name
    for session in sessions:
        assert session == {"usename": "sfops_monitor", "rolsuper": False,
                           "default_read_only": "on", "read_only": "on", "monitor": True}

    # Seen from the server: the poll connections (application_name sfops) while a status runs.
    done = _sfops(full_lab, config_path, "--read-only", "pg", "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["status"]
    assert all(m["reachable"] for m in data["members"])
    assert {m["role"] for m in data["members"]} == {"primary", "standby"}
    assert any(m["slots"] for m in data["members"]) and any(
        m["standbys"] for m in data["members"])


def test_a_poll_session_refuses_writes_even_as_a_superuser(full_lab: Any,
                                                          config_path: Path) -> None:
    """No read-only identity configured: polls fall back to ``user`` (a superuser in the lab),
    still in read-only sessions."""
    from backends.postgres.service import build_service

    config = load(config_path)
    section = dataclasses.replace(config.postgres, readonly_user=None, readonly_password=None)
    config = config.with_section("postgres", section)

    async def scenario() -> tuple[dict[str, Any], str]:
        service = build_service(config)
        assert service is not None
        try:
            connection = service.connection("pg-1")
            session = await connection.fetchone(SESSION_SQL, what="session")
            try:
                await connection.fetch("CREATE TEMP TABLE sfops_probe (a int)", what="write")
            except Exception as exc:
                return session, str(exc)
            return session, ""
        finally:
            await service.close()

    session, error = asyncio.run(scenario())
    assert session["usename"] == "sfops" and session["rolsuper"] is True
    assert session["default_read_only"] == "on"
    assert "read-only transaction" in error


def test_poll_connections_seen_by_the_server_are_the_monitor(full_lab: Any,
                                                             config_path: Path) -> None:
    from backends.postgres.service import build_service

    config = load(config_path)

    async def scenario() -> list[tuple[Any, ...]]:
        service = build_service(config)
        assert service is not None
        try:
            await service.poll(use_breaker=False)  # the connections stay open
            with superuser(full_lab) as conn:
                return conn.execute(
                    "SELECT a.usename, r.rolsuper FROM pg_stat_activity a "
                    "JOIN pg_roles r ON r.rolname = a.usename "
                    "WHERE a.application_name = 'sfops' AND a.pid <> pg_backend_pid()"
                ).fetchall()
        finally:
            await service.close()

    rows = asyncio.run(scenario())
    assert rows and set(rows) == {("sfops_monitor", False)}, rows
    assert lab_postgres.secret_path(full_lab.lab, "sfops_monitor").exists()
