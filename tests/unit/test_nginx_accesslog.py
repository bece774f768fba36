"""Access-log parsing, the incremental tail (rotation, truncation) and window math."""

from __future__ import annotations

import json

import pytest

from backends.nginx.accesslog import (
    INITIAL_BACKLOG_BYTES,
    Attempt,
    FileState,
    LogTail,
    TrafficWindow,
    parse_line,
    percentile,
)


def line(msec: float, addr: str, status: str, rt: str, **extra: object) -> str:
    record = {"time": "x", "msec": msec, "status": 200, "upstream_addr": addr,
              "upstream_status": status, "upstream_response_time": rt, **extra}
    return json.dumps(record)


def test_parse_line_single_and_retried() -> None:
    assert parse_line(line(100.5, "10.0.0.1:80", "200", "0.012")) == [
        Attempt(100.5, "10.0.0.1:80", 200, 0.012)]
    retried = parse_line(line(101.0, "10.0.0.2:80, 10.0.0.3:80", "502, 200", "0.001, 0.020"))
    assert retried == [Attempt(101.0, "10.0.0.2:80", 502, 0.001),
                       Attempt(101.0, "10.0.0.3:80", 200, 0.020)]
    # internal redirect to another group: " : " separates groups
    grouped = parse_line(line(102.0, "a:1, b:2 : c:3", "502, 504 : 200", "0.1, 0.2 : 0.3"))
    assert [(a.address, a.status, a.response_time) for a in grouped] == [
        ("a:1", 502, 0.1), ("b:2", 504, 0.2), ("c:3", 200, 0.3)]


def test_parse_line_ignores_non_upstream_and_garbage() -> None:
    assert parse_line(line(1.0, "", "", "")) == []
    assert parse_line(line(1.0, "-", "-", "-")) == []
    assert parse_line("not json") == []
    assert parse_line('{"msec": 1.0, "upstream_addr": "a:1"') == []  # torn line
    assert parse_line("[1, 2]") == []
    # unknown status/time are None, not an exception
    assert parse_line(line(1.0, "a:1", "-", "-")) == [Attempt(1.0, "a:1", None, None)]


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(list(reversed(values)), 0.95) == 95.0


def test_window_rates_percentiles_and_expiry() -> None:
    now = [1000.0]
    window = TrafficWindow(window=10.0, recent=5.0, clock=lambda: now[0])
    window.mark_observed(980.0)  # complete data since long ago: full 10 s span
    for i in range(20):  # 20 requests in the last 10 s to a, one in five a 500
        window.add([Attempt(990.5 + i * 0.5, "a:1", 500 if i % 5 == 0 else 200,
                            (i + 1) / 1000)])
    window.add([Attempt(999.0, "b:2", 200, 0.004)])
    stats = window.stats()
    a = stats["a:1"]
    assert a.requests == 20
    assert a.requests_per_s == pytest.approx(2.0)
    assert a.errors_5xx == 4
    assert a.errors_5xx_per_s == pytest.approx(0.4)
    assert a.p50_ms == pytest.approx(10.0)
    assert a.p95_ms == pytest.approx(19.0)
    assert a.last_request_at == pytest.approx(1000.0)
    assert a.recent_5xx == 2  # 5xx at 995.5 and 998.0 fall within the last 5 s
    assert stats["b:2"].requests_per_s == pytest.approx(0.1)
    # 30 s later everything expired, but "last request" is remembered
    now[0] = 1030.0
    later = window.stats()
    assert later["a:1"].requests == 0
    assert later["a:1"].p95_ms is None
    assert later["a:1"].last_request_at == pytest.approx(1000.0)


def test_window_rate_uses_the_observed_span_when_shorter() -> None:
    now = [100.0]
    window = TrafficWindow(window=60.0, clock=lambda: now[0])
    window.mark_observed(96.0)  # we started watching 4 s ago
    window.add([Attempt(97.0 + i, "a:1", 200, 0.001) for i in range(4)])
    assert window.stats()["a:1"].requests_per_s == pytest.approx(1.0)


def test_tail_reads_only_new_bytes_and_keeps_partial_lines() -> None:
    tail = LogTail()
    assert tail.plan(FileState(inode=7, size=0)) == (0, 0, False)
    assert tail.feed(b"") == []
    assert tail.plan(FileState(7, 11)) == (0, 11, False)
    assert tail.feed(b'{"a":1}\n{"b') == ['{"a":1}']
    assert tail.offset == 11
    assert tail.plan(FileState(7, 15)) == (11, 4, False)
    assert tail.feed(b'":2}') == []
    assert tail.plan(FileState(7, 16)) == (15, 1, False)
    assert tail.feed(b"\n") == ['{"b":2}']


def test_tail_first_read_skips_old_history_and_a_partial_first_line() -> None:
    tail = LogTail()
    size = INITIAL_BACKLOG_BYTES + 100
    offset, count, skip = tail.plan(FileState(1, size))
    assert (offset, count, skip) == (100, INITIAL_BACKLOG_BYTES, True)
    assert tail.feed(b'tail of an old line\n{"x":1}\n', skip) == ['{"x":1}']


def test_tail_rotation_and_truncation_restart_at_zero() -> None:
    tail = LogTail()
    tail.plan(FileState(1, 20))
    tail.feed(b"x" * 19 + b"\n")
    assert tail.plan(FileState(2, 5)) == (0, 5, False)  # new inode: rotated
    assert tail.rotations == 1
    tail.feed(b"abcd\n")
    assert tail.plan(FileState(2, 3)) == (0, 3, False)  # shorter than our offset: truncated
    assert tail.rotations == 2


def test_tail_advance_counts_file_bytes_not_decoded_ones() -> None:
    tail = LogTail()
    tail.plan(FileState(1, 6))
    # the remote read replaced one invalid byte by U+FFFD (3 bytes): offset must still be 6
    assert tail.feed("ab\ufffdc\n".encode(), advance=6) == ["ab\ufffdc"]
    assert tail.offset == 6


def test_start_time_tells_in_flight_requests_from_new_ones():
    """A request logged after a reload but started before it was in flight, not new."""
    from backends.nginx.accesslog import TrafficWindow, parse_line

    line = ('{"msec":1000.0,"request_time":6.0,"upstream_addr":"a:1",'
            '"upstream_status":"200","upstream_response_time":"6.0"}')
    attempts = parse_line(line)
    assert attempts[0].started == 994.0
    window = TrafficWindow(clock=lambda: 1000.0)
    window.add(attempts)
    assert window.last_request_at("a:1") == 1000.0
    assert window.last_request_started_at("a:1") == 994.0
