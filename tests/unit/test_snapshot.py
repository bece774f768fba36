from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from backends.snapshot import Health, Snapshot


class Clock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


def test_health_worst_of() -> None:
    assert Health.worst([Health.OK, Health.DEGRADED, Health.OK]) is Health.DEGRADED
    assert Health.worst([Health.OK, Health.FAILED, Health.UNKNOWN]) is Health.FAILED
    assert Health.worst([Health.OK, Health.UNKNOWN]) is Health.UNKNOWN
    assert Health.worst([Health.OK]) is Health.OK
    assert Health.worst([]) is Health.UNKNOWN
    assert Health.OK < Health.UNKNOWN < Health.DEGRADED < Health.FAILED
    assert max(Health.DEGRADED, Health.OK) is Health.DEGRADED
    assert sorted([Health.FAILED, Health.OK]) == [Health.OK, Health.FAILED]


def test_success_snapshot_is_immutable_and_ages() -> None:
    clock = Clock()
    snap = Snapshot.success({"up": 3}, clock=clock.monotonic, now=clock.now)
    assert snap.ok and snap.value == {"up": 3} and snap.best == {"up": 3}
    assert snap.taken_at == clock.wall and snap.taken_at.tzinfo is UTC
    assert snap.last_good_at == snap.taken_at
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.value = None  # type: ignore[misc]
    clock.advance(5)
    assert snap.age(clock.mono) == 5
    assert snap.stale_for(clock.mono) == 5


def test_failed_snapshot_keeps_last_good_value_and_its_age() -> None:
    clock = Clock()
    good = Snapshot.success(7, clock=clock.monotonic, now=clock.now)
    clock.advance(2)
    bad = good.failed("timeout", clock=clock.monotonic, now=clock.now)
    clock.advance(3)
    worse = bad.failed("refused", clock=clock.monotonic, now=clock.now)
    assert not worse.ok
    assert worse.value is None
    assert worse.error == "refused"
    assert worse.best == 7
    assert worse.last_good == 7 and worse.last_good_at == good.taken_at
    assert worse.age(clock.mono) == 0
    assert worse.stale_for(clock.mono) == 5


def test_failure_without_history_has_no_last_good() -> None:
    snap: Snapshot[int] = Snapshot.failure("connection refused")
    assert snap.best is None
    assert snap.stale_for() is None
    assert snap.age() >= 0
