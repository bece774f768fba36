"""PostgreSQL actions against a fake cluster (the ClusterOps they take): the preflights'
refusals and passes, the re-checks right before the change, exactly what a dry run says would
change, the runner not paying the failover's unreachable-primary window twice, close()
releasing only what the action opened; and the contract: keys, targets, redacted status JSON,
every member shown down when none answers."""

from __future__ import annotations

import io
import json
import socket
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from backends.actions import ActionRunner, CheckResult, CheckStatus, Outcome
from backends.audit import AuditLog
from backends.config import parse
from backends.postgres import actions as pg_actions
from backends.postgres import cluster as pg_cluster
from backends.postgres.actions import (
    CHECK_AHEAD,
    CHECK_CANDIDATE_STANDBY,
    CHECK_KNOWN,
    CHECK_LAG,
    CHECK_NEEDS_REJOIN,
    CHECK_ONE_PRIMARY,
    CHECK_PRIMARY_GONE,
    CHECK_STREAMING,
    Failover,
    Rejoin,
    Switchover,
)
from backends.postgres.cluster import PgActionError, PgCluster
from backends.postgres.config import PostgresMember
from backends.postgres.host import HostError, Killed
from backends.postgres.model import (
    LastPrimaryLsn,
    MemberStatus,
    Role,
    SlotRow,
    StandbyRow,
    WalReceiver,
    build_cluster,
)
from tui import cli, exitcodes

PORTS = {"pg-1": 5432, "pg-2": 5433, "pg-3": 5434}
SECRET = "s3cret-Repl1cation"
CONNINFO = (f"user=replicator password={SECRET} host=127.0.0.1 port=5432 "
            "application_name=pg-2 passfile=/data/pg-2/replication.pgpass")
MIB = 1024 * 1024


# --------------------------------------------------------------------------- fakes


def primary(name: str = "pg-1", *, timeline: int = 3, lsn: int = 0x3000060,
            standbys: tuple[str, ...] = ("pg-2",), slots: tuple[str, ...] = ("pg_2",)
            ) -> MemberStatus:
    rows = tuple(StandbyRow(s, "127.0.0.1", "streaming", "async", lsn, lsn, lsn, lsn,
                            None, None, None, 0) for s in standbys)
    return MemberStatus(name, "127.0.0.1", PORTS[name], True, role=Role.PRIMARY,
                        timeline=timeline, current_lsn=lsn, standbys=rows,
                        slots=tuple(SlotRow(s, "physical", True, lsn, "reserved", 0)
                                    for s in slots))


def standby(name: str = "pg-2", *, timeline: int = 3, received: int = 0x3000060,
            replayed: int | None = None, streaming: bool = True, sender: str = "pg-1",
            paused: bool = False, conninfo: str | None = CONNINFO) -> MemberStatus:
    receiver = WalReceiver("streaming" if streaming else "waiting", timeline, received,
                           "127.0.0.1", PORTS[sender], 0.1 if streaming else 900.0, "pg_2")
    return MemberStatus(name, "127.0.0.1", PORTS[name], True, role=Role.STANDBY,
                        timeline=timeline, received_lsn=received,
                        replayed_lsn=received if replayed is None else replayed,
                        replay_paused=paused, wal_receiver=receiver,
                        primary_conninfo=conninfo, primary_slot_name="pg_2")


def down(name: str, error: str = "connection refused") -> MemberStatus:
    return MemberStatus(name, "127.0.0.1", PORTS[name], False, error=error)


class FakeHost:
    def __init__(self, name: str, problem: str | None = None,
                 auto_conf: str | None = None,
                 events: list[tuple[str, str]] | None = None) -> None:
        self.name, self.problem, self.auto_conf = name, problem, auto_conf
        self.signal_written = False
        self.events = events if events is not None else []
        self.kill_error: str | None = None  # kill_server fails with this
        self.running_pid: str | None = "4242"  # a (hung) server runs from the data directory
        self.on_kill: Any = None  # called once the server is killed (another actor, meanwhile)
        self.on_stop: Any = None  # likewise once it is stopped

    async def reachable(self) -> str | None:
        return self.problem

    def path(self, name: str) -> str:
        return f"/data/{self.name}/{name}"

    async def read_text(self, path: str) -> str | None:
        return self.auto_conf

    async def exists(self, path: str) -> bool:
        return True

    async def write_standby_signal(self) -> None:
        self.events.append(("standby.signal", self.name))
        self.signal_written = True

    async def remove_standby_signal(self) -> None:
        self.events.append(("remove standby.signal", self.name))
        self.signal_written = False

    async def kill_server(self) -> Killed | None:
        if self.kill_error is not None:
            raise HostError(f"{self.name}: {self.kill_error}")
        self.events.append(("SIGKILL", self.name))
        pid, self.running_pid = self.running_pid, None
        if self.on_kill is not None:
            self.on_kill()
        return None if pid is None else Killed(pid, exited=True)

    async def running(self) -> bool:
        return False

    async def stop(self, mode: str = "fast") -> None:
        self.events.append((f"stop {mode}", self.name))
        if self.on_stop is not None:
            self.on_stop()

    async def start(self) -> None:
        self.events.append(("start", self.name))

    async def controldata(self) -> dict[str, str]:
        return {"Database cluster state": "shut down",
                "Latest checkpoint location": "0/3000100"}


