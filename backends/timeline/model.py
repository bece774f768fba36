"""Timeline values and the pure step from one reading to the changes it shows.

A backend's reading is turned into an :class:`Observation`: *facts* (flat ``key → value``
strings, e.g. ``member:api-2 → failing``) that are compared with the facts of the previous
reading, *notes* that say why (shown with a change, never compared), and *events* that carry
their own time (a Kubernetes warning event). Facts are plain strings so the last ones can be
stored and compared across processes and restarts: whichever sfops process reads first records
a change, the others find it already in the stored state (see :func:`apply_reading`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# How much a change matters, best to worst (the colour of its row).
OK, INFO, WARNING, CRITICAL = "ok", "info", "warning", "critical"
LEVELS = (OK, INFO, WARNING, CRITICAL)
# More changes than this of one kind in one reading read as one line ("25 pods appeared").
COLLAPSE_AFTER = 8
NAMES_SHOWN = 5
TIMES = "\u00d7"  # multiplication sign: "2→1 x5" with a real times
# An observer writes a reading or a heartbeat at least this often; one silent for three
# heartbeats is gone (its span ends at its last sign of life, and a gap begins).
HEARTBEAT_S = 10.0
STALE_AFTER_S = 3 * HEARTBEAT_S

Facts = Mapping[str, str]


@dataclass(frozen=True)
class Change:
    """One thing that changed. ``message`` may hold outside text (names, server errors): it
    is shown through safe_text, never as markup."""

    source: str  # the backend's name ("nginx", "postgres", …)
    kind: str  # "member-state", "role", "leader-moves", "warning-event", …
    subject: str  # what changed: "api-2", "pg-1", "streamforge/api-7d9", "*"
    message: str
    level: str = INFO
    at: float | None = None  # its own time (epoch s), e.g. an event's; None: when observed
    # Recorded once whoever sees it (a Kubernetes event's name and count); None: not deduped.
    key: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """What one good reading of a backend says, in comparable form."""

    facts: Facts
    notes: Mapping[str, str] = field(default_factory=dict)
    events: tuple[Change, ...] = ()


@dataclass(frozen=True)
class SourceState:
    """What the store remembers of one source between readings (any process's)."""

    source: str
    title: str
    reachable: bool
    last_ok: float | None  # epoch s of the last good reading
    last_attempt: float
    error: str | None
    facts: Facts
    facts_at: float | None  # the reading the facts are from


@dataclass(frozen=True)
class Reading:
    """One refresh of one backend: an observation, or the error that made it fail."""

    source: str
    title: str
    taken_at: float  # epoch s
    observation: Observation | None
    error: str | None = None


Derive = Callable[[Facts, Observation], list[Change]]


_MISSING = object()


def diff(old: Facts, new: Facts, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, old value, new value)`` for each key under ``prefix`` that both readings have
    and whose value differs (a key only one side has is a thing that appeared or went: see
    :func:`appeared`), by key. Only the differences are sorted: a 5,000-pod cluster's
    11,000 facts are compared, never sorted."""
    found = []
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if before is not _MISSING and before != value and key.startswith(prefix):
            found.append((key, before, value))
    found.sort()
    return found  # type: ignore[return-value]


def appeared(old: Facts, new: Facts, prefix: str) -> list[str]:
    return sorted(k for k in new if k not in old and k.startswith(prefix))


def vanished(old: Facts, new: Facts, prefix: str) -> list[str]:
    return sorted(k for k in old if k not in new and k.startswith(prefix))


@dataclass(frozen=True)
class Delta:
    """Every difference between two readings' facts, found in one pass over them: what
    :func:`diff`, :func:`appeared` and :func:`vanished` return for any prefix, without a
    pass over every fact per prefix (a big cluster's facts, several kinds of change)."""

    changed: tuple[tuple[str, str, str], ...]  # (key, old value, new value), by key
    new_keys: tuple[str, ...]  # sorted
    gone_keys: tuple[str, ...]  # sorted

    @classmethod
    def of(cls, old: Facts, new: Facts) -> Delta:
        changed: list[tuple[str, str, str]] = []
        new_keys: list[str] = []
        for key, value in new.items():
            before = old.get(key, _MISSING)
            if before is _MISSING:
                new_keys.append(key)
            elif before != value:
                changed.append((key, before, value))  # type: ignore[arg-type]
        gone = sorted(k for k in old if k not in new) if len(old) + len(new_keys) != len(
            new) else []  # every old key is still there: nothing went
        return cls(tuple(sorted(changed)), tuple(sorted(new_keys)), tuple(gone))

    def diff(self, prefix: str = "") -> list[tuple[str, str, str]]:
        return [c for c in self.changed if c[0].startswith(prefix)]

    def appeared(self, prefix: str) -> list[str]:
        return [k for k in self.new_keys if k.startswith(prefix)]

    def vanished(self, prefix: str) -> list[str]:
        return [k for k in self.gone_keys if k.startswith(prefix)]


def names(items: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    """``a, b, c and 4 more``."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def collapse(changes: Sequence[Change], limit: int = COLLAPSE_AFTER) -> list[Change]:
    """Many changes of one kind in one reading (a rollout of 200 pods, a drained broker's
    1,000 leaderships) become one line naming the first few, at the worst level among them:
    the timeline stays readable and the store bounded. Events (their own time, a dedupe key)
    are never merged."""
    groups: dict[tuple[str, str], list[Change]] = {}
    result: list[Change | tuple[str, str]] = []
    for change in changes:
        if change.key is not None or change.at is not None:
            result.append(change)
            continue
        ident = (change.source, change.kind)
        if ident not in groups:
            groups[ident] = []
            result.append(ident)
        groups[ident].append(change)
    merged: list[Change] = []
    for item in result:
        if isinstance(item, Change):
            merged.append(item)
            continue
        group = groups[item]
        if len(group) <= limit:
            merged.extend(group)
            continue
        worst = max(group, key=lambda c: LEVELS.index(c.level))
        merged.append(replace(
            worst, subject="*",
            message=f"{len(group)} changes ({item[1]}): " + names([c.message for c in group], 3),
            data={"subjects": [c.subject for c in group]}))
    return merged


def unseen_for(state: SourceState | None, taken_at: float) -> float | None:
    """Seconds between this reading and the facts it is compared with."""
    if state is None or state.facts_at is None:
        return None
    return max(0.0, taken_at - state.facts_at)


def apply_reading(state: SourceState | None, reading: Reading, derive: Derive, *,
                  unseen_after: float) -> tuple[list[Change], SourceState]:
    """The changes one reading shows against the stored state, and the state to store.

    - A failed reading after a good one: the source became unreachable (a first reading that
      fails says so too). A good one after a failed one: it answers again.
    - A good reading's facts are compared with the stored facts. The first facts ever are a
      baseline (only events with their own time are recorded). A reading older than the
      stored facts (another process read later and wrote first) changes nothing.
    - Changes compared with facts older than ``unseen_after`` seconds happened while nobody
      saw the source (sfops was not running, or the source did not answer): they say so.
    """
    title = reading.title
    changes: list[Change] = []
    if reading.observation is None:
        error = reading.error or "no answer"
        if state is None or state.reachable:
            changes.append(Change(reading.source, "unreachable", "*",
                                  f"{title} unreachable: {error}", CRITICAL))
        new_state = SourceState(
            reading.source, title, False, state.last_ok if state else None,
            reading.taken_at, error, state.facts if state else {},
            state.facts_at if state else None)
        return changes, new_state
    observation = reading.observation
    if state is not None and not state.reachable:
        since = f" (no answer since {_clock(state.last_ok)})" if state.last_ok else ""
        changes.append(Change(reading.source, "reachable", "*",
                              f"{title} answers again{since}", OK))
    if state is not None and state.facts_at is not None and reading.taken_at < state.facts_at:
        # Another process read later and wrote first: this older reading changes nothing.
        return changes, replace(state, reachable=True, error=None,
                                last_attempt=max(state.last_attempt, reading.taken_at))
    observed: list[Change] = []
    if state is None or not state.facts:
        observed = [e for e in observation.events if e.at is not None]  # baseline
    else:
        observed = derive(state.facts, observation)
        unseen = unseen_for(state, reading.taken_at)
        if unseen is not None and unseen > unseen_after:
            note = f" (changed while not seen, since {_clock(state.facts_at)})"
            observed = [c if c.at is not None else
                        replace(c, message=c.message + note,
                                data={**c.data, "unseen_since": state.facts_at})
                        for c in observed]
    changes += observed
    new_state = SourceState(reading.source, title, True, reading.taken_at, reading.taken_at,
                            None, dict(observation.facts), reading.taken_at)
    return changes, new_state


def _clock(epoch: float | None) -> str:
    from datetime import UTC, datetime

    if epoch is None:
        return "?"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def level_of(healths: Iterable[str]) -> str:
    """The level of a state by its :class:`~backends.snapshot.Health` value."""
    worst = OK
    for health in healths:
        level = {"ok": OK, "unknown": INFO, "degraded": WARNING, "failed": CRITICAL,
                 "unreachable": CRITICAL}.get(health, INFO)
        if LEVELS.index(level) > LEVELS.index(worst):
            worst = level
    return worst
