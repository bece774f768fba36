"""The timeline's store: one SQLite file in ``state_dir`` (``timeline.sqlite3``), bounded by
age and rows, surviving restarts.

SQLite (the standard library's ``sqlite3``) rather than a file of our own: several sfops
processes (two operators' TUIs, a runbook's ``sfops timeline``) write at once, and SQLite's
locking, WAL journal and busy timeout already make that safe. Each connection waits up to
``busy_timeout`` for another writer (``database is locked`` only after that); a reading is
written in one ``BEGIN IMMEDIATE`` transaction that compares it with the stored state, so the
first process to see a change records it and the others find it already there.

This class is synchronous and owned by one thread: :mod:`backends.timeline.observer` runs it
in its own worker thread, never on the event loop.

Tables: ``events`` (changes: when, source, kind, subject, level, message, data; ``dedupe``
unique for events with their own identity), ``spans`` (when an observer was watching: start,
last heartbeat, stop — the rest is a gap), ``sources`` (each source's last contact, error and
last facts), ``snapshots`` (the status before and after each action, zlib-compressed JSON).
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.secrets import redact_value, scrub_known
from backends.timeline.model import Change, Derive, Reading, SourceState, apply_reading

FILE_NAME = "timeline.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 5.0
PRUNE_EVERY = 500  # writes between two prunes (and one at open)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, observed REAL NOT NULL, source TEXT NOT NULL,
    kind TEXT NOT NULL, subject TEXT NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}', dedupe TEXT UNIQUE, observer TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS spans (
    id TEXT PRIMARY KEY, observer TEXT NOT NULL, started REAL NOT NULL,
    last_seen REAL NOT NULL, stopped REAL, sources TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY, title TEXT NOT NULL, reachable INTEGER NOT NULL, last_ok REAL,
    last_attempt REAL NOT NULL, error TEXT, facts TEXT NOT NULL DEFAULT '{}', facts_at REAL);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, action_id TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, phase TEXT NOT NULL, backend TEXT NOT NULL, taken_at REAL,
    ok INTEGER NOT NULL, error TEXT, summary TEXT NOT NULL DEFAULT '{}', status BLOB);
CREATE INDEX IF NOT EXISTS snapshots_ts ON snapshots (ts);
"""


class TimelineError(Exception):
    """The store cannot be used; the message names the file and the configuration key."""


@dataclass(frozen=True)
class Retention:
    """``[sfops] timeline_retention_hours`` and ``timeline_max_events``."""

    max_age_s: float = 7 * 86400.0
    max_events: int = 100_000
    max_snapshots: int = 400  # before/after per backend per action: 100 actions or more


@dataclass(frozen=True)
class StoredEvent:
    id: int
    ts: float
    observed: float
    source: str
    kind: str
    subject: str
    level: str
    message: str
    data: Mapping[str, Any]
    observer: str


@dataclass(frozen=True)
class Span:
    """An observer's watch: from ``started`` to ``stopped`` (None: it did not stop cleanly,
    or still runs — its ``last_seen`` heartbeat tells)."""

    id: str
    observer: str
    started: float
    last_seen: float
    stopped: float | None


@dataclass(frozen=True)
class StoredSnapshot:
    id: int
    ts: float
    action_id: str
    action: str
    target: str
    phase: str  # "before" | "after"
    backend: str
    taken_at: float | None
    ok: bool
    error: str | None
    summary: Mapping[str, Any]
    status: Any  # the backend's status JSON (redacted), None when not read