class FakeConn:
    """Answers what promote() and the verification send; a promotion changes the fake."""

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster, self.name = cluster, name

    async def fetch(self, sql: str, params: Any = None, *, what: str, timeout: Any = None,
                    statement_timeout: Any = None) -> list[dict[str, Any]]:
        self.cluster.statements.append((self.name, sql))
        if "pg_promote" in sql:
            self.cluster.events.append(("promote", self.name))
            old = self.cluster.statuses[self.name]
            self.cluster.statuses[self.name] = primary(
                self.name, timeline=(old.timeline or 1) + 1, standbys=(), slots=())
            return [{"promoted": True}]
        if "pg_current_xact_id" in sql:
            return [{"xid": "1"}]
        if "pg_last_wal_receive_lsn" in sql:  # past the fake's shutdown checkpoint 0/3000100
            return [{"lsn": "0/3000200"}]
        return []

    async def fetchone(self, sql: str, params: Any = None, **kwargs: Any) -> dict[str, Any]:
        return (await self.fetch(sql, params, **kwargs))[0]


class FakeCluster:
    """What the actions use of PgCluster (backends.postgres.cluster.ClusterOps)."""

    replication_conninfo = PgCluster.replication_conninfo  # pure: uses member() only

    def __init__(self, *statuses: MemberStatus, last: LastPrimaryLsn | None = None,
                 max_lag: int = MIB, host_problems: dict[str, str] | None = None) -> None:
        self.statuses = {s.name: s for s in statuses}
        self.members = {s.name: PostgresMember(s.name, "127.0.0.1", PORTS[s.name],
                                               data_dir=Path(f"/data/{s.name}"))
                        for s in statuses}
        self.max_lag_on_failover = max_lag
        self.last = last
        self.events: list[tuple[str, str]] = []  # host steps and promotions, in order
        self.hosts = {n: FakeHost(n, (host_problems or {}).get(n), events=self.events)
                      for n in self.statuses}
        self.role_budgets: dict[str, float | None] = {}  # read_role's seconds, per member
        self.fenced: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, float] = {}
        self.reads: list[str] = []
        self.statements: list[tuple[str, str]] = []
        self.closed = 0

    def member(self, name: str) -> PostgresMember:
        if name not in self.members:
            raise PgActionError(f"unknown member {name!r}")
        return self.members[name]

    def conn(self, name: str) -> FakeConn:
        return FakeConn(self, name)

    def host(self, name: str) -> FakeHost:
        return self.hosts[name]

    async def read(self, name: str) -> MemberStatus:
        self.reads.append(name)
        return self.statuses[name]

    async def read_all(self) -> dict[str, MemberStatus]:
        self.reads.extend(self.statuses)
        return dict(self.statuses)

    async def read_role(self, name: str, seconds: float | None = None) -> MemberStatus:
        self.reads.append(name)
        self.role_budgets[name] = seconds
        return self.statuses[name]

    def last_primary_lsn(self) -> LastPrimaryLsn | None:
        return self.last

    def streaming_seen(self, name: str) -> float | None:
        return self.seen.get(name)

    def fenced_members(self) -> dict[str, dict[str, Any]]:
        return self.fenced

    def fence(self, name: str, *, reason: str, method: str, new_primary: str) -> None:
        self.fenced[name] = {"reason": reason, "method": method, "new_primary": new_primary}

    def unfence(self, name: str) -> None:
        self.fenced.pop(name, None)

    def superuser_conninfo(self, name: str) -> str:
        return f"host=127.0.0.1 port={PORTS[name]} user=sfops dbname=streamforge"

    async def close(self) -> None:
        self.closed += 1


def by_name(checks: list[CheckResult]) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in checks}


def detail(checks: list[CheckResult], name: str) -> str:
    return next(c.detail for c in checks if c.name == name)


def seen(lsn: int, member: str = "pg-1", timeline: int = 3) -> LastPrimaryLsn:
    return LastPrimaryLsn(member, lsn, timeline, time.time())


@pytest.fixture(autouse=True)
def no_window_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unreachable-primary window's attempts, without sleeping between them."""
    monkeypatch.setattr(pg_actions, "UNREACHABLE_INTERVAL", 0.0)


def runner(tmp_path: Path) -> ActionRunner:
    return ActionRunner(AuditLog(tmp_path / "audit.jsonl"), user="t", host="h")


def gone_primary() -> FakeCluster:
    """pg-1 (the primary sfops last saw) is dead; pg-2 received everything it sent."""
    return FakeCluster(down("pg-1"), standby(streaming=False, received=0x3000060),
                       last=seen(0x3000060))


