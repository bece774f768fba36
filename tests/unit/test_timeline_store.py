"""The timeline store: it survives restarts, stays bounded (age, rows, snapshots), several
processes write at once (each change recorded once), a store locked by another writer never
blocks the event loop and loses no change, gaps are computed from observer spans, and a
broken file is named, not replaced."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from backends.timeline.derive import derive_for
from backends.timeline.model import Change, Observation, Reading
from backends.timeline.observer import TimelineWriter
from backends.timeline.store import Retention, Span, TimelineError, TimelineStore
from backends.timeline.view import ACTIONS, audit_entries, gap_entries, gaps, merge

# Readings from an hour ago: inside the default retention (a week), so never pruned here.
T0 = time.time() - 3600.0


def reading(at: float, state: str, source: str = "nginx") -> Reading:
    """A reading ``at`` seconds after T0."""
    return Reading(source, "Load balancer", T0 + at, Observation({"member:api-2": state}))


def test_changes_and_state_survive_a_restart(tmp_path):
    store = TimelineStore(tmp_path / "t.sqlite3").open()
    store.record([reading(100.0, "up")], derive_for, observer="a")
    store.record([reading(102.0, "failing")], derive_for, observer="a")
    store.close()
    again = TimelineStore(tmp_path / "t.sqlite3").open()
    # The stored facts are the comparison point of the next process.
    again.record([reading(104.0, "up")], derive_for, observer="b")
    events = again.events(0)
    assert [(e.ts - T0, e.message, e.observer) for e in events] == [
        (102.0, "api-2 up → failing", "a"), (104.0, "api-2 failing → up", "b")]
    (source,) = again.sources()
    assert source.last_ok == T0 + 104.0 and source.reachable
    assert (tmp_path / "t.sqlite3").stat().st_mode & 0o777 == 0o600


def test_bounded_by_age_and_by_rows(tmp_path):
    now = time.time()
    store = TimelineStore(tmp_path / "t.sqlite3",
                          Retention(max_age_s=3600.0, max_events=50, max_snapshots=3)).open()
    store.add([Change("nginx", "k", "s", "too old", at=now - 7200.0)], now)
    store.add([Change("nginx", "k", "s", f"m{i}", at=now - 100.0 + i) for i in range(80)], now)
    for i in range(5):
        store.add_snapshot(ts=now - 10 + i, action_id=str(i), action="a", target="t",
                           phase="before", backend="nginx", taken_at=now, ok=True, error=None,
                           summary={}, status={"i": i})
    store.start_span("old", "x", now - 9000.0)
    store.stop_span("old", now - 8000.0)
    removed = store.prune(now)
    assert removed == 1 + 30 + 2 + 1
    kept = store.events(0)
    assert len(kept) == 50 and kept[0].message == "m30" and kept[-1].message == "m79"
    assert [s.status for s in store.snapshots(0)] == [{"i": 2}, {"i": 3}, {"i": 4}]
    assert store.spans(0) == []


def test_deduplicated_events_are_recorded_once(tmp_path):
    store = TimelineStore(tmp_path / "t.sqlite3").open()
    event = Change("kubernetes", "warning-event", "Pod/x", "BackOff", at=50.0, key="k:1")
    event = replace(event, at=T0 + 50.0)
    store.add([event], T0 + 60.0, "a")
    store.add([event], T0 + 61.0, "b")
    assert [(e.ts - T0, e.observer) for e in store.events(0)] == [(50.0, "a")]


def _writer_process(path: str, name: str, start: float, barrier) -> None:
    store = TimelineStore(Path(path), busy_timeout=30.0).open()
    barrier.wait()
    for i in range(40):
        # Both processes see the same flips at the same times: whoever writes first records.
        state = "failing" if i % 2 else "up"
        store.record([Reading("nginx", "Load balancer", start + i,
                              Observation({"member:api-2": state}))], derive_for,
                     observer=name)
        store.add([Change("kafka", "own", name, f"{name} {i}")], start + i, name)
    store.close()


def test_several_processes_write_at_once_and_each_change_is_recorded_once(tmp_path):
    path = tmp_path / "t.sqlite3"
    TimelineStore(path).open().close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_writer_process, args=(str(path), f"p{i}", T0,
                                                             barrier)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    store = TimelineStore(path).open()
    flips = [e for e in store.events(0) if e.source == "nginx"]
    # 39 flips after the baseline, each recorded by exactly one of the three processes.
    assert len(flips) == 39
    assert [e.ts - T0 for e in flips] == [float(i) for i in range(1, 40)]
    own = [e for e in store.events(0) if e.source == "kafka"]
    assert len(own) == 120 and {e.observer for e in own} == {"p0", "p1", "p2"}


async def test_a_locked_store_never_blocks_the_loop_and_the_change_is_recorded_later(tmp_path):
    path = tmp_path / "t.sqlite3"
    writer = TimelineWriter(TimelineStore(path, busy_timeout=0.2))
    await writer.call(lambda store: store.record([reading(100.0, "up")], derive_for,
                                                 observer="w"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        result = await writer.call(lambda store: store.record([reading(102.0, "failing")],
                                                              derive_for, observer="w"))
        ticker.cancel()
        assert result is None and "database is locked" in (writer.last_error or "")
        assert ticks >= 5  # the loop ran while the worker thread waited for the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The failed write's failure pauses writes for a moment; then the next reading is
    # compared with the last stored state: the flip is recorded (late), not lost.
    writer._failed_at = None
    await writer.call(lambda store: store.record([reading(104.0, "failing")], derive_for,
                                                 observer="w"))
    events = await writer.call(lambda store: store.events(0))
    assert [e.message for e in events or []] == ["api-2 up → failing"]
    assert writer.last_error is None
    await writer.stop()


def test_a_broken_file_is_named_and_left_alone(tmp_path):
    path = tmp_path / "timeline.sqlite3"
    path.write_bytes(b"not a database, and it stays so" * 100)
    with pytest.raises(TimelineError, match=r"timeline\.sqlite3 \(\[sfops\] state_dir\)"):
        TimelineStore(path).open()
    assert path.read_bytes().startswith(b"not a database")


def test_gaps_are_the_time_no_observer_covered():
    spans = [Span("a", "tui", 100.0, 200.0, 200.0),  # stopped cleanly
             Span("b", "tui", 400.0, 500.0, None),  # crashed: ends at its last heartbeat
             Span("c", "tui", 900.0, 995.0, None)]  # alive: heartbeat 5 s ago
    found = gaps(spans, 0.0, 1000.0, stale_after=30.0, min_gap=30.0)
    assert [(g.start, g.end) for g in found] == [(0.0, 100.0), (200.0, 400.0), (500.0, 900.0)]
    assert gaps([Span("d", "x", 0.0, 10.0, None)], 0.0, 20.0, stale_after=30.0) == []
    assert [(g.start, g.end) for g in gaps([], 0.0, 600.0, stale_after=30.0)] == [(0.0, 600.0)]
    (entry,) = gap_entries(found[:1])
    assert entry.source == "sfops" and "changes in this time were not seen" in entry.message


def test_merged_timeline_orders_actions_changes_and_gaps_and_filters_them():
    records = [
        {"ts": "1970-01-01T00:01:40.000Z", "id": "s1", "event": "started", "user": "alice",
         "host": "h", "action": "nginx.drain", "target": "api-2", "pid": -1},
        {"ts": "1970-01-01T00:01:40.000Z", "id": "f1", "event": "finished", "user": "alice",
         "host": "h", "action": "nginx.drain", "target": "api-2", "outcome": "succeeded",
         "duration_s": 4.0, "started_id": "s1"},
    ]
    actions = audit_entries(records)
    assert [(e.ts, e.kind) for e in actions] == [(100.0, "action-started"), (104.0, "action")]
    assert actions[1].message == "nginx.drain api-2: succeeded in 4.0 s by alice@h"
    from backends.timeline.view import Entry

    change = Entry(102.0, "nginx", "member-state", "api-2", "info", "api-2 up → draining",
                   "event:1")
    gap = gap_entries(gaps([], 0.0, 99.0, stale_after=30.0))
    merged = merge(actions, [change], gap)
    assert [e.kind for e in merged] == ["gap", "action-started", "member-state", "action"]
    assert [e.kind for e in merge(actions, [change], gap, sources=[ACTIONS])] == [
        "action-started", "action"]
    assert [e.kind for e in merge(actions, [change], gap, sources=["nginx"])] == [
        "gap", "member-state"]
    assert [e.kind for e in merge(actions, [change], gap, text="DRAINING")] == ["member-state"]


def test_a_write_path_check_reads_on_its_action_and_a_failed_one_is_critical():
    base = {"ts": "1970-01-01T00:01:40.000Z", "event": "finished", "user": "bob", "host": "h",
            "outcome": "succeeded", "duration_s": 1.0}
    records = [
        {**base, "id": "v1", "action": "verify", "target": "write-path",
         "write_path": {"ok": True, "hops": [{"hop": "nginx"}, {"hop": "api"}]}},
        {**base, "id": "s1", "action": "pg.switchover", "target": "pg-2",
         "write_path": {"ok": False, "failed_hop": "consumer",
                        "error": "consumer received: not recorded within 5.0 s", "hops": []}},
    ]
    ok, failed = audit_entries(records)
    assert ok.message.endswith("; write path ok (2 hops)") and ok.level == "ok"
    assert failed.message.endswith(
        "; users cannot write — consumer received: not recorded within 5.0 s")
    assert failed.level == "critical"
