"""The durable intent record (issue #14): the "started" record's format, the runner writing
it before the first change (and not starting when it cannot), and how a started record
without a final one reads — running (its process is alive), interrupted (it is gone, e.g.
SIGKILLed), unfinished (another machine) — in `sfops audit`, the CLI warning and the TUI."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends import intent
from backends.actions import Action, ActionRunner, CheckResult, Outcome, Step
from backends.audit import (
    INTERRUPTED,
    RUNNING,
    UNFINISHED,
    AuditLog,
    AuditRecord,
    StartedRecord,
    fold,
    process_identity,
    process_state,
)
from backends.config import Secret

REPO = Path(__file__).resolve().parents[2]


class Change(Action):
    name = "nginx.drain"
    destructive = True

    def __init__(self, target: str = "api-3", *, steps: int = 2) -> None:
        super().__init__(target, {"member": target, "password": Secret("pw-123")})
        self.steps = steps
        self.executed: list[int] = []

    async def preflight(self) -> list[CheckResult]:
        return [CheckResult.passed("another healthy member remains", "api-1, api-2")]

    async def recheck(self) -> list[CheckResult]:
        return [CheckResult.passed("another healthy member remains", "still")]

    async def execute(self) -> AsyncIterator[Step]:
        for index in range(self.steps):
            self.executed.append(index)
            yield Step(f"step {index}")


def runner_for(audit: AuditLog) -> ActionRunner:
    return ActionRunner(audit, user="alice", host="bastion")


def started(**overrides: Any) -> dict[str, Any]:
    """A started record as a dead process on this machine left it."""
    record = StartedRecord(user="alice", host="bastion", action="pg.switchover",
                           target="pg-2", params={"to": "pg-2"}, forced=False,
                           preflight=[{"name": "one primary", "status": "pass",
                                       "detail": "pg-1"}],
                           process={**process_identity(), "pid_start": -1}).to_json()
    record.update(overrides)
    return record


def final(started_record: dict[str, Any] | None, outcome: str = "succeeded",
          action: str = "pg.switchover") -> dict[str, Any]:
    return AuditRecord(user="alice", host="bastion", action=action, target="pg-2", params={},
                       forced=False, preflight=[], verify=[], outcome=outcome, error=None,
                       duration_s=1.0, steps=3,
                       started_id=started_record["id"] if started_record else None).to_json()


# --------------------------------------------------------------------------- format


def test_started_record_is_one_fsynced_json_line_with_the_process(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(StartedRecord(user="alice", host="bastion", action="nginx.drain",
                             target="api-3", params={"member": "api-3"}, forced=False,
                             preflight=[{"name": "x", "status": "pass", "detail": ""}],
                             lock={"kind": "flock", "holder": "alice@bastion"}))
    (line,) = log.path.read_text().splitlines()
    data = json.loads(line)
    assert list(data)[:3] == ["ts", "id", "event"] and data["event"] == "started"
    assert data["outcome"] == "started" and data["pid"] == os.getpid()
    assert data["node"] == socket.gethostname()
    assert data["lock"] == {"kind": "flock", "holder": "alice@bastion"}
    assert data["preflight"] == [{"name": "x", "status": "pass", "detail": ""}]
    if Path("/proc/self/stat").exists():
        assert isinstance(data["pid_start"], int) and data["boot_id"]


def test_old_records_without_ids_still_read(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = {"ts": "2025-01-01T00:00:00.000Z", "user": "bob", "host": "h", "action":
           "nginx.drain", "target": "api-1", "params": {}, "forced": False, "preflight": [],
           "verify": [], "outcome": "succeeded", "error": None, "duration_s": 1.0, "steps": 3}
    path.write_text(json.dumps(old) + "\n" + "not json\n")
    log = AuditLog(path)
    assert log.read() == [old]
    assert log.unfinished() == []


# --------------------------------------------------------------------------- folding


def test_a_finished_action_reads_as_its_final_record_only() -> None:
    s = started()
    f = final(s)
    view = fold([s, f])
    assert view.actions == [f] and view.unfinished == []


def test_started_without_final_reads_interrupted_when_its_process_is_gone() -> None:
    s = started()
    view = fold([s])
    (item,) = view.unfinished
    assert item.state == INTERRUPTED and not item.resolved
    (entry,) = view.actions
    assert entry["outcome"] == "interrupted" and entry["unfinished"] is True
    assert "no outcome recorded" in entry["error"]
    assert s["id"] in item.describe() and "pg.switchover pg-2" in item.describe()


def test_process_state_running_recycled_rebooted_and_elsewhere() -> None:
    me = process_identity()
    assert process_state(me) == RUNNING
    assert process_state({**me, "pid_start": -1}) == INTERRUPTED  # the pid was recycled
    if "boot_id" in me:
        assert process_state({**me, "boot_id": "another-boot"}) == INTERRUPTED
    assert process_state({**me, "node": "other-host.example"}) == UNFINISHED
    assert process_state({"pid": None}) == INTERRUPTED


def test_limit_counts_actions_not_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    records = []
    for _ in range(3):
        s = started()
        records += [s, final(s)]
    for record in records:
        log.append(record)
    assert len(log.read(limit=2)) == 2 and len(log.records()) == 6
    assert all(r["event"] == "finished" for r in log.read())


def test_resolved_by_a_later_success_of_the_same_backend_or_an_acknowledgement(
        tmp_path: Path) -> None:
    s1, s2 = started(), started(action="nginx.drain", target="api-3")
    # A later pg action that succeeded deals with the pg one; a failed one does not, nor
    # does a success of another backend.
    view = fold([s1, s2, final(None, "failed", "pg.rejoin"), final(None, action="kafka.drain")])
    assert [u.resolved for u in view.unfinished] == [False, False]
    view = fold([s1, s2, final(None, action="pg.rejoin")])
    assert [u.resolved for u in view.unfinished] == [True, False]
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(s1)
    log.append(s2)
    log.acknowledge(s2["id"], user="bob", host="laptop")
    assert [u.id for u in log.unfinished()] == [s1["id"]]
    assert len(log.unfinished(include_resolved=True)) == 2
    assert [r["outcome"] for r in log.read()] == ["interrupted", "interrupted"]
    with pytest.raises(KeyError):
        log.acknowledge("no-such-id", user="bob", host="laptop")


def test_what_to_check_per_action_kind() -> None:
    assert "exactly one primary" in intent.what_to_check("pg.switchover", "pg-2")
    assert "rejoin" in intent.what_to_check("pg.switchover", "pg-2")
    nginx = intent.what_to_check("nginx.drain", "api-3")
    assert "edited but not reloaded" in nginx and "nginx -t" in nginx and "api-3" in nginx
    assert "sfops kafka status" in intent.what_to_check("kafka.drain", "2")  # the generic one
    assert "x-1" in intent.what_to_check("nope.nothing", "x-1")
    (line,) = intent.warnings(fold([started()]).unfinished)
    assert "did not finish" in line and "sfops pg status" in line and "--ack" in line
    (alert,) = intent.alerts(fold([started()]).unfinished)
    assert alert.source == "audit" and "interrupted" in alert.message


# --------------------------------------------------------------------------- the runner


async def test_the_runner_writes_the_intent_before_the_first_change(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    seen_on_disk: list[list[str]] = []

    class Watching(Change):
        async def execute(self) -> AsyncIterator[Step]:
            seen_on_disk.append([r.get("event", "") for r in log.records()])
            async for step in super().execute():
                yield step

    action = Watching()
    checks = await action.preflight()
    result = await runner_for(log).run(action, preflight=checks)
    assert result.ok
    assert seen_on_disk == [["started"]]  # on disk before execute() began
    first, last = log.records()
    assert first["event"] == "started" and last["event"] == "finished"
    assert last["started_id"] == first["id"] and last["id"] != first["id"]
    assert [c["name"] for c in first["preflight"]] == [
        "another healthy member remains", "re-check: another healthy member remains"]
    assert first["params"] == {"member": "api-3", "password": "***"}
    assert "pw-123" not in log.path.read_text()
    assert first["pid"] == os.getpid() and first["lock"] is None


async def test_a_refused_run_writes_no_intent(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    action = Change()
    result = await runner_for(log).run(
        action, preflight=[CheckResult.failed("another healthy member remains", "no")])
    assert result.outcome is Outcome.REFUSED and action.executed == []
    (only,) = log.records()
    assert only["event"] == "finished" and only["started_id"] is None


async def test_an_unwritable_audit_log_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").mkdir()  # not a file: every write fails, even as root
    log = AuditLog(tmp_path / "audit.jsonl")
    action = Change()
    result = await runner_for(log).run(action)
    assert result.outcome is Outcome.REFUSED and action.executed == []
    assert result.error is not None and "not started: cannot write the audit log" in result.error
    assert "nothing was changed" in result.error


async def test_a_full_disk_refuses_to_start(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    def full(record: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(log, "append", full)
    action = Change()
    result = await runner_for(log).run(action)
    assert result.outcome is Outcome.REFUSED and action.executed == []
    assert result.error is not None and "No space left on device" in result.error


# --------------------------------------------------------------------------- a real SIGKILL


CHILD = textwrap.dedent("""
    import asyncio, sys
    from backends.actions import Action, ActionRunner, Step
    from backends.audit import AuditLog

    class Slow(Action):
        name = "pg.switchover"
        async def execute(self):
            yield Step("first step")
            print("first step done", flush=True)
            await asyncio.sleep(600)
            yield Step("never")

    asyncio.run(ActionRunner(AuditLog(sys.argv[1])).run(Slow("pg-2")))