# --------------------------------------------------------------------------- failover


async def test_failover_refused_while_the_primary_answers_even_forced(tmp_path: Path) -> None:
    cluster = FakeCluster(primary(), standby())
    action = Failover(cluster, "pg-2")
    checks = await action.preflight()
    assert by_name(checks)[CHECK_PRIMARY_GONE] is CheckStatus.FAIL
    assert "switchover" in detail(checks, CHECK_PRIMARY_GONE)
    assert cluster.reads.count("pg-1") == 1  # no unreachable window for a live primary
    assert await action.would_change() == [
        f"nothing: refused even with --force, nothing was changed: {CHECK_PRIMARY_GONE}: "
        f"{detail(checks, CHECK_PRIMARY_GONE)}"]
    result = await runner(tmp_path).run(action, force=True, preflight=checks)
    assert result.outcome is Outcome.FAILED and "refused even with --force" in result.error
    assert cluster.statements == []  # nothing was sent, let alone a pg_promote


async def test_failover_refused_when_the_candidate_lags_beyond_the_bound() -> None:
    cluster = FakeCluster(down("pg-1"), standby(streaming=False, received=0x3000000),
                          last=seen(0x3000000 + 3 * MIB))
    action = Failover(cluster, "pg-2")
    checks = await action.preflight()
    assert by_name(checks)[CHECK_LAG] is CheckStatus.FAIL
    assert "3.0 MiB behind pg-1" in detail(checks, CHECK_LAG)
    assert "--force accepts the loss" in detail(checks, CHECK_LAG)
    # A judgement, not a safety check: --force may override it, so a plan exists.
    assert any("pg-2: promote" in line for line in await action.would_change())


async def test_failover_refused_when_another_standby_has_more_wal() -> None:
    cluster = FakeCluster(down("pg-1"), standby(received=0x3000000, streaming=False),
                          standby("pg-3", received=0x3000060, streaming=False),
                          last=seen(0x3000060))
    checks = await Failover(cluster, "pg-2").preflight()
    assert by_name(checks)[CHECK_AHEAD] is CheckStatus.FAIL
    assert "fail over to pg-3 instead" in detail(checks, CHECK_AHEAD)


async def test_failover_passes_when_the_primary_is_gone_and_the_candidate_caught_up() -> None:
    cluster = gone_primary()
    cluster.seen["pg-2"] = time.time()
    action = Failover(cluster, "pg-2")
    checks = await action.preflight()
    assert [c for c in checks if c.status is CheckStatus.FAIL] == []
    assert by_name(checks)[CHECK_PRIMARY_GONE] is CheckStatus.PASS
    # The preflight's first read is the first attempt.
    assert cluster.reads.count("pg-1") == pg_actions.UNREACHABLE_ATTEMPTS
    assert action.old_primary == ["pg-1"] and action.old_timeline == 3


@pytest.mark.parametrize("cls,target", [(Failover, "pg-9"), (Switchover, "pg-9"),
                                        (Rejoin, "pg-9")])
async def test_unknown_member_is_refused_before_any_read(cls: Any, target: str) -> None:
    cluster = FakeCluster(primary(), standby())
    checks = await cls(cluster, target).preflight()
    assert [(c.name, c.status) for c in checks] == [(CHECK_KNOWN, CheckStatus.FAIL)]
    assert "unknown member 'pg-9'" in checks[0].detail
    assert cluster.reads == []


async def test_failover_recheck_reads_the_critical_conditions_again() -> None:
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    await action.preflight()
    cluster.reads.clear()
    assert by_name(await action.recheck()) == {CHECK_PRIMARY_GONE: CheckStatus.PASS,
                                               CHECK_CANDIDATE_STANDBY: CheckStatus.PASS}
    assert sorted(cluster.reads) == ["pg-1", "pg-2"]  # one read each: no window
    # pg-1's host answered in the preflight: it is killed before the promotion, so the
    # re-check gives it the short budget; everyone else gets the full one.
    assert cluster.role_budgets == {"pg-1": pg_actions.RECHECK_FENCED_SECONDS, "pg-2": None}
    cluster.statuses["pg-1"] = primary(standbys=())  # it came back
    rechecked = await action.recheck()
    assert by_name(rechecked)[CHECK_PRIMARY_GONE] is CheckStatus.FAIL
    assert "two primaries" in detail(rechecked, CHECK_PRIMARY_GONE)
    cluster.statuses["pg-1"] = down("pg-1")
    cluster.statuses["pg-2"] = primary("pg-2", timeline=4, standbys=())  # promoted meanwhile
    assert by_name(await action.recheck())[CHECK_CANDIDATE_STANDBY] is CheckStatus.FAIL


