"""sfops's own PostgreSQL memory, kept in ``<state_dir>/postgres.json``.

Two facts must outlive one process: the last WAL position seen on the primary (a failover run
from the CLI after the primary died needs it to bound data loss) and which former primaries
are fenced (so their reappearance as a primary raises a split-brain alert in any sfops).
Updates are read-modify-write under an exclusive ``flock``, written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from backends.postgres.model import LastPrimaryLsn

FILE_NAME = "postgres.json"


class PgState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / FILE_NAME

    # -- raw ---------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / f".{FILE_NAME}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with self._locked():
            data = self.read()
            change(data)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{FILE_NAME}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=2, sort_keys=True)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return data

    # -- last primary LSN --------------------------------------------------------------
    def last_primary_lsn(self) -> LastPrimaryLsn | None:
        entry = self.read().get("last_primary_lsn")
        if not isinstance(entry, dict):
            return None
        try:
            return LastPrimaryLsn(
                member=str(entry["member"]), lsn=int(entry["lsn"]),
                timeline=None if entry.get("timeline") is None else int(entry["timeline"]),
                seen_at=float(entry["seen_at"]),
                system_identifier=entry.get("system_identifier"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def record_primary_lsn(self, member: str, lsn: int, timeline: int | None,
                           streaming: Iterable[str] = (),
                           system_identifier: str | None = None) -> LastPrimaryLsn:
        """Remember the primary's position (and which standbys stream from it now)."""
        seen = LastPrimaryLsn(member, lsn, timeline, time.time(), system_identifier)
        streaming = list(streaming)

        def change(data: dict[str, Any]) -> None:
            if streaming:
                data.setdefault("streaming_seen", {}).update(
                    {name: seen.seen_at for name in streaming})
            old = data.get("last_primary_lsn")
            # Never move backwards on the same timeline (two sfops polling at once).
            if (isinstance(old, dict) and old.get("member") == member
                    and old.get("system_identifier") == system_identifier
                    and old.get("timeline") == timeline and int(old.get("lsn", 0)) > lsn):
                return
            data["last_primary_lsn"] = {"member": member, "lsn": lsn, "timeline": timeline,
                                        "seen_at": seen.seen_at,
                                        "system_identifier": system_identifier}

        self.update(change)
        return seen

    def streaming_seen(self, member: str) -> float | None:
        """When sfops last saw ``member`` streaming (wall clock), if ever."""
        value = self.read().get("streaming_seen", {}).get(member)
        return float(value) if isinstance(value, int | float) else None

    # -- fencing -----------------------------------------------------------------------
    def fenced(self) -> dict[str, dict[str, Any]]:
        entries = self.read().get("fenced")
        return {str(k): dict(v) for k, v in entries.items()} if isinstance(entries, dict) else {}

    def fence(self, member: str, *, reason: str, method: str, new_primary: str,
              system_identifier: str | None = None) -> None:
        def change(data: dict[str, Any]) -> None:
            data.setdefault("fenced", {})[member] = {
                "since": time.time(), "reason": reason, "method": method,
                "new_primary": new_primary, "system_identifier": system_identifier,
            }

        self.update(change)

    def unfence(self, member: str) -> None:
        def change(data: dict[str, Any]) -> None:
            fenced = data.get("fenced")
            if isinstance(fenced, dict):
                fenced.pop(member, None)

        self.update(change)
