"""Append-only JSON-lines audit log, fsynced: a "started" record before an action's first
change (its intent) and a final record with its outcome.

An action that gets past its preflight writes a ``started`` record — who, what, the preflight
the operator saw, the lock held, and the process (host, pid) — *before* it changes anything;
if that write fails the action does not start. Its final record (``event`` "finished",
``started_id``) refers to it. A started record without a final one is an action that is still
``running`` (its process is alive on this machine) or was ``interrupted`` (SIGKILL, OOM,
power cut): :meth:`AuditLog.read` shows it so, and :meth:`AuditLog.unfinished` lists those
nobody has dealt with yet. Records written before intent records existed (no ``id``, no
``event``) read as finished actions.

Each record is written with a single ``write()`` on a descriptor opened ``O_APPEND`` and then
``fsync``ed, so concurrent writers (a TUI and a CLI on the same bastion) never interleave
partial lines and a crash right after an action cannot lose its record. The file is created
0600: parameters are redacted, but who did what at 03:00 is still nobody else's business.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.secrets import redact_value

STARTED = "started"  # an action's intent, written before its first change
FINISHED = "finished"  # its outcome; refers to the started record (``started_id``)
ACKNOWLEDGED = "acknowledged"  # an operator checked an interrupted action (``started_id``)

# How an unfinished action (a started record without a final one) reads now.
RUNNING = "running"  # its sfops process is alive on this machine
INTERRUPTED = "interrupted"  # its sfops process is gone: it stopped without an outcome
UNFINISHED = "unfinished"  # started on another machine: whether it still runs is unknown here


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A record id: random, 16 hex digits (unique enough for one audit log, short to quote)."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class AuditRecord:
    user: str
    host: str
    action: str
    target: str
    params: Mapping[str, Any]  # already redacted
    forced: bool
    preflight: Sequence[Mapping[str, str]]  # [{name, status, detail}]
    verify: Sequence[Mapping[str, str]]
    outcome: str  # succeeded | failed | refused | cancelled | interrupted
    error: str | None
    duration_s: float
    steps: int
    ts: str = field(default_factory=now_iso)  # ISO 8601 UTC, when the run started
    id: str = field(default_factory=new_id)
    started_id: str | None = None  # the started record (None: refused before any change)
    # The write-path canary sent after the action (backends.writepath), as JSON; None: none
    # was sent (the key is then left out of the line).
    write_path: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        data["duration_s"] = round(self.duration_s, 3)
        if data["write_path"] is None:  # only actions followed by a canary carry it
            del data["write_path"]
        # ts first: the log reads naturally with `tail`
        ordered = {"ts": data.pop("ts"), "id": data.pop("id"), "event": FINISHED}
        ordered.update(data)
        return ordered


@dataclass(frozen=True)
class StartedRecord:
    """The intent: written, fsynced, before the action's first change."""

    user: str
    host: str
    action: str
    target: str
    params: Mapping[str, Any]  # already redacted
    forced: bool
    preflight: Sequence[Mapping[str, str]]  # the checks the operator saw (and re-checks)
    lock: Mapping[str, Any] | None = None  # the lock held for the target, when there is one
    process: Mapping[str, Any] = field(default_factory=lambda: process_identity())
    ts: str = field(default_factory=now_iso)
    id: str = field(default_factory=new_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts, "id": self.id, "event": STARTED, "user": self.user,
            "host": self.host, "action": self.action, "target": self.target,
            "params": dict(self.params), "forced": self.forced,
            "preflight": [dict(c) for c in self.preflight],
            "lock": None if self.lock is None else dict(self.lock),
            **self.process,  # pid, node, boot_id, pid_start: is it still running?
            "outcome": STARTED,
        }


