"""`sfops pg` against the lab's real PostgreSQL pair (and, for the failover and switchover
tests, the API workers behind nginx). Nothing is faked.

Every test starts from pg-1 primary / pg-2 streaming standby (``reset_pg``: switchover back,
rejoin, or as a last resort rebuild both) and may leave any topology behind; the module
ends with a reset so later modules find the lab as the session fixture made it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from deploy.lab import nginx as lab_nginx
from deploy.lab import postgres as lab_postgres
from deploy.lab import procs
from deploy.lab.core import LabError

pytestmark = pytest.mark.integration

BOUND = 15.0  # seconds: the most a command may take against a hung member


# --------------------------------------------------------------------------- helpers


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (httpx.HTTPError, psycopg.Error) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"{what}: not true after {timeout:.0f}s (last: {last!r})")


@contextmanager
def superuser(lab: Any, member: str) -> Iterator[psycopg.Connection[Any]]:
    info = {**lab.component(member).superuser_conninfo(lab.lab), "dbname": "streamforge"}
    with psycopg.connect(**info, autocommit=True) as conn:
        yield conn


def sql(lab: Any, member: str, statement: str, params: Any = None) -> Any:
    with superuser(lab, member) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def pg(lab: Any, *args: str, timeout: float = 180.0) -> tuple[int, Any, str]:
    """Run `sfops pg ARGS`; (exit code, parsed JSON stdout or the text, stderr)."""
    if "--json" in args:
        return lab.sfops_json("pg", *args, timeout=timeout)  # type: ignore[no-any-return]
    done = lab.sfops("pg", *args, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def status(lab: Any) -> dict[str, Any]:
    """The cluster part of `sfops pg status --json` (the generic envelope's ``status``)."""
    _, data, _ = pg(lab, "status", "--json")
    assert data["backend"] == "postgres", data
    return data["status"]


def member(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in data["members"] if m["name"] == name)


def streams_from(data: dict[str, Any], standby: str, primary: str) -> bool:
    s, p = member(data, standby), member(data, primary)
    receiver = s.get("wal_receiver") or {}
    return (p["role"] == "primary" and s["role"] == "standby" and s["reachable"]
            and receiver.get("status") == "streaming" and s["timeline"] == p["timeline"])


def action(lab: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    code, data, err = pg(lab, *args, "--yes", "--json")
    return code, data, err


def audit_records(lab: Any) -> list[dict[str, Any]]:
    path = Path(lab.config().sfops.audit_log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_bytes(lab: Any, member_name: str, megabytes: float) -> int:
    """Insert rows worth about ``megabytes`` of WAL on the primary; returns the row count."""
    rows = int(megabytes * 1024)  # ~1 KiB payload each
    sql(lab, member_name,
        "INSERT INTO events(payload, served_by) SELECT jsonb_build_object('pad', "
        "repeat(md5(g::text), 32)), 'test-bulk' FROM generate_series(1, %s) g", (rows,))
    return rows


def pgroup_signal(lab: Any, name: str, sig: int) -> None:
    pid = lab.pid(name)
    assert pid is not None, f"{name} is not running"
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _clear_state(lab: Any) -> None:
    state = Path(lab.config().sfops.state_dir) / "postgres.json"
    state.unlink(missing_ok=True)


def _rebuild(lab: Any) -> None:
    lab.stop("pg-2")
    lab.stop("pg-1")
    lab_postgres.wipe(lab.lab)
    _clear_state(lab)
    lab.ensure("pg")


def _start_members(lab: Any) -> None:
    """Start members a test left stopped (fenced ones come up as standbys). Not
    ``lab.ensure("pg")``: its after-start step (init-primary.sh) needs pg-1 to be primary."""
    for name in ("pg-1", "pg-2"):
        if not lab.running(name):
            lab.start(name)


def reset_pg(lab: Any) -> None:
    """pg-1 primary, pg-2 streaming from it, replay running, nothing fenced."""
    _start_members(lab)
    for name in ("pg-1", "pg-2"):
        try:
            if sql(lab, name, "SELECT pg_is_in_recovery()")[0][0]:
                sql(lab, name, "SELECT pg_wal_replay_resume()")
        except psycopg.Error:
            pass
    try:
        data = status(lab)
        if streams_from(data, "pg-2", "pg-1") and not data["fenced"]:
            return
        if member(data, "pg-1")["role"] == "primary":
            code, out, err = action(lab, "rejoin", "pg-2")
            assert code == 0, (out, err)
        elif member(data, "pg-2")["role"] == "primary":
            if not streams_from(data, "pg-1", "pg-2") or data["fenced"]:
                code, out, err = action(lab, "rejoin", "pg-1")
                assert code == 0, (out, err)
            code, out, err = action(lab, "switchover", "--to", "pg-1")
            assert code == 0, (out, err)
        data = wait_for(lambda: (d := status(lab)) and streams_from(d, "pg-2", "pg-1") and d,
                        30, "pg-2 streaming from pg-1")
        assert not data["fenced"]
    except (AssertionError, pytest.fail.Exception):
        _rebuild(lab)  # last resort: a fresh pair, exactly as the lab makes it
        wait_for(lambda: streams_from(status(lab), "pg-2", "pg-1"), 60, "rebuilt pair")


@pytest.fixture(scope="module")
def pg_lab(lab: Any) -> Iterator[Any]:
    try:
        lab.ensure("pg")
    except LabError:
        _start_members(lab)  # pg-1 is not the primary (an earlier run): reset_pg fixes it
    reset_pg(lab)
    yield lab
    reset_pg(lab)


@pytest.fixture
def fresh(pg_lab: Any) -> Any:
    reset_pg(pg_lab)
    return pg_lab


@pytest.fixture(scope="module")
def web(pg_lab: Any) -> Any:
    # "pg" too: `lab up --only api,nginx` would rewrite sfops.toml without [postgres]. Runs
    # after ``fresh`` (argument order), so pg-1 is the primary init-primary.sh expects.
    pg_lab.ensure("pg", "api", "nginx")
    return pg_lab


def nginx_url(lab: Any) -> str:
    return f"http://127.0.0.1:{lab.port(lab_nginx.PORT_OFFSET)}"


class Writer:
    """POSTs /events through nginx at a steady rate; remembers every acknowledged id."""

    def __init__(self, lab: Any, rate: float = 40.0) -> None:
        self.url = nginx_url(lab)
        self.interval = 1.0 / rate
        self.acknowledged: list[int] = []
        self.failures = 0
        self.first_failure: float | None = None
        self.last_failure: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            index = 0
            while not self._stop.is_set():
                index += 1
                try:
                    response = client.post("/events", json={"writer": index})
                    ok = response.status_code == 201
                    if ok:
                        self.acknowledged.append(int(response.json()["id"]))
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    now = time.monotonic()
                    self.failures += 1
                    self.first_failure = self.first_failure or now
                    self.last_failure = now
                self._stop.wait(self.interval)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def missing_ids(lab: Any, member_name: str, ids: list[int]) -> set[int]:
    rows = sql(lab, member_name, "SELECT id FROM events WHERE id = ANY(%s)", (ids,))
    return set(ids) - {row[0] for row in rows}


# --------------------------------------------------------------------------- read side


def test_status_shows_roles_and_lag_follows_paused_replay(fresh: Any) -> None:
    data = wait_for(lambda: (d := status(fresh)) and streams_from(d, "pg-2", "pg-1") and d,
                    30, "pg-2 streaming")
    assert data["primary"] == "pg-1"
    # Every standby's primary_conninfo is in the JSON with any password redacted.
    conninfo = member(data, "pg-2")["primary_conninfo"]
    assert conninfo and ("password=" not in conninfo or "password=***" in conninfo)
    p1, p2 = member(data, "pg-1"), member(data, "pg-2")
    assert p1["role"] == "primary" and p2["role"] == "standby"
    assert [s["application_name"] for s in p1["standbys"]] == ["pg-2"]
    assert any(s["slot_name"] == "pg_2" and s["active"] for s in p1["slots"])
    assert p1["max_connections"] >= p1["connections"] >= 1

    sql(fresh, "pg-2", "SELECT pg_wal_replay_pause()")
    try:
        write_bytes(fresh, "pg-1", 1)

        def lagging() -> dict[str, Any] | None:
            m = member(status(fresh), "pg-2")
            return m if m["replay_paused"] and (m["replication_lag_bytes"] or 0) > 0 else None

        lagging_member = wait_for(lagging, 20, "lag > 0 with replay paused")
        # What was received is ahead of what was replayed: the standby has the WAL.
        assert lagging_member["received_lsn"] != lagging_member["replayed_lsn"]
        _, text, _ = pg(fresh, "status")
        assert "replay paused" in text
    finally:
        sql(fresh, "pg-2", "SELECT pg_wal_replay_resume()")

    def caught_up() -> bool:
        m = member(status(fresh), "pg-2")
        return m["replication_lag_bytes"] == 0 and m["replication_lag_seconds"] == 0

    wait_for(caught_up, 20, "lag back to 0 B / 0 s after resume")


# --------------------------------------------------------------------------- failover


def test_failover_after_kill_fences_old_primary_and_rejoin_restores_it(fresh: Any,
                                                                     web: Any) -> None:
    before = status(fresh)
    old_timeline = member(before, "pg-1")["timeline"]
    with httpx.Client(base_url=nginx_url(fresh), timeout=10.0) as client:
        wait_for(lambda: client.post("/events", json={"phase": "before"}).status_code == 201,
                 30, "API writes through nginx before the failover")
        fresh.stop("pg-1", kill=True)
        started = time.monotonic()
        code, result, err = action(fresh, "failover", "--to", "pg-2")
        assert code == 0, (result, err)
        assert result["outcome"] == "succeeded" and result["forced"] is False
        checks = {c["name"]: c["status"] for c in result["preflight"]}
        assert checks["primary unreachable"] == "pass"
        assert checks["lag within max_lag_on_failover"] == "pass"
        after = status(fresh)
        assert after["primary"] == "pg-2"
        assert member(after, "pg-2")["timeline"] > old_timeline
        # The API follows the new primary by itself (multi-host conninfo), no restart.
        wait_for(lambda: client.post("/events", json={"phase": "after"}).status_code == 201,
                 30, "API writes through nginx after the failover")
        print(f"failover + first API write: {time.monotonic() - started:.1f}s")
        assert member(after, "pg-1")["fenced"] is True

    # The old primary comes back: fenced, it must not take writes.
    fresh.start("pg-1")
    assert sql(fresh, "pg-1", "SELECT pg_is_in_recovery()")[0][0] is True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(fresh, "pg-1", "INSERT INTO events(payload, served_by) VALUES ('{}', 'fenced')")
    data = status(fresh)
    assert member(data, "pg-1")["fenced"] is True
    assert any(w["kind"] == "fenced" and w["member"] == "pg-1" for w in data["warnings"])

    code, result, err = action(fresh, "rejoin", "pg-1")
    assert code == 0, (result, err)
    data = wait_for(lambda: (d := status(fresh)) and streams_from(d, "pg-1", "pg-2") and d,
                    30, "pg-1 streaming from pg-2")
    assert not data["fenced"]


def lab_command(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`sfops lab ARGS` on the test lab."""
    return lab.sfops("lab", "--dir", str(lab.dir), *args)


def test_failover_from_a_hung_primary_fences_it_first_and_it_never_writes_again(
        fresh: Any) -> None:
    status(fresh)  # sfops sees the primary's position (the TUI polls it continuously)
    hung = lab_command(fresh, "hang", "pg-1")
    assert hung.returncode == 0, hung.stdout + hung.stderr
    pids = [int(p) for p in hung.stdout.split("SIGSTOP to pid", 1)[1].strip(" )\n").split(",")]
    stopped = {pid: procs.read_stat(pid) for pid in pids}
    assert all(stat is not None and stat.state in ("T", "t") for stat in stopped.values())

    # As an operator: the preflight, then confirmation typed in; the runner re-checks only.
    started = time.monotonic()
    done = fresh.sfops("pg", "failover", "--to", "pg-2", "--json", input="pg-2\n",
                       timeout=180)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "succeeded" and result["forced"] is False
    checks = {c["name"]: c["status"] for c in result["preflight"]}
    assert checks["primary unreachable"] == "pass"
    assert checks["re-check: primary unreachable"] == "pass"
    assert {c["name"]: c["status"] for c in result["verify"]}["old primary fenced"] == "pass"
    steps = [line.strip() for line in done.stderr.splitlines()]
    killed = next(i for i, line in enumerate(steps) if "SIGKILLed" in line)
    promoting = next(i for i, line in enumerate(steps) if "promoting (pg_promote" in line)
    assert killed < promoting, "pg-1 must be fenced before pg-2 is promoted"
    accepted = next(line for line in steps if "accepts writes" in line and "confirmation" in line)
    print(f"hung-primary failover: {accepted!r}; whole command {elapsed:.1f}s")

    # The new primary takes a write.
    rows = sql(fresh, "pg-2", "INSERT INTO events(payload, served_by) VALUES ('{}', "
               "'after-hung-failover') RETURNING id")
    assert rows and rows[0][0]

    # pg-1 resumes: the SIGKILL reached every stopped process, none of them runs again...
    resumed = lab_command(fresh, "resume", "pg-1")
    assert resumed.returncode == 0 or "not running" in resumed.stdout + resumed.stderr, (
        resumed.stdout + resumed.stderr)
    for pid, before in stopped.items():
        now = procs.read_stat(pid)
        assert now is None or now.exited or (before is not None and now.start_ticks
                                             != before.start_ticks), f"pid {pid} still runs"
    with pytest.raises(psycopg.OperationalError):
        sql(fresh, "pg-1", "INSERT INTO events(payload, served_by) VALUES ('{}', 'resumed')")
    # ...and restarted (a supervisor would), it comes up read-only: standby.signal.
    fresh.start("pg-1")
    assert sql(fresh, "pg-1", "SELECT pg_is_in_recovery()")[0][0] is True
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(fresh, "pg-1", "INSERT INTO events(payload, served_by) VALUES ('{}', 'fenced')")
    data = status(fresh)
    assert data["primary"] == "pg-2" and member(data, "pg-1")["fenced"] is True


def test_failover_refused_when_received_wal_lags_and_forced_is_audited(fresh: Any) -> None:
    # Stop pg-2's WAL receiver: what it *received* falls behind, not only its replay.
    sql(fresh, "pg-2", "ALTER SYSTEM SET primary_conninfo = ''")
    sql(fresh, "pg-2", "SELECT pg_reload_conf()")
    wait_for(lambda: not sql(fresh, "pg-2", "SELECT 1 FROM pg_stat_wal_receiver"), 20,
             "pg-2's WAL receiver stopped")
    write_bytes(fresh, "pg-1", 3)
    status(fresh)  # sfops sees the primary's position (the TUI polls it continuously)
    fresh.stop("pg-1", kill=True)

    code, result, err = action(fresh, "failover", "--to", "pg-2")
    assert code == 3, (result, err)
    assert result["outcome"] == "refused"
    lag_check = next(c for c in result["preflight"]
                     if c["name"] == "lag within max_lag_on_failover")
    assert lag_check["status"] == "fail" and "MiB" in lag_check["detail"]
    assert status(fresh)["primary"] is None  # refused: nothing was promoted

    code, result, err = action(fresh, "failover", "--to", "pg-2", "--force")
    assert code == 0, (result, err)
    assert result["outcome"] == "succeeded" and result["forced"] is True
    record = audit_records(fresh)[-1]
    assert record["action"] == "pg.failover" and record["forced"] is True
    assert record["outcome"] == "succeeded"
    assert status(fresh)["primary"] == "pg-2"
    # Put pg-2's own setting back for the rest of the module (reset_pg rejoins pg-1).
    sql(fresh, "pg-2", "ALTER SYSTEM RESET primary_conninfo")


def test_failover_with_replay_merely_paused_passes_and_loses_nothing(fresh: Any) -> None:
    sql(fresh, "pg-2", "SELECT pg_wal_replay_pause()")
    write_bytes(fresh, "pg-1", 3)
    expected = sql(fresh, "pg-1", "SELECT count(*) FROM events")[0][0]
    target = sql(fresh, "pg-1", "SELECT pg_current_wal_lsn()::text")[0][0]

    def received_all() -> bool:
        return bool(sql(fresh, "pg-2", "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn",
                        (target,))[0][0])

    wait_for(received_all, 20, "pg-2 received everything")
    data = status(fresh)
    assert (member(data, "pg-2")["replication_lag_bytes"] or 0) > 0  # replay is behind
    fresh.stop("pg-1", kill=True)
    code, result, err = action(fresh, "failover", "--to", "pg-2")
    assert code == 0, (result, err)
    assert result["forced"] is False
    assert sql(fresh, "pg-2", "SELECT count(*) FROM events")[0][0] == expected


# --------------------------------------------------------------------------- switchover


def test_switchover_with_a_writer_loses_no_acknowledged_write_and_back(fresh: Any,
                                                                      web: Any) -> None:
    with httpx.Client(base_url=nginx_url(fresh), timeout=10.0) as client:
        wait_for(lambda: client.post("/events", json={"w": 0}).status_code == 201, 30,
                 "API writes through nginx")
    for new, old in (("pg-2", "pg-1"), ("pg-1", "pg-2")):
        with Writer(fresh) as writer:
            time.sleep(1.0)
            code, result, err = action(fresh, "switchover", "--to", new)
            assert code == 0, (result, err)
            count = len(writer.acknowledged)
            wait_for(lambda w=writer, c=count: len(w.acknowledged) > c + 20, 30,
                     "acknowledged writes after the switchover")
        assert writer.acknowledged, "the writer got no write acknowledged"
        assert missing_ids(fresh, new, writer.acknowledged) == set()
        data = status(fresh)
        assert data["primary"] == new and streams_from(data, old, new)
        outage = ((writer.last_failure or 0) - (writer.first_failure or 0)
                  if writer.failures else 0.0)
        print(f"switchover to {new}: {len(writer.acknowledged)} acknowledged, "
              f"{writer.failures} failed, outage window {outage:.1f}s")


# --------------------------------------------------------------------------- bad inputs


def test_unknown_member_is_refused(fresh: Any) -> None:
    for args in (("failover", "--to", "pg-9"), ("switchover", "--to", "pg-9"),
                 ("rejoin", "pg-9")):
        code, result, err = action(fresh, *args)
        assert code == 3, (args, result, err)
        assert "unknown member 'pg-9'" in (result["error"] or "")


def test_failover_while_primary_is_healthy_is_refused_even_forced(fresh: Any) -> None:
    code, result, err = action(fresh, "failover", "--to", "pg-2")
    assert code == 3, (result, err)
    assert "switchover" in result["error"]
    code, result, err = action(fresh, "failover", "--to", "pg-2", "--force")
    assert code == 1, (result, err)
    assert "refused even with --force" in result["error"]
    data = status(fresh)
    assert data["primary"] == "pg-1" and streams_from(data, "pg-2", "pg-1")


def test_wrong_password_gives_a_clear_error_without_the_secret(fresh: Any,
                                                               tmp_path: Path) -> None:
    wrong = "Wr0ng-s3cret-" + os.urandom(4).hex()
    (tmp_path / "pw").write_text(wrong + "\n")
    real = lab_postgres.secret_path(fresh.lab, "sfops").read_text().strip()
    real_monitor = lab_postgres.secret_path(fresh.lab, "sfops_monitor").read_text().strip()
    # Both identities: the polls' (the monitor role) and the actions' (the operator role).
    text = fresh.config_path.read_text()
    for role in ("sfops_monitor", "sfops"):
        text = text.replace(str(lab_postgres.secret_path(fresh.lab, role)), str(tmp_path / "pw"))
    config = tmp_path / "sfops.toml"
    config.write_text(text)
    for args in (("pg", "status", "--json"), ("pg", "status")):
        done = fresh.sfops("--config", str(config), *args)
        output = done.stdout + done.stderr
        assert done.returncode == 5, output
        assert "password authentication failed" in output
        assert wrong not in output and real not in output and real_monitor not in output
        if "--json" in args:
            # No member answers: unreachable, and still every member, each marked down.
            data = json.loads(done.stdout)
            assert data["reachable"] is False and data["exit_code"] == 5
            assert [m["name"] for m in data["status"]["members"]] == ["pg-1", "pg-2"]
            assert not any(m["reachable"] for m in data["status"]["members"])
        else:
            rows = {line.split()[0]: line for line in done.stdout.splitlines()
                    if line.startswith("pg-")}
            assert set(rows) == {"pg-1", "pg-2"}, done.stdout
            assert all(line.split()[1] == "down" for line in rows.values()), done.stdout


def test_hung_member_during_preflight_is_bounded(fresh: Any) -> None:
    pgroup_signal(fresh, "pg-2", signal.SIGSTOP)
    try:
        started = time.monotonic()
        data = status(fresh)
        assert time.monotonic() - started < BOUND
        hung = member(data, "pg-2")
        assert hung["reachable"] is False and "timeout" in hung["error"]
        assert member(data, "pg-1")["role"] == "primary"  # the other member still reported

        started = time.monotonic()
        code, result, err = action(fresh, "switchover", "--to", "pg-2")
        assert time.monotonic() - started < BOUND
        assert code == 3, (result, err)
        assert "candidate in recovery" in result["error"]
    finally:
        pgroup_signal(fresh, "pg-2", signal.SIGCONT)
    assert status(fresh)["primary"] == "pg-1"


# --------------------------------------------------------------------------- detection


def test_a_killed_primary_is_shown_down_by_the_poll_its_watch_woke(fresh: Any) -> None:
    """The poll interval is 600 s: only the watch (issue 18) can make pg-1 read down before
    it. As the TUI wires it, ``on_lost`` wakes the poll job; the poll that shows pg-1 down is
    the one right after the kill, and it was woken."""
    import asyncio

    from backends.config import load
    from backends.postgres.service import build_service
    from backends.resilience import Poller

    config = load(fresh.config_path)
    assert config.postgres is not None
    monitor = config.postgres.readonly_identity.user
    watch_sql = ("SELECT usename, state FROM pg_stat_activity "
                 "WHERE application_name = 'sfops-watch'")

    def pg1(snapshot: Any) -> str:
        summary = service.summarize(snapshot)
        return next((f.value for f in summary.figures if f.label == "pg-1"), "")

    service = build_service(config)
    assert service is not None
    shown: list[tuple[int, bool, str]] = []  # (poll number, woken by the watch, pg-1 figure)
    lost: list[str] = []
    woken: list[bool] = []
    pending = [False]

    async def scenario() -> dict[str, Any]:
        async def poll() -> Any:
            woken.append(pending[0])  # a loss reported since the last poll started
            pending[0] = False
            return await service.poll()

        poller = Poller()
        job = poller.add(service.name, poll, interval=600.0, timeout=30.0,
                         on_snapshot=lambda s: shown.append((job.polls, woken[-1], pg1(s))))

        def on_lost(member_name: str) -> None:
            lost.append(member_name)
            pending[0] = True
            job.wake()

        service.on_lost = on_lost

        async def until(condition: Callable[[], Any], what: str) -> None:
            for _ in range(600):  # a bound on waiting (60 s), not a timed assertion
                if condition():
                    return
                await asyncio.sleep(0.1)
            pytest.fail(f"never: {what} (polls {shown}, lost {lost})")

        try:
            async with poller:
                await until(lambda: shown and shown[-1][2].startswith("primary"),
                            "pg-1 shown primary")
                await until(lambda: service.watching("pg-1") and service.watching("pg-2"),
                            "both watches open")
                watchers = await asyncio.to_thread(sql, fresh, "pg-1", watch_sql)
                polls_before = job.polls
                await asyncio.to_thread(fresh.stop, "pg-1", kill=True)
                await until(lambda: shown and shown[-1][2] == "down", "pg-1 shown down")
                return {"watchers": watchers, "polls_before": polls_before,
                        "detected": shown[-1]}
        finally:
            await service.close()
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not leftover, leftover

    result = asyncio.run(scenario())
    # The watch is an idle session of the read-only monitor, one per member.
    assert result["watchers"] == [(monitor, "idle")]
    assert lost == ["pg-1"]  # pg-2 was not touched: its watch stays quiet
    poll_number, was_woken, _ = result["detected"]
    assert poll_number == result["polls_before"] + 1 and was_woken
    # close() ended pg-2's watch session too (pg-1's server is gone).
    wait_for(lambda: not sql(fresh, "pg-2", watch_sql), 30, "no sfops-watch session left")