async def test_a_failing_recheck_refuses_even_forced(tmp_path: Path) -> None:
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    checks = await action.preflight()
    cluster.statuses["pg-1"] = primary(standbys=())
    result = await runner(tmp_path).run(action, force=True, preflight=checks)
    assert result.outcome is Outcome.FAILED and "refused even with --force" in result.error
    assert not any("pg_promote" in sql for _, sql in cluster.statements)


async def test_failover_would_change_names_the_promotion_and_the_fencing() -> None:
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    await action.preflight()
    plan = await action.would_change()
    assert plan[0].startswith("pg-1: fence first: write /data/pg-1/standby.signal")
    assert "then SIGKILL its server" in plan[0] and "nothing is promoted" in plan[0]
    assert plan[1].startswith("pg-2: promote (pg_promote(true, 60)): leaves recovery on "
                              "timeline 3 → 4")
    assert any("no pg_rewind now" in line and "sfops pg rejoin pg-1" in line for line in plan)
    assert cluster.statements == [] and cluster.fenced == {}  # reads only
    assert cluster.events == []

    cluster = FakeCluster(down("pg-1"), standby(paused=True, streaming=False),
                          last=seen(0x3000060), host_problems={"pg-1": "ssh: no route"})
    action = Failover(cluster, "pg-2")
    await action.preflight()
    plan = await action.would_change()
    assert plan[0].startswith("pg-2: resume WAL replay")
    assert any("its host is unreachable (ssh: no route): after the promotion" in line
               for line in plan)


async def test_the_runner_given_the_shown_preflight_pays_the_window_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    windows: list[list[str]] = []
    confirm = Failover._confirm_gone

    async def counted(self: Failover, names: list[str]) -> Any:
        windows.append(names)
        return await confirm(self, names)

    monkeypatch.setattr(Failover, "_confirm_gone", counted)
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    shown = await action.preflight()  # what the CLI prints and the TUI's modal shows
    result = await runner(tmp_path).run(action, preflight=shown)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert windows == [["pg-1"]]  # the unreachable window ran once, in the shown preflight
    assert cluster.statuses["pg-2"].is_primary and cluster.hosts["pg-1"].signal_written
    assert cluster.fenced["pg-1"]["method"] == pg_cluster.FENCE_METHOD_KILLED
    [record] = AuditLog(tmp_path / "audit.jsonl").read()
    names = [c["name"] for c in record["preflight"]]
    rechecks = [f"re-check: {CHECK_PRIMARY_GONE}", f"re-check: {CHECK_CANDIDATE_STANDBY}"]
    # Once right before the first change, once more between the fence and the promotion.
    assert names == [c.name for c in shown] + rechecks + rechecks
    assert all(c["detail"].startswith("before promoting pg-2: ")
               for c in record["preflight"][-2:]), record["preflight"]
    assert cluster.closed >= 1  # the runner closed the action


async def test_failover_fences_and_kills_the_old_primary_before_promoting(
        tmp_path: Path) -> None:
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    shown = await action.preflight()
    assert "SIGKILLed" in detail(shown, pg_actions.CHECK_FENCE)
    steps: list[str] = []
    result = await runner(tmp_path).run(action, preflight=shown,
                                        on_step=lambda step: steps.append(step.message))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    # A hung pg-1 resuming at any moment finds standby.signal and a SIGKILL: never a primary.
    assert cluster.events == [("standby.signal", "pg-1"), ("SIGKILL", "pg-1"),
                              ("promote", "pg-2")]
    assert any("postmaster 4242 and its processes SIGKILLed and gone" in m for m in steps)
    assert any("pg-2 accepts writes" in m and "after confirmation" in m for m in steps)
    assert by_name(result.verify)["old primary fenced"] is CheckStatus.PASS


async def test_failover_whose_fence_fails_promotes_nothing_and_undoes_it(
        tmp_path: Path) -> None:
    cluster = gone_primary()
    cluster.hosts["pg-1"].kill_error = "kill of process group 4242 failed"
    action = Failover(cluster, "pg-2")
    result = await runner(tmp_path).run(action, preflight=await action.preflight())
    assert result.outcome is Outcome.FAILED
    assert "nothing was promoted" in (result.error or "")
    assert "standby.signal was removed again" in (result.error or "")
    assert cluster.events == [("standby.signal", "pg-1"), ("remove standby.signal", "pg-1")]
    assert not any("pg_promote" in sql for _, sql in cluster.statements)
    assert cluster.fenced == {} and cluster.statuses["pg-2"].is_standby