""")


def test_sigkill_mid_action_reads_running_then_interrupted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log.path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "first step done"
        (item,) = log.unfinished()
        assert item.state == RUNNING and item.record["pid"] == child.pid
        assert intent.alerts([item]) == []  # running is not wrong
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    (item,) = log.unfinished()
    assert item.state == INTERRUPTED
    (entry,) = log.read()
    assert entry["outcome"] == "interrupted" and entry["action"] == "pg.switchover"


# --------------------------------------------------------------------------- front ends


def test_sfops_audit_shows_interrupted_with_what_to_check_and_ack(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    config = tmp_path / "sfops.toml"
    config.write_text(f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\n')
    log = AuditLog(tmp_path / "audit.jsonl")
    s = started()
    log.append(s)
    assert main(["--config", str(config), "audit"]) == 0
    out = capsys.readouterr().out
    assert "pg.switchover" in out and "interrupted" in out
    assert "INTERRUPTED: did not finish" in out and "exactly one primary" in out
    assert main(["--config", str(config), "audit", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["outcome"] == "interrupted"
    assert main(["--config", str(config), "audit", "--ack", s["id"]]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "audit"]) == 0
    out = capsys.readouterr().out
    assert "interrupted (resolved)" in out and "did not finish" not in out


def test_recent_actions_show_interrupted_in_red() -> None:
    from tui.render.overview import recent_action_rows

    (row,) = recent_action_rows(fold([started()]).actions)
    outcome = row[1][2]
    assert outcome.plain == "interrupted" and "red" in str(outcome.style)


async def test_cli_action_commands_warn_about_unfinished_actions(tmp_path: Path) -> None:
    import argparse
    import io

    from backends.config import parse
    from tui.commands._action import run_action

    cfg = parse(f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\n', tmp_path / "sfops.toml")
    s = started()
    AuditLog(tmp_path / "audit.jsonl").append(s)

    async def build(config: Any, runner: ActionRunner, stack: Any) -> Action:
        return Change()

    err = io.StringIO()
    args = argparse.Namespace(yes=True, json=True, force=False, read_only=False)
    code = await run_action(args, cfg, build, stdin=io.StringIO(), out=io.StringIO(), err=err)
    assert code == 0
    first = err.getvalue().splitlines()[0]
    assert first.startswith("sfops: warning: did not finish: pg.switchover pg-2")
    assert s["id"] in first and "sfops pg status" in first


async def test_the_runner_can_still_be_cancelled_after_the_intent(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    class Hang(Change):
        async def execute(self) -> AsyncIterator[Step]:
            yield Step("one")
            await asyncio.sleep(60)

    task = asyncio.create_task(runner_for(log).run(Hang()))
    while len(log.records()) < 1:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first, last = log.records()
    assert last["outcome"] == "cancelled" and last["started_id"] == first["id"]
    assert log.unfinished() == []