class TimelineStore:
    def __init__(self, path: Path, retention: Retention = Retention(), *,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.retention = retention
        self.busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._facts_cache: dict[str, tuple[float | None, dict[str, str]]] = {}

    @classmethod
    def in_dir(cls, state_dir: Path, retention: Retention = Retention()) -> TimelineStore:
        return cls(Path(state_dir) / FILE_NAME, retention)

    # -- connection ----------------------------------------------------------------------
    def open(self) -> TimelineStore:
        if self._db is not None:
            return self
        where = f"{self.path} ([sfops] state_dir)"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 before SQLite opens it: its -wal and -shm files take the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                 check_same_thread=True)
        except OSError as exc:
            raise TimelineError(f"cannot open the timeline store {where}: "
                                f"{exc.strerror or exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never torn
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise TimelineError(f"the timeline store {where} was written by a newer sfops "
                                    f"(schema {version}); use that version or another "
                                    "state_dir")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise TimelineError(f"the timeline store {where} cannot be used: {exc} (nothing "
                                "was changed; move the file away to start a new one)") from exc
        self._db = db
        self.prune()
        return self

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    @property
    def db(self) -> sqlite3.Connection:
        return self.open()._db  # type: ignore[return-value]

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """``work`` in one write transaction, waiting up to ``busy_timeout`` for another
        writer (then ``sqlite3.OperationalError: database is locked``)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
        except BaseException:
            db.execute("ROLLBACK")
            self._facts_cache.clear()  # it may hold what was rolled back
            raise
        db.execute("COMMIT")
        return result

    def _write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """:meth:`_transaction`; a prune every PRUNE_EVERY writes keeps the store bounded."""
        result = self._transaction(work)
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self.prune()
        return result

    # -- readings ------------------------------------------------------------------------
    def record(self, readings: Sequence[Reading], derive: Callable[[str, str], Derive], *,
               observer: str, span: str | None = None, unseen_after: float = 30.0,
               ) -> list[Change]:
        """Compare each reading with the stored state, record the changes, store the new
        state; the observer's span is seen now. Returns the changes recorded."""

        def work(db: sqlite3.Connection) -> list[Change]:
            recorded: list[Change] = []
            for reading in readings:
                state = self._state(db, reading.source)
                changes, new_state = apply_reading(
                    state, reading, derive(reading.source, reading.title),
                    unseen_after=unseen_after)
                recorded += self._insert(db, changes, reading.taken_at, observer)
                self._save_state(db, new_state, facts_changed=state is None
                                 or new_state.facts != state.facts)
            if span is not None and readings:
                db.execute("UPDATE spans SET last_seen = max(last_seen, ?) WHERE id = ?",
                           (max(r.taken_at for r in readings), span))
            return recorded

        result: list[Change] = self._write(work)
        return result

    def add(self, changes: Iterable[Change], observed: float, observer: str = "") -> None:
        """Record changes as they are (tests, imports)."""
        self._write(lambda db: self._insert(db, list(changes), observed, observer))

    def _insert(self, db: sqlite3.Connection, changes: Sequence[Change], observed: float,
                observer: str) -> list[Change]:
        recorded = []
        for c in changes:
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (ts, observed, source, kind, subject, level, "
                "message, data, dedupe, observer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.at if c.at is not None else observed, observed, c.source, c.kind,
                 scrub_known(c.subject), c.level, scrub_known(c.message),
                 json.dumps(redact_value(dict(c.data)), default=str), c.key, observer))
            if cursor.rowcount:
                recorded.append(c)
        return recorded

    def _state(self, db: sqlite3.Connection, source: str) -> SourceState | None:
        row = db.execute("SELECT title, reachable, last_ok, last_attempt, error, facts_at "
                         "FROM sources WHERE source = ?", (source,)).fetchone()
        if row is None:
            return None
        title, reachable, last_ok, last_attempt, error, facts_at = row
        cached = self._facts_cache.get(source)
        if cached is not None and cached[0] == facts_at:
            facts = cached[1]
        else:  # read only when another process (or this one) stored newer facts
            (text,) = db.execute("SELECT facts FROM sources WHERE source = ?",
                                 (source,)).fetchone()
            facts = _facts(text)
            self._facts_cache[source] = (facts_at, facts)
        return SourceState(source, title, bool(reachable), last_ok, last_attempt, error,
                           facts, facts_at)

    def _save_state(self, db: sqlite3.Connection, state: SourceState, *,
                    facts_changed: bool) -> None:
        db.execute(
            "INSERT INTO sources (source, title, reachable, last_ok, last_attempt, error, "
            "facts_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
            "title = excluded.title, reachable = excluded.reachable, last_ok = "
            "excluded.last_ok, last_attempt = excluded.last_attempt, error = excluded.error, "
            "facts_at = excluded.facts_at",
            (state.source, state.title, int(state.reachable), state.last_ok,
             state.last_attempt, scrub_known(state.error) if state.error else None,
             state.facts_at))
        facts = dict(state.facts)
        if facts_changed:  # a large cluster's facts are written only when they change
            db.execute("UPDATE sources SET facts = ? WHERE source = ?",
                       (json.dumps(facts), state.source))
        self._facts_cache[state.source] = (state.facts_at, facts)

    # -- spans -----------------------------------------------------------------------------
    def start_span(self, span: str, observer: str, now: float,
                   sources: Sequence[str] = ()) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO spans (id, observer, started, last_seen, stopped, sources) "
            "VALUES (?, ?, ?, ?, NULL, ?)", (span, observer, now, now, json.dumps(list(sources)))))

    def heartbeat(self, span: str, now: float) -> None:
        self._write(lambda db: db.execute(
            "UPDATE spans SET last_seen = max(last_seen, ?) WHERE id = ?", (now, span)))

    def stop_span(self, span: str, now: float) -> None:
        self._write(lambda db: db.execute(
            "UPDATE spans SET last_seen = max(last_seen, ?), stopped = ? WHERE id = ?",
            (now, now, span)))

    # -- snapshots -----------------------------------------------------------------------
    def add_snapshot(self, *, ts: float, action_id: str, action: str, target: str, phase: str,
                     backend: str, taken_at: float | None, ok: bool, error: str | None,
                     summary: Mapping[str, Any], status: Any) -> None:
        blob = None if status is None else zlib.compress(
            json.dumps(redact_value(status), default=str).encode("utf-8"))
        self._write(lambda db: db.execute(
            "INSERT INTO snapshots (ts, action_id, action, target, phase, backend, taken_at, "
            "ok, error, summary, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, action_id, action, scrub_known(target), phase, backend, taken_at, int(ok),
             scrub_known(error) if error else None,
             json.dumps(redact_value(dict(summary)), default=str), blob)))

    # -- queries ---------------------------------------------------------------------------
    def events(self, since: float, until: float | None = None,
               sources: Iterable[str] | None = None) -> list[StoredEvent]:
        query = ("SELECT id, ts, observed, source, kind, subject, level, message, data, "
                 "observer FROM events WHERE ts >= ?")
        args: list[Any] = [since]
        if until is not None:
            query += " AND ts <= ?"
            args.append(until)
        if sources is not None:
            wanted = list(sources)
            query += f" AND source IN ({', '.join('?' * len(wanted))})"
            args += wanted
        rows = self.db.execute(query + " ORDER BY ts, id", args).fetchall()
        return [StoredEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _json(r[8]), r[9])
                for r in rows]

    def spans(self, since: float, until: float | None = None) -> list[Span]:
        """Spans that may overlap ``[since, until]``."""
        rows = self.db.execute(
            "SELECT id, observer, started, last_seen, stopped FROM spans WHERE "
            "coalesce(stopped, last_seen) >= ? AND started <= ? ORDER BY started",
            (since, until if until is not None else float("inf"))).fetchall()
        return [Span(*row) for row in rows]

    def sources(self) -> list[SourceState]:
        rows = self.db.execute("SELECT source, title, reachable, last_ok, last_attempt, error, "
                               "facts_at FROM sources ORDER BY source").fetchall()
        return [SourceState(r[0], r[1], bool(r[2]), r[3], r[4], r[5], {}, r[6]) for r in rows]

    def snapshots(self, since: float, until: float | None = None) -> list[StoredSnapshot]:
        rows = self.db.execute(
            "SELECT id, ts, action_id, action, target, phase, backend, taken_at, ok, error, "
            "summary, status FROM snapshots WHERE ts >= ? AND ts <= ? ORDER BY ts, id",
            (since, until if until is not None else float("inf"))).fetchall()
        return [StoredSnapshot(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                               r[9], _json(r[10]), _blob(r[11])) for r in rows]

    def count(self, table: str = "events") -> int:
        if table not in ("events", "spans", "snapshots", "sources"):
            raise ValueError(table)
        return int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    # -- bounds ----------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Drop what is older than the retention, then the oldest beyond the row limits.
        Returns the number of rows removed."""
        import time

        cutoff = (time.time() if now is None else now) - self.retention.max_age_s
        limit_events, limit_snapshots = self.retention.max_events, self.retention.max_snapshots

        def work(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount
            removed += db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts DESC, id DESC "
                "LIMIT -1 OFFSET ?)", (limit_events,)).rowcount
            removed += db.execute("DELETE FROM spans WHERE coalesce(stopped, last_seen) < ?",
                                  (cutoff,)).rowcount
            removed += db.execute("DELETE FROM snapshots WHERE ts < ?", (cutoff,)).rowcount
            removed += db.execute(
                "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots ORDER BY ts DESC, "
                "id DESC LIMIT -1 OFFSET ?)", (limit_snapshots,)).rowcount
            return int(removed)

        removed: int = self._transaction(work)
        return removed


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _facts(text: str | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in _json(text).items()}


def _blob(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return json.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, ValueError):
        return None