@pytest.mark.parametrize("force", [False, True])
async def test_failover_rechecks_between_the_fence_and_the_promotion(
        tmp_path: Path, force: bool) -> None:
    """While pg-1 is being fenced, another actor promotes pg-3: the failover stops before
    promoting pg-2 (even forced: two primaries is a safety check), says what it left, and
    audits the re-check."""
    cluster = FakeCluster(down("pg-1"), standby(streaming=False),
                          standby("pg-3", streaming=False), last=seen(0x3000060))
    action = Failover(cluster, "pg-2")
    shown = await action.preflight()
    assert [c.name for c in shown if c.status is CheckStatus.FAIL] == []

    def promoted_elsewhere() -> None:
        cluster.statuses["pg-3"] = primary("pg-3", timeline=4, standbys=(), slots=())
        cluster.reads.clear()

    cluster.hosts["pg-1"].on_kill = promoted_elsewhere
    steps: list[str] = []
    result = await runner(tmp_path).run(action, preflight=shown, force=force,
                                        on_step=lambda step: steps.append(step.message))
    assert result.outcome is Outcome.FAILED
    # Fenced, then nothing more: no pg_promote of pg-2 beside the new primary pg-3.
    assert cluster.events == [("standby.signal", "pg-1"), ("SIGKILL", "pg-1")]
    assert not any("pg_promote" in sql for _, sql in cluster.statements)
    assert cluster.statuses["pg-2"].is_standby
    error = result.error or ""
    assert error.startswith("re-check before promoting pg-2 failed (primary unreachable: "
                            "pg-3 answers as primary now"), error
    assert "pg-1 fenced (standby.signal written, server killed), nothing promoted" in error
    assert steps[-1] == error  # the operator reads the state left in the progress, too
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    assert record["outcome"] == "failed" and record["error"] == error
    later = [(c["name"], c["status"]) for c in record["preflight"]
             if c["detail"].startswith("before promoting pg-2: ")]
    assert later == [(f"re-check: {CHECK_PRIMARY_GONE}", "fail"),
                     (f"re-check: {CHECK_CANDIDATE_STANDBY}", "pass")]
    # The killed pg-1 is not read again (it cannot answer); everyone else is.
    assert sorted(cluster.reads) == ["pg-2", "pg-3"]


async def test_failover_stops_before_promoting_a_candidate_no_longer_a_standby(
        tmp_path: Path) -> None:
    cluster = gone_primary()
    action = Failover(cluster, "pg-2")
    shown = await action.preflight()

    def promoted_meanwhile() -> None:  # e.g. by hand, with pg_ctl promote
        cluster.statuses["pg-2"] = primary("pg-2", timeline=4, standbys=(), slots=())

    cluster.hosts["pg-1"].on_kill = promoted_meanwhile
    result = await runner(tmp_path).run(action, preflight=shown)
    assert result.outcome is Outcome.FAILED
    assert "candidate in recovery: pg-2 is primary now" in (result.error or "")
    assert cluster.events == [("standby.signal", "pg-1"), ("SIGKILL", "pg-1")]
    assert not any("pg_promote" in sql for _, sql in cluster.statements)


async def test_failover_with_the_old_primarys_host_unreachable_promotes_then_records(
        tmp_path: Path) -> None:
    cluster = FakeCluster(down("pg-1"), standby(streaming=False), last=seen(0x3000060),
                          host_problems={"pg-1": "ssh: no route"})
    action = Failover(cluster, "pg-2")
    shown = await action.preflight()
    result = await runner(tmp_path).run(action, preflight=shown)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    # Nothing can stop it, so the re-check gives it the full budget, as before.
    assert cluster.role_budgets["pg-1"] is None
    assert cluster.events == [("promote", "pg-2")]
    assert cluster.fenced["pg-1"]["method"] == "recorded"


# --------------------------------------------------------------------------- switchover


async def test_switchover_passes_on_a_streaming_pair_and_rechecks_it() -> None:
    cluster = FakeCluster(primary(), standby())
    action = Switchover(cluster, "pg-2")
    checks = await action.preflight()
    assert [c for c in checks if c.status is not CheckStatus.PASS] == []
    cluster.reads.clear()
    assert by_name(await action.recheck()) == {CHECK_ONE_PRIMARY: CheckStatus.PASS,
                                               CHECK_STREAMING: CheckStatus.PASS}
    assert sorted(cluster.reads) == ["pg-1", "pg-2"]
    cluster.statuses["pg-2"] = standby(streaming=False)
    assert by_name(await action.recheck())[CHECK_STREAMING] is CheckStatus.FAIL
    cluster.statuses["pg-1"] = down("pg-1")
    rechecked = await action.recheck()
    assert by_name(rechecked)[CHECK_ONE_PRIMARY] is CheckStatus.FAIL
    assert "pg-1 is down (connection refused) now" in detail(rechecked, CHECK_ONE_PRIMARY)


async def test_switchover_stops_the_primary_rechecks_then_promotes(tmp_path: Path) -> None:
    cluster = FakeCluster(primary(), standby())
    action = Switchover(cluster, "pg-2")
    shown = await action.preflight()
    steps: list[str] = []
    # pg-1's rejoin is not faked here: the run ends failing there, after the promotion.
    result = await runner(tmp_path).run(action, preflight=shown,
                                        on_step=lambda step: steps.append(step.message))
    assert cluster.events[:3] == [("stop fast", "pg-1"), ("standby.signal", "pg-1"),
                                  ("promote", "pg-2")], (cluster.events, result.error)
    assert any(m.startswith("re-checked before promoting pg-2: ") for m in steps), steps
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    assert [(c["name"], c["status"]) for c in record["preflight"]
            if c["detail"].startswith("before promoting pg-2: ")] == [
        (f"re-check: {CHECK_ONE_PRIMARY}", "pass"), (f"re-check: {CHECK_CANDIDATE_STANDBY}",
                                                    "pass")]


