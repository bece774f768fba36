"""Append-only JSON-lines audit log: one record per executed action, fsynced.

Each record is written with a single ``write()`` on a descriptor opened ``O_APPEND`` and then
``fsync``ed, so concurrent writers (a TUI and a CLI on the same bastion) never interleave
partial lines and a crash right after an action cannot lose its record. The file is created
0600: parameters are redacted, but who did what at 03:00 is still nobody else's business.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        data["duration_s"] = round(self.duration_s, 3)
        ordered = {"ts": data.pop("ts")}  # ts first: the log reads naturally with `tail`
        ordered.update(data)
        return ordered


class AuditLog:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: AuditRecord | Mapping[str, Any]) -> None:
        """Write one record and fsync it (blocking; see :meth:`write` for async callers)."""
        data = record.to_json() if isinstance(record, AuditRecord) else dict(record)
        line = (json.dumps(data, ensure_ascii=False, default=str) + "\n").encode("utf-8")
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

    async def write(self, record: AuditRecord | Mapping[str, Any]) -> None:
        """Append from async code without blocking the event loop on fsync."""
        await asyncio.to_thread(self.append, record)

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` records (all when None), oldest first; unparseable lines (a
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
                if isinstance(value, dict):
                    records.append(value)
        return list(records)


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