@dataclass(frozen=True)
class Unfinished:
    """A started record without a final one, judged now."""

    record: Mapping[str, Any]  # the started record, as logged
    state: str  # RUNNING | INTERRUPTED | UNFINISHED
    resolved_by: Mapping[str, Any] | None = None  # a later record that dealt with it

    @property
    def id(self) -> str:
        return str(self.record.get("id", "?"))

    @property
    def action(self) -> str:
        return str(self.record.get("action", "?"))

    @property
    def target(self) -> str:
        return str(self.record.get("target", "?"))

    @property
    def resolved(self) -> bool:
        return self.resolved_by is not None

    def describe(self) -> str:
        """E.g. "pg.switchover pg-2, started … by alice@bastion (record 3f…): interrupted"."""
        rec = self.record
        who = f"{rec.get('user', '?')}@{rec.get('host', '?')}"
        where = f"pid {rec.get('pid', '?')}"
        if self.state == UNFINISHED:
            where += f" on {rec.get('node', '?')}: cannot tell from here whether it still runs"
        return (f"{self.action} {self.target}, started {rec.get('ts', '?')} by {who} "
                f"(record {self.id}, {where}): {self.state}")


@dataclass(frozen=True)
class AuditView:
    actions: list[dict[str, Any]]  # one entry per action, oldest first
    unfinished: list[Unfinished]  # every started record without a final one, oldest first


def fold(records: Iterable[Mapping[str, Any]],
         alive: Callable[[Mapping[str, Any]], str] | None = None) -> AuditView:
    """Raw records (oldest first) → one entry per action and the unfinished ones.

    A started record with a final one is represented by the final one. A started record
    without one is shown as logged with ``outcome`` replaced by its state now (running,
    interrupted, unfinished), ``unfinished`` true and ``resolved`` set when a later record
    dealt with it: an acknowledgement, or a later action of the same backend that succeeded
    (its preflight showed the warning; the operator acted)."""
    judge = alive or process_state
    actions: list[dict[str, Any]] = []
    open_started: dict[str, int] = {}  # started id → its index in actions
    resolved: dict[str, Mapping[str, Any]] = {}
    for record in records:
        event = record.get("event")
        if event == STARTED and isinstance(record.get("id"), str):
            open_started[record["id"]] = len(actions)
            actions.append(dict(record))
            continue
        if event == ACKNOWLEDGED:
            ref = record.get("started_id")
            if isinstance(ref, str) and ref in open_started:
                resolved.setdefault(ref, record)
            continue
        ref = record.get("started_id")
        if isinstance(ref, str) and ref in open_started:
            actions[open_started.pop(ref)] = dict(record)
        else:
            actions.append(dict(record))
        if record.get("outcome") == "succeeded":
            family = _family(record.get("action"))
            for started_id, index in open_started.items():
                if _family(actions[index].get("action")) == family:
                    resolved.setdefault(started_id, record)
    unfinished: list[Unfinished] = []
    for started_id, index in open_started.items():
        entry = actions[index]
        state = judge(entry)
        by = None if state == RUNNING else resolved.get(started_id)
        item = Unfinished(record=dict(entry), state=state, resolved_by=by)
        unfinished.append(item)
        entry.update(outcome=state, unfinished=True, resolved=item.resolved,
                     error=entry.get("error") or _no_outcome(item))
    return AuditView(actions, unfinished)


def _family(action: Any) -> str:
    return str(action).partition(".")[0]


def _no_outcome(item: Unfinished) -> str:
    if item.state == RUNNING:
        return f"in progress (pid {item.record.get('pid', '?')})"
    if item.state == UNFINISHED:
        return (f"no outcome recorded; started on {item.record.get('node', '?')} "
                f"(pid {item.record.get('pid', '?')})")
    return f"no outcome recorded: sfops (pid {item.record.get('pid', '?')}) stopped mid-action"


# --------------------------------------------------------------------------- processes


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """What tells later whether this process still runs: pid, machine, boot, start time."""
    pid = os.getpid() if pid is None else pid
    identity: dict[str, Any] = {"pid": pid, "node": socket.gethostname()}
    if (boot := _boot_id()) is not None:
        identity["boot_id"] = boot
    if (start := _pid_start(pid)) is not None:
        identity["pid_start"] = start
    return identity