@pytest.mark.parametrize("force", [False, True])
async def test_switchover_stops_before_promoting_when_the_target_changed_meanwhile(
        tmp_path: Path, force: bool) -> None:
    """pg-1 stopped cleanly and fenced; meanwhile pg-2 stopped answering as a standby: no
    promotion (even forced), the state left said plainly, the re-check audited."""
    cluster = FakeCluster(primary(), standby())
    action = Switchover(cluster, "pg-2")
    shown = await action.preflight()

    def target_went_down() -> None:
        cluster.statuses["pg-2"] = down("pg-2")

    cluster.hosts["pg-1"].on_stop = target_went_down
    steps: list[str] = []
    result = await runner(tmp_path).run(action, preflight=shown, force=force,
                                        on_step=lambda step: steps.append(step.message))
    assert result.outcome is Outcome.FAILED
    assert cluster.events == [("stop fast", "pg-1"), ("standby.signal", "pg-1")]
    assert not any("pg_promote" in sql for _, sql in cluster.statements)
    error = result.error or ""
    assert error.startswith("re-check before promoting pg-2 failed (candidate in recovery: "
                            "pg-2 is down (connection refused) now)"), error
    assert ("pg-1 stopped cleanly and fenced (standby.signal), pg-2 not promoted: no member "
            "accepts writes, nothing was lost") in error
    assert "remove /data/pg-1/standby.signal and start pg-1" in error
    assert steps[-1] == error and cluster.fenced["pg-1"]["reason"] == "switchover"
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    assert record["error"] == error
    assert (f"re-check: {CHECK_CANDIDATE_STANDBY}", "fail") in [
        (c["name"], c["status"]) for c in record["preflight"]
        if c["detail"].startswith("before promoting pg-2: ")]


def test_failover_switchover_and_rejoin_of_one_cluster_take_the_same_lock() -> None:
    """They exclude each other: whichever starts first holds the one key the others need."""
    cluster = FakeCluster(primary(), standby(), standby("pg-3"))
    keys = [action.locks() for action in (Failover(cluster, "pg-2"),
                                          Switchover(cluster, "pg-3"), Rejoin(cluster, "pg-1"))]
    assert len(keys[0]) == 1 and keys[0] == keys[1] == keys[2]
    assert keys[0][0].name.startswith("pg-")


async def test_switchover_refused_without_a_streaming_candidate() -> None:
    cluster = FakeCluster(primary(standbys=()), standby(streaming=False))
    checks = await Switchover(cluster, "pg-2").preflight()
    assert by_name(checks)[CHECK_STREAMING] is CheckStatus.FAIL
    cluster = FakeCluster(primary(), standby())
    checks = await Switchover(cluster, "pg-1").preflight()
    assert "pg-1 is already the primary" in detail(checks, CHECK_ONE_PRIMARY)


async def test_switchover_would_change_ends_with_the_old_primarys_rejoin() -> None:
    cluster = FakeCluster(primary(), standby())
    action = Switchover(cluster, "pg-2")
    await action.preflight()
    plan = await action.would_change()
    text = "\n".join(plan)
    assert plan[0].startswith("pg-1: CHECKPOINT, then fast shutdown")
    assert "pg-1: write /data/pg-1/standby.signal" in text
    assert "pg-2: promote (pg_promote(true, 60)): leaves recovery on timeline 3 → 4" in text
    assert "pg-1: pg_rewind from pg-2 (127.0.0.1:5433, timeline 4)" in text
    conninfo = next(line for line in plan if "primary_conninfo" in line)
    assert "host=127.0.0.1" in conninfo and "port=5433" in conninfo
    assert "application_name=pg-1" in conninfo and "/data/pg-1/replication.pgpass" in conninfo
    assert SECRET not in text
    assert cluster.statements == []


# --------------------------------------------------------------------------- rejoin


async def test_rejoin_refused_when_the_member_already_streams_from_the_primary() -> None:
    cluster = FakeCluster(primary(), standby())
    action = Rejoin(cluster, "pg-2")
    checks = await action.preflight()
    assert by_name(checks)[CHECK_NEEDS_REJOIN] is CheckStatus.FAIL
    cluster.fenced["pg-2"] = {"reason": "failover"}  # a fenced one needs it all the same
    action = Rejoin(cluster, "pg-2")
    assert by_name(await action.preflight())[CHECK_NEEDS_REJOIN] is CheckStatus.PASS


