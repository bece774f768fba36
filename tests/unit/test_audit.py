from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from backends import audit as audit_module
from backends.audit import AuditLog, AuditRecord

FIELDS = {
    "ts", "user", "host", "action", "target", "params", "forced", "preflight", "verify",
    "outcome", "error", "duration_s", "steps", "id", "event", "started_id",
}


def record(**overrides: object) -> AuditRecord:
    values: dict[str, object] = dict(
        user="alice", host="bastion", action="nginx.drain", target="api-3",
        params={"wait": 30}, forced=False,
        preflight=[{"name": "other members healthy", "status": "pass", "detail": "2 of 2"}],
        verify=[], outcome="succeeded", error=None, duration_s=1.23456, steps=4,
    )
    values.update(overrides)
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_record_format_is_one_json_line_with_all_fields(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    log.append(record())
    lines = log.path.read_text().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) == FIELDS
    assert next(iter(data)) == "ts"
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert data["duration_s"] == 1.235
    assert data["preflight"] == [
        {"name": "other members healthy", "status": "pass", "detail": "2 of 2"}
    ]


def test_file_is_0600_and_append_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"old": 1}\n')
    path.chmod(0o644)
    log = AuditLog(path)
    log.append(record(target="a"))
    log.append(record(target="b"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == '{"old": 1}'
    assert [json.loads(line)["target"] for line in lines[1:]] == ["a", "b"]
    fresh = AuditLog(tmp_path / "new.jsonl")
    fresh.append(record())
    assert stat.S_IMODE(fresh.path.stat().st_mode) == 0o600


def test_each_record_is_fsynced_on_an_append_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    flags: list[int] = []
    real_fsync, real_open = os.fsync, os.open

    def spy_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    def spy_open(path: object, flag: int, *args: object, **kwargs: object) -> int:
        flags.append(flag)
        return real_open(path, flag, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_module.os, "fsync", spy_fsync)
    monkeypatch.setattr(audit_module.os, "open", spy_open)
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(record())
    log.append(record())
    assert len(synced) >= 2
    assert flags[0] & os.O_APPEND


async def test_async_write_runs_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    log = AuditLog(tmp_path / "audit.jsonl")
    real_append = log.append

    def spy(rec: AuditRecord) -> None:
        threads.append(threading.current_thread().name)
        real_append(rec)

    monkeypatch.setattr(log, "append", spy)
    await log.write(record())
    assert threads and threads[0] != threading.main_thread().name
    assert len(log.read()) == 1


async def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    await asyncio.gather(*(log.write(record(target=f"t{i}", params={"x": "y" * 5000}))
                           for i in range(20)))
    records = log.read()
    assert sorted(r["target"] for r in records) == sorted(f"t{i}" for i in range(20))


def test_read_returns_last_records_and_skips_torn_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert log.read() == []
    for index in range(5):
        log.append(record(target=f"t{index}"))
    with log.path.open("a") as file:
        file.write('{"ts": "2025-01-01T00:00:00Z", "user": "tor')  # power cut mid-record
    assert [r["target"] for r in log.read(limit=2)] == ["t3", "t4"]
    assert len(log.read()) == 5
