"""The timeline as shown: the store's changes, every action from the audit log (any
operator, any process: read from the log itself, never copied) and the gaps nobody watched,
merged in time order and filtered. Pure: the CLI, the TUI screen and the incident export
build the same entries from the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backends.audit import ACKNOWLEDGED, STARTED, AuditLog, fold
from backends.service import duration_text
from backends.timeline.model import CRITICAL, INFO, OK, STALE_AFTER_S, WARNING, SourceState
from backends.timeline.store import Span, StoredEvent, TimelineStore

ACTIONS = "actions"  # the source of audit-log entries
SFOPS = "sfops"  # the source of gaps
MIN_GAP_S = 30.0  # shorter unobserved stretches are between two readings, not a gap
OUTCOME_LEVEL = {"succeeded": OK, "failed": CRITICAL, "refused": WARNING,
                 "cancelled": WARNING, "interrupted": CRITICAL, "running": INFO,
                 "unfinished": WARNING}


@dataclass(frozen=True)
class Entry:
    ts: float  # epoch seconds
    source: str  # a backend's name, ACTIONS or SFOPS
    kind: str
    subject: str
    level: str
    message: str  # outside text: shown through safe_text
    key: str  # stable across refreshes: the TUI's row key
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SourceAge:
    source: str
    title: str
    reachable: bool
    last_ok: float | None
    error: str | None

    def age(self, now: float) -> float | None:
        return None if self.last_ok is None else max(0.0, now - self.last_ok)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_ts(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- sources


def event_entries(events: Iterable[StoredEvent]) -> list[Entry]:
    return [Entry(e.ts, e.source, e.kind, e.subject, e.level, e.message, f"event:{e.id}",
                  {**e.data, "observer": e.observer}) for e in events]


def audit_entries(records: Sequence[Mapping[str, Any]]) -> list[Entry]:
    """Raw audit records (oldest first) → an entry when each action started and one when it
    ended (its start plus its duration); an action without an outcome reads as it is now
    (running, interrupted, unfinished)."""
    states = {u.id: u.state for u in fold(records).unfinished}
    entries: list[Entry] = []
    for index, record in enumerate(records):
        start = parse_ts(record.get("ts"))
        if start is None:
            continue
        ident = str(record.get("id") or f"{record.get('ts')}:{index}")
        who = f"{record.get('user', '?')}@{record.get('host', '?')}"
        what = f"{record.get('action', '?')} {record.get('target', '')}".rstrip()
        event = record.get("event")
        if event == STARTED:
            state = states.get(ident)
            message = f"{what} started by {who}" + (f" — now {state}" if state else "")
            entries.append(Entry(start, ACTIONS, "action-started", str(record.get("target")),
                                 OUTCOME_LEVEL.get(state or "", INFO), message,
                                 f"audit:{ident}", dict(record)))
            continue
        if event == ACKNOWLEDGED:
            entries.append(Entry(start, ACTIONS, "action-acknowledged", "*", INFO,
                                 f"{who} acknowledged the interrupted action "
                                 f"{record.get('started_id', '?')}", f"audit:{ident}",
                                 dict(record)))
            continue
        outcome = str(record.get("outcome", "?"))
        duration = record.get("duration_s")
        seconds = float(duration) if isinstance(duration, int | float) else 0.0
        message = f"{what}: {outcome} in {seconds:.1f} s by {who}"
        if record.get("forced"):
            message += " (forced)"
        if record.get("error"):
            message += f" — {record['error']}"
        level = OUTCOME_LEVEL.get(outcome, INFO)
        write_path = record.get("write_path")
        if isinstance(write_path, Mapping):  # the canary after it, or `sfops verify` (#17)
            hops = write_path.get("hops")
            if write_path.get("ok"):
                message += f"; write path ok ({len(hops) if isinstance(hops, list) else '?'} hops)"
            else:
                message += f"; users cannot write — {write_path.get('error') or 'incomplete'}"
                level = CRITICAL
        entries.append(Entry(start + seconds, ACTIONS, "action", str(record.get("target")),
                             level, message, f"audit:{ident}", dict(record)))
    return entries


def gaps(spans: Iterable[Span], since: float, until: float, *,
         stale_after: float, min_gap: float = MIN_GAP_S) -> list[Gap]:
    """The stretches of ``[since, until]`` no observer covered, longer than ``min_gap``.

    A span covers from its start to its stop; one that never stopped (a crash, or still
    running) to its last heartbeat — to ``until`` when that heartbeat is recent (within
    ``stale_after``: a live observer)."""
    covered: list[tuple[float, float]] = []
    for span in spans:
        if span.stopped is not None:
            end = span.stopped
        elif until - span.last_seen <= stale_after:
            end = until
        else:
            end = span.last_seen
        covered.append((span.started, max(end, span.started)))
    covered.sort()
    found: list[Gap] = []
    cursor = since
    for start, end in covered:
        if start - cursor > min_gap:
            found.append(Gap(cursor, min(start, until)))
        cursor = max(cursor, end)
        if cursor >= until:
            break
    if until - cursor > min_gap:
        found.append(Gap(cursor, until))
    return [g for g in found if g.end > g.start]


def gap_entries(found: Iterable[Gap], since: float | None = None) -> list[Entry]:
    """Gaps as entries. A gap cut by the window's start is keyed by its end (its start moves
    with the window: the row must stay the same row)."""
    return [Entry(g.start, SFOPS, "gap", "*", WARNING,
                  f"no observer from {iso(g.start)[11:19]} to {iso(g.end)[11:19]} UTC "
                  f"({duration_text(g.seconds)}): changes in this time were not seen",
                  f"gap:to:{g.end:.3f}" if g.start == since else f"gap:{g.start:.3f}",
                  {"from": iso(g.start), "to": iso(g.end),
                                         "seconds": round(g.seconds, 1)})
            for g in found]


# --------------------------------------------------------------------------- merged


def merge(*parts: Iterable[Entry], sources: Iterable[str] | None = None,
          text: str = "", since: float | None = None,
          until: float | None = None) -> list[Entry]:
    """Every entry in time order (a tie keeps actions before what they caused), filtered by
    source (a gap belongs to every backend source, never to actions alone), by ``text`` (any
    part, case-insensitive) and by time."""
    wanted = None if sources is None else set(sources)
    needle = text.lower()
    result = []
    for entry in (e for part in parts for e in part):
        if (since is not None and entry.ts < since) or (until is not None and entry.ts > until):
            continue
        if wanted is not None and entry.source not in wanted and not (
                entry.source == SFOPS and wanted - {ACTIONS}):
            continue
        if needle and needle not in f"{entry.source} {entry.subject} {entry.message}".lower():
            continue
        result.append(entry)
    # Stable: entries of one time keep the order they were recorded in.
    return sorted(result, key=lambda e: (e.ts, e.source != ACTIONS))


def source_ages(states: Iterable[SourceState]) -> list[SourceAge]:
    return [SourceAge(s.source, s.title, s.reachable, s.last_ok, s.error) for s in states]


def age_line(ages: Sequence[SourceAge], now: float) -> str:
    """"nginx 2s · postgres unreachable (last 48s ago) · kafka never"."""
    parts = []
    for age in ages:
        seconds = age.age(now)
        if seconds is None:
            parts.append(f"{age.source} never read")
        elif not age.reachable:
            parts.append(f"{age.source} unreachable (last good {duration_text(seconds)} ago)")
        else:
            parts.append(f"{age.source} {duration_text(seconds)} old")
    return " · ".join(parts) if parts else "no source read yet"


@dataclass(frozen=True)
class Timeline:
    entries: list[Entry]
    ages: list[SourceAge]
    gaps: list[Gap]
    since: float
    until: float
    problems: tuple[str, ...] = ()  # e.g. the audit log could not be read


def read(store: TimelineStore, records: Sequence[Mapping[str, Any]], *, since: float,
         until: float, sources: Iterable[str] | None = None, text: str = "",
         stale_after: float = STALE_AFTER_S, problems: Sequence[str] = ()) -> Timeline:
    """The timeline of ``[since, until]`` from the store and the audit log's raw
    ``records`` (blocking: run it in a worker thread)."""
    wanted = None if sources is None else list(sources)
    backends = None if wanted is None else [s for s in wanted if s not in (ACTIONS, SFOPS)]
    events = store.events(since, until, backends) if backends != [] else []
    found = gaps(store.spans(since, until), since, until, stale_after=stale_after)
    entries = merge(event_entries(events), audit_entries(records), gap_entries(found, since),
                    sources=wanted, text=text, since=since, until=until)
    return Timeline(entries, source_ages(store.sources()), found, since, until,
                    tuple(problems))


def read_with_audit(store: TimelineStore, audit: AuditLog, *, since: float,
                    until: float | None = None, sources: Iterable[str] | None = None,
                    text: str = "") -> tuple[Timeline, list[dict[str, Any]]]:
    """:func:`read` with the audit log's records (an unreadable log is a problem named in
    the timeline, not a reason to show nothing), and those records. Blocking."""
    problems: list[str] = []
    try:
        records = audit.records()
    except OSError as exc:
        records = []
        problems.append(f"cannot read the audit log {audit.path}: {exc.strerror or exc}")
    end = time.time() if until is None else until
    return read(store, records, since=since, until=end, sources=sources, text=text,
                problems=problems), records


def document(entries: Sequence[Entry], ages: Sequence[SourceAge], found_gaps: Sequence[Gap],
             *, since: float, until: float, env: str, store: str,
             error: str | None = None, problems: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON shape of ``sfops timeline -o json`` (and the export's timeline)."""
    return {
        "env": env,
        "store": store,
        "store_error": error,
        "problems": list(problems),
        "since": iso(since),
        "until": iso(until),
        "sources": [{"source": a.source, "title": a.title, "reachable": a.reachable,
                     "last_contact": iso(a.last_ok) if a.last_ok is not None else None,
                     "age_s": None if a.age(until) is None else round(a.age(until) or 0.0, 1),
                     "error": a.error} for a in ages],
        "gaps": [{"from": iso(g.start), "to": iso(g.end), "seconds": round(g.seconds, 1)}
                 for g in found_gaps],
        "entries": [{"ts": iso(e.ts), "source": e.source, "kind": e.kind,
                     "subject": e.subject, "level": e.level, "message": e.message,
                     "data": dict(e.data)} for e in entries],
    }