async def test_rejoin_recheck_and_plan_for_a_stopped_former_primary() -> None:
    auto = ("primary_conninfo = 'user=replicator password=hunter2 host=127.0.0.1 port=5432 "
            "passfile=''/data/pg-1/replication.pgpass'''\n")
    cluster = FakeCluster(down("pg-1"), primary("pg-2", timeline=4, standbys=(), slots=()))
    cluster.hosts["pg-1"].auto_conf = auto
    action = Rejoin(cluster, "pg-1")
    checks = await action.preflight()
    assert [c for c in checks if c.status is CheckStatus.FAIL] == []
    cluster.reads.clear()
    assert by_name(await action.recheck()) == {CHECK_ONE_PRIMARY: CheckStatus.PASS,
                                               CHECK_NEEDS_REJOIN: CheckStatus.PASS}
    assert sorted(cluster.reads) == ["pg-1", "pg-2"]
    plan = await action.would_change()
    text = "\n".join(plan)
    assert plan[0] == "pg-1: write /data/pg-1/standby.signal (fenced while it rejoins)"
    assert "pg-1: pg_rewind from pg-2 (127.0.0.1:5433, timeline 4)" in text
    assert "pg-2: create physical replication slot pg_1" in text
    assert ("primary_conninfo = 'user=replicator passfile=/data/pg-1/replication.pgpass "
            "host=127.0.0.1 port=5433 application_name=pg-1', primary_slot_name = 'pg_1'"
            in text)
    assert "hunter2" not in text and cluster.statements == []
    # Meanwhile someone else made it a streaming standby of pg-2: nothing left to do.
    cluster.statuses["pg-1"] = standby("pg-1", timeline=4, sender="pg-2")
    assert by_name(await action.recheck())[CHECK_NEEDS_REJOIN] is CheckStatus.FAIL


async def test_rejoin_plan_of_a_fenced_follower_needs_no_rewind() -> None:
    cluster = FakeCluster(standby("pg-1", timeline=4, sender="pg-2"),
                          primary("pg-2", timeline=4, standbys=("pg-1",), slots=("pg_1",)))
    cluster.fenced["pg-1"] = {"reason": "failover"}
    action = Rejoin(cluster, "pg-1")
    await action.preflight()
    plan = await action.would_change()
    assert plan[0] == "pg-1: already streams pg-2's timeline 4: no pg_rewind, no restart"
    assert "pg-2: slot pg_1 exists (reserved): kept" in plan
    assert any(line.startswith("pg-1: ALTER SYSTEM SET primary_conninfo = ") for line in plan)
    assert not any("pg_rewind from" in line for line in plan)


# --------------------------------------------------------------------------- close()


def pg_config(tmp_path: Path, ports: tuple[int, int] = (5432, 5433)) -> Any:
    text = f'''
[sfops]
audit_log = "{tmp_path}/audit.jsonl"
state_dir = "{tmp_path}/state"

[postgres]
dbname = "streamforge"
user = "sfops"
connect_timeout = 2.0
[postgres.members.pg-1]
host = "127.0.0.1"
port = {ports[0]}
data_dir = "{tmp_path}/pg-1/data"
[postgres.members.pg-2]
host = "127.0.0.1"
port = {ports[1]}
data_dir = "{tmp_path}/pg-2/data"
'''
    path = tmp_path / "sfops.toml"
    path.write_text(text)
    return parse(text, path)


class Closing:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class FakeContext:
    """The TUI's side of backends.contract.ActionContext: one live, shared service."""

    def __init__(self, config: Any, tmp_path: Path) -> None:
        self.config = config
        self.runner = runner(tmp_path)
        self.shared = Closing()

    def service(self, backend: str) -> Any:
        assert backend == "postgres"
        return self.shared

    def status(self, backend: str) -> Any:
        return None