def process_state(record: Mapping[str, Any]) -> str:
    """RUNNING when the started record's process is alive on this machine (same boot, same
    process start time: a recycled pid is not it), INTERRUPTED when it is gone, UNFINISHED
    when it ran on another machine."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return INTERRUPTED  # an intent record without a process cannot still be running
    node = record.get("node")
    if node is not None and node != socket.gethostname():
        return UNFINISHED
    boot = record.get("boot_id")
    if boot is not None and (here := _boot_id()) is not None and boot != here:
        return INTERRUPTED  # this machine rebooted since
    start = record.get("pid_start")
    if start is not None and (now := _pid_start(pid)) is not None:
        return RUNNING if now == start else INTERRUPTED
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return INTERRUPTED
    except PermissionError:
        return RUNNING  # exists, another user's
    except OSError:
        return INTERRUPTED
    return RUNNING


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


class AuditLog:
    """One audit log file. Several environments may share it: with ``env`` set, every record
    written carries ``"env"`` and reading sees only that environment's records — and those
    without ``env`` (written before records carried one: which environment they were about
    is unknown, so every environment sees them, an interrupted action included)."""

    def __init__(self, path: str | os.PathLike[str], env: str | None = None) -> None:
        self.path = Path(path)
        self.env = env
        self._lock = threading.Lock()

    def append(self, record: AuditRecord | StartedRecord | Mapping[str, Any]) -> None:
        """Write one record and fsync it (blocking; see :meth:`write` for async callers).
        Raises OSError when it cannot (the record is then not on disk)."""
        data = (record.to_json() if isinstance(record, AuditRecord | StartedRecord)
                else dict(record))
        # Parameters and details are redacted by the runner; this is the last redaction, by
        # the value of every secret this process read, before the record reaches the disk.
        data = redact_value(json.loads(json.dumps(data, default=str)))
        if self.env is not None and "env" not in data:
            data = _with_env(data, self.env)
        line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            created = not self.path.exists()
            if created:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                view = memoryview(line)
                while view:  # a regular-file write is complete in practice; be exact anyway
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)

    async def write(self, record: AuditRecord | StartedRecord | Mapping[str, Any]) -> None:
        """Append from async code without blocking the event loop on fsync."""
        await asyncio.to_thread(self.append, record)

    def acknowledge(self, started_id: str, *, user: str, host: str) -> dict[str, Any]:
        """Record that an operator checked an interrupted action: it is no longer warned
        about (it still reads as interrupted). KeyError when no such unfinished action."""
        found = [u for u in self.unfinished(include_resolved=True) if u.id == started_id]
        if not found:
            raise KeyError(started_id)
        record = {"ts": now_iso(), "id": new_id(), "event": ACKNOWLEDGED,
                  "started_id": started_id, "user": user, "host": host}
        if "env" in found[0].record:  # read with the action it acknowledges
            record["env"] = found[0].record["env"]
        self.append(record)
        return record

    def view(self, limit: int | None = None) -> AuditView:
        """The last ``limit`` actions (all when None) and every unfinished one."""
        folded = fold(self.records())
        actions = folded.actions if limit is None else folded.actions[-limit:] if limit else []
        return AuditView(actions, folded.unfinished)

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` actions (all when None), oldest first, one entry each: the
        final record as logged, or for an action without one its started record with the
        ``outcome`` it has now (running, interrupted, unfinished; see :func:`fold`)."""
        return self.view(limit).actions

    def unfinished(self, *, include_resolved: bool = False) -> list[Unfinished]:
        """Started records without a final one (running ones included), oldest first;
        those already dealt with only when ``include_resolved``."""
        return [u for u in self.view(0).unfinished if include_resolved or not u.resolved]

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` raw records (all when None), oldest first; unparseable lines (a
        torn final line after a power cut) are skipped."""
        if not self.path.exists():
            return []
        records: deque[dict[str, Any]] = deque(maxlen=limit)
        with self.path.open(encoding="utf-8", errors="replace") as file:
            for line in file:
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(value, dict) and self._mine(value):
                    records.append(value)
        return list(records)

    def _mine(self, record: Mapping[str, Any]) -> bool:
        env = record_env(record)
        return self.env is None or env is None or env == self.env


def record_env(record: Mapping[str, Any]) -> str | None:
    """The environment a record belongs to (None: written before records carried one)."""
    env = record.get("env")
    return env if isinstance(env, str) and env else None


def _with_env(data: dict[str, Any], env: str) -> dict[str, Any]:
    """``env`` right after the record's ts, id and event (the log reads naturally)."""
    head: dict[str, Any] = {k: data[k] for k in ("ts", "id", "event") if k in data}
    return {**head, "env": env, **{k: v for k, v in data.items() if k not in head}}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
