"""Immutable observations of a backend, and the health scale the UI colours them by.

A failed poll does not erase what we knew: the failed snapshot carries the error *and* the
last good value with its time, so the UI can show "pg-2 lag 0 B — 14 s old, poll failing".
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

T = TypeVar("T")


class Health(enum.Enum):
    """Ordered from best to worst, so ``max()`` / :meth:`worst` give the overall health."""

    OK = "ok"
    UNKNOWN = "unknown"  # no data yet: worse than ok (we can't vouch for it), better than bad
    DEGRADED = "degraded"
    FAILED = "failed"
    # No contact: the last probe failed, so whatever we showed before is only "last known".
    # Worst of all: a failed component we can see is still better than one we cannot.
    UNREACHABLE = "unreachable"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return self.rank >= other.rank

    @classmethod
    def worst(cls, healths: Iterable[Health]) -> Health:
        """The worst of ``healths``; UNKNOWN when there is nothing to judge."""
        return max(healths, default=cls.UNKNOWN)


_RANK = {Health.OK: 0, Health.UNKNOWN: 1, Health.DEGRADED: 2, Health.FAILED: 3,
         Health.UNREACHABLE: 4}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """What one poll saw. ``taken_at`` is wall-clock UTC for display and logs; ``monotonic``
    (same clock as ``time.monotonic``) is what ages are computed from."""

    taken_at: datetime
    monotonic: float
    value: T | None
    error: str | None = None
    last_good: T | None = None
    last_good_at: datetime | None = None
    last_good_monotonic: float | None = None

    @classmethod
    def success(
        cls,
        value: T,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> Snapshot[T]:
        taken_at, mono = now(), clock()
        return cls(taken_at, mono, value, None, value, taken_at, mono)

    @classmethod
    def failure(
        cls,
        error: str,
        previous: Snapshot[T] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> Snapshot[T]:
        """A failed poll, keeping the last good value of ``previous`` (if any)."""
        last_good = previous.last_good if previous is not None else None
        last_good_at = previous.last_good_at if previous is not None else None
        last_good_mono = previous.last_good_monotonic if previous is not None else None
        return cls(now(), clock(), None, error, last_good, last_good_at, last_good_mono)

    def failed(
        self,
        error: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> Snapshot[T]:
        """This snapshot's successor after a failed poll."""
        return Snapshot.failure(error, self, clock=clock, now=now)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def best(self) -> T | None:
        """What to display: the value, or after a failure the last good value."""
        return self.value if self.error is None else self.last_good

    def age(self, now: float | None = None) -> float:
        """Seconds since this snapshot was taken."""
        return max(0.0, (time.monotonic() if now is None else now) - self.monotonic)

    def stale_for(self, now: float | None = None) -> float | None:
        """Seconds since the last good value (0 when this one is good; None if never good)."""
        if self.last_good_monotonic is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self.last_good_monotonic)