async def test_close_releases_the_actions_executors_never_the_shared_service(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.postgres.contract import BACKEND

    executors: list[Closing] = []
    monkeypatch.setattr(pg_cluster, "executor_from_config",
                        lambda config: executors.append(Closing()) or executors[-1])
    context = FakeContext(pg_config(tmp_path), tmp_path)
    action = BACKEND.spec("rejoin").build(context, "pg-1", {})
    assert isinstance(action, Rejoin) and action.cluster.service is context.shared
    action.cluster.host("pg-1")  # a host step opens the member's executor (SSH)
    await action.close()
    await action.close()  # idempotent
    assert [e.closed for e in executors] == [1] and context.shared.closed == 0


async def test_a_cluster_without_a_shared_service_closes_its_own_once(tmp_path: Path) -> None:
    cluster = PgCluster(pg_config(tmp_path))
    own = cluster.service = Closing()  # type: ignore[assignment]
    await cluster.close()
    await cluster.close()
    assert own.closed == 1


# --------------------------------------------------------------------------- the contract


def test_the_contract_declares_keys_targets_and_choices(tmp_path: Path) -> None:
    from backends.postgres.contract import BACKEND

    assert (BACKEND.name, BACKEND.title, BACKEND.command) == ("postgres", "PostgreSQL", "pg")
    specs = {s.command: s for s in BACKEND.actions}
    assert {c: s.key for c, s in specs.items()} == {"failover": "f", "switchover": "s",
                                                   "rejoin": "j"}
    assert specs["failover"].target.option == specs["switchover"].target.option == "--to"
    assert specs["rejoin"].target.option is None
    config = pg_config(tmp_path)
    for spec in specs.values():
        assert list(spec.target.choices(config, None)) == ["pg-1", "pg-2"]


def test_status_json_redacts_every_conninfo_password() -> None:
    from backends.postgres.contract import status_json

    status = build_cluster([primary(), standby()])
    data = status_json(status)
    text = json.dumps(data)
    assert SECRET not in text
    pg2 = next(m for m in data["members"] if m["name"] == "pg-2")
    assert "password=***" in pg2["primary_conninfo"] and "host=127.0.0.1" in pg2["primary_conninfo"]
    assert data["primary"] == "pg-1"


def test_status_text_shows_every_member_down_without_control_characters() -> None:
    from backends.postgres.model import summarize_status
    from tui.render.postgres import status_text

    status = build_cluster([down("pg-1", "refused \x1b[2J\x07"), down("pg-2")])
    text = status_text(status, summarize_status(status), {})
    rows = [line.split() for line in text.splitlines() if line.startswith("pg-")]
    assert [(r[0], r[1]) for r in rows] == [("pg-1", "down"), ("pg-2", "down")]
    assert "\x1b" not in text and "\x07" not in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("output", ["json", "table"])
def test_status_with_no_member_answering_shows_them_down(tmp_path: Path, output: str) -> None:
    config = pg_config(tmp_path, (free_port(), free_port()))
    code, out, _ = run_cli("pg", "status", "-o", output, "--config", str(config.path))
    assert code == exitcodes.UNREACHABLE
    if output == "json":
        data = json.loads(out)
        assert data["backend"] == "postgres" and data["reachable"] is False
        members = data["status"]["members"]
        assert [(m["name"], m["reachable"]) for m in members] == [("pg-1", False),
                                                                  ("pg-2", False)]
        return
    assert out.startswith("PostgreSQL: UNREACHABLE")
    rows = [line.split() for line in out.splitlines() if line.startswith("pg-")]
    assert [(r[0], r[1]) for r in rows] == [("pg-1", "down"), ("pg-2", "down")]


@pytest.mark.parametrize("argv,flags", [
    (("pg", "failover"), ("--to MEMBER", "standby to promote", "--yes", "--json", "--force",
                          "--dry-run", "Refused while the primary answers")),
    (("pg", "switchover"), ("--to MEMBER", "--yes", "--json", "--force", "--dry-run",
                            "shutdown checkpoint")),
    (("pg", "rejoin"), ("MEMBER", "member to rejoin", "--yes", "--json", "--force",
                        "--dry-run")),
    (("pg", "status"), ("--output", "--json", "--timeout")),
])
def test_the_pg_commands_keep_their_flags(argv: tuple[str, ...], flags: tuple[str, ...]
                                          ) -> None:
    code, out, _ = run_cli(*argv, "--help")
    assert code == 0
    text = " ".join(out.split())
    for flag in flags:
        assert flag in text, (flag, out)


def test_pg_is_one_command_in_the_overall_help() -> None:
    code, out, _ = run_cli("--help")
    text = " ".join(out.split())
    assert code == 0 and text.count("PostgreSQL: status, failover, switchover, rejoin") == 1


def test_the_host_lock_is_named_by_the_data_directory_not_the_member_list() -> None:
    """Two operators whose configurations list different members of one cluster still meet
    at the host lock of every member both list (the Lease is named by the member list)."""
    from backends.postgres.actions import cluster_lock

    text = """
[executors.local]
type = "local"
[postgres]
dbname = "streamforge"
user = "sfops"
[postgres.members.pg-1]
host = "10.0.0.1"
executor = "local"
data_dir = "/var/lib/postgresql/15/main"
[postgres.members.pg-2]
host = "10.0.0.2"
executor = "local"
data_dir = "/srv/pg-2/data"
"""
    extra = """
[postgres.members.pg-3]
host = "10.0.0.3"
executor = "local"
data_dir = "/srv/pg-3/data"
"""
    two = cluster_lock(PgCluster(parse(text, Path("sfops.toml"))))
    three = cluster_lock(PgCluster(parse(text + extra, Path("sfops.toml"))))
    assert two.name != three.name
    paths = {f.label: f.path for f in two.hosts}
    assert paths == {"pg-1's host": "/var/lib/postgresql/15/.pg-main.sfops-lock",
                     "pg-2's host": "/srv/pg-2/.pg-data.sfops-lock"}
    assert {f.label: f.path for f in three.hosts if f.label in paths} == paths
