"""Per-member traffic from nginx's JSON access log (``log_format streamforge_json``).

Open-source nginx has no per-upstream counters, so we read what it logs: each line names the
upstream address(es) tried, their statuses and response times. :class:`LogTail` reads only the
bytes appended since the last poll (through an executor, so the log may be on another host)
and notices rotation (new inode) and truncation (file shorter than our offset).
:class:`TrafficWindow` keeps the attempts of the last ``window`` seconds and computes rates and
percentiles per member address.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# How much of an existing log the first read looks at: enough for a window of history on a
# busy server without shipping a whole day's log over SSH.
INITIAL_BACKLOG_BYTES = 512 * 1024
MAX_READ_BYTES = 8 * 1024 * 1024  # per poll; a log growing faster is read over several polls

_GROUP_SEPARATOR = re.compile(r"\s+:\s+")  # "a, b : c" — internal redirect to another group


@dataclass(frozen=True)
class Attempt:
    """One request attempt to one upstream address (a retried request yields several)."""

    at: float  # epoch seconds when nginx logged the request (its end)
    address: str
    status: int | None  # upstream status of this attempt; None when unknown ("-")
    response_time: float | None  # seconds
    # When the request reached nginx (its log time minus $request_time): tells a request
    # that was already in flight at a reload from one routed under the new configuration.
    started: float | None = field(default=None, compare=False)


def _split(value: str) -> list[str]:
    parts: list[str] = []
    for group in _GROUP_SEPARATOR.split(value.strip()):
        parts.extend(p.strip() for p in group.split(","))
    return parts


def _number(text: str | None) -> float | None:
    """A finite number, or None ("-", empty, not a number, inf, nan: unknown)."""
    try:
        value = float(text) if text not in (None, "", "-") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def parse_line(line: str) -> list[Attempt]:
    """The attempts of one access-log line; [] for lines without an upstream (e.g. local
    locations) and for lines that are not valid JSON (a torn line, a foreign format)."""
    try:
        record: Any = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser
        return []
    if not isinstance(record, dict):
        return []
    at = _number(str(record.get("msec", "")))
    duration = _number(str(record.get("request_time", "")))
    addresses = _split(str(record.get("upstream_addr") or ""))
    if at is None or not addresses or addresses == [""] or addresses == ["-"]:
        return []
    statuses = _split(str(record.get("upstream_status") or ""))
    times = _split(str(record.get("upstream_response_time") or ""))
    attempts: list[Attempt] = []
    for index, address in enumerate(addresses):
        if not address or address == "-":
            continue
        status = _number(statuses[index]) if index < len(statuses) else None
        seconds = _number(times[index]) if index < len(times) else None
        attempts.append(Attempt(at, address, int(status) if status is not None else None,
                                seconds, at - duration if duration is not None else at))
    return attempts


@dataclass(frozen=True)
class MemberTraffic:
    """Traffic of one upstream address over the window (rates per second, times in ms)."""

    requests: int = 0
    errors_5xx: int = 0
    requests_per_s: float = 0.0
    errors_5xx_per_s: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    last_request_at: float | None = None  # epoch seconds; kept beyond the window
    recent_5xx: int = 0  # 5xx in the last ``recent`` seconds (drives the "failing" state)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class TrafficWindow:
    def __init__(self, window: float = 30.0, recent: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.recent = recent
        self._clock = clock
        self._attempts: deque[Attempt] = deque()
        self._last_seen: dict[str, float] = {}
        self._last_started: dict[str, float] = {}
        self._since: float | None = None  # earliest time we have complete data for

    def add(self, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self._attempts.append(attempt)
            if attempt.at > self._last_seen.get(attempt.address, 0.0):
                self._last_seen[attempt.address] = attempt.at
            started = attempt.at if attempt.started is None else attempt.started
            if started > self._last_started.get(attempt.address, 0.0):
                self._last_started[attempt.address] = started
            if self._since is None or attempt.at < self._since:
                self._since = attempt.at

    def mark_observed(self, at: float | None = None) -> None:
        """Data is complete from ``at`` (default now) on: the first read of an empty log."""
        at = self._clock() if at is None else at
        if self._since is None or at < self._since:
            self._since = at

    def last_request_at(self, address: str) -> float | None:
        return self._last_seen.get(address)

    def last_request_started_at(self, address: str) -> float | None:
        """When the newest request to ``address`` reached nginx (epoch seconds)."""
        return self._last_started.get(address)

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        # The log is written in completion order, roughly by time: prune from the left and
        # tolerate the odd out-of-order line (it just stays a little longer).
        while self._attempts and self._attempts[0].at < horizon:
            self._attempts.popleft()

    def stats(self, now: float | None = None) -> dict[str, MemberTraffic]:
        now = self._clock() if now is None else now
        self._prune(now)
        observed = now - (self._since if self._since is not None else now)
        span = min(self.window, max(observed, 1.0))
        by_address: dict[str, list[Attempt]] = {}
        for attempt in self._attempts:
            if attempt.at >= now - self.window:
                by_address.setdefault(attempt.address, []).append(attempt)
        result: dict[str, MemberTraffic] = {}
        for address in set(by_address) | set(self._last_seen):
            attempts = by_address.get(address, [])
            errors = [a for a in attempts if a.status is not None and a.status >= 500]
            times = [a.response_time * 1000 for a in attempts if a.response_time is not None]
            result[address] = MemberTraffic(
                requests=len(attempts),
                errors_5xx=len(errors),
                requests_per_s=len(attempts) / span,
                errors_5xx_per_s=len(errors) / span,
                p50_ms=percentile(times, 0.50),
                p95_ms=percentile(times, 0.95),
                last_request_at=self._last_seen.get(address),
                recent_5xx=sum(1 for a in errors if a.at >= now - self.recent),
            )
        return result


@dataclass(frozen=True)
class FileState:
    inode: int
    size: int


class LogTail:
    """Incremental reader of one log file; ``reader(offset, count)`` returns the bytes and
    ``stat()`` the file's identity and size (both go through an executor in the service)."""

    def __init__(self) -> None:
        self.inode: int | None = None
        self.offset = 0
        self._partial = b""
        self.rotations = 0

    def plan(self, state: FileState) -> tuple[int, int, bool]:
        """Where to read from and how much: (offset, count, skip_first_partial_line)."""
        if self.inode is None:
            # First look at this file: the recent backlog only, starting at a line boundary.
            start = max(0, state.size - INITIAL_BACKLOG_BYTES)
            self.inode, self.offset, self._partial = state.inode, start, b""
            return start, min(state.size - start, MAX_READ_BYTES), start > 0
        if state.inode != self.inode or state.size < self.offset:
            # Rotated (new file) or truncated (copytruncate): the new content starts at 0.
            # Lines written to the old file after our last read are lost; that is a few
            # seconds of traffic, and the window heals itself.
            self.rotations += 1
            self.inode, self.offset, self._partial = state.inode, 0, b""
        return self.offset, min(state.size - self.offset, MAX_READ_BYTES), False

    def feed(self, data: bytes, skip_first_partial: bool = False,
             advance: int | None = None) -> list[str]:
        """Accept the bytes read at the planned offset; returns the complete new lines.

        ``advance`` is how far the file offset moves (default ``len(data)``): a remote read
        arrives as decoded text, whose re-encoded length differs from the file's bytes when
        a line holds invalid UTF-8, so the caller passes the byte count it asked for."""
        self.offset += len(data) if advance is None else advance
        buffer = self._partial + data
        if skip_first_partial:
            newline = buffer.find(b"\n")
            buffer = b"" if newline < 0 else buffer[newline + 1:]
        *lines, self._partial = buffer.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]


def parse_stat(output: str) -> FileState:
    """``stat -c '%i %s'`` output → FileState; ValueError naming the output otherwise."""
    fields = output.split()
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        raise ValueError(f"unexpected stat output {output[:80]!r} (expected 'INODE SIZE')")
    return FileState(int(fields[0]), int(fields[1]))


def traffic_for(stats: Mapping[str, MemberTraffic], address: str) -> MemberTraffic:
    return stats.get(address, MemberTraffic())
