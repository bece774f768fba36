"""The PostgreSQL actions' stated worst case is built from the timeouts their host steps
really pass to the executor (backends/postgres/worst.py repeats MemberHost's literals)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from backends.executors import DEFAULT_TIMEOUT, CommandResult, LocalExecutor, run_bound
from backends.postgres import worst
from backends.postgres.config import PostgresMember
from backends.postgres.host import MemberHost, RewindSource


class Recorder:
    """An executor that answers every command with success and records its timeout."""

    host = "recorder"

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
                  input: str | bytes | None = None, check: bool = False) -> CommandResult:
        self.timeouts.append(timeout)
        # "killed PID" satisfies kill_server; other callers read only the exit status or a pid.
        out = "killed 4242\n" if argv[:2] == ["sh", "-c"] or tuple(argv[:2]) == ("sh", "-c") \
            else "4242\n"
        return CommandResult(tuple(argv), 0, out, "")

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        raise AssertionError("MemberHost reads through commands")

    async def write_file(self, path: str | os.PathLike[str], data: bytes, *,
                         mode: int | None = None) -> None:
        raise AssertionError("MemberHost writes through commands")

    async def close(self) -> None:
        pass


ARGS: dict[str, tuple[Any, ...]] = {
    "read_text": ("/data/x",), "write_text": ("/data/x", "text"), "remove": ("/data/x",),
    "exists": ("/data/x",),
}


@pytest.mark.parametrize("method", sorted(worst.HOST_TIMEOUTS))
async def test_host_timeouts_match_member_host(method: str) -> None:
    recorder = Recorder()
    host = MemberHost(PostgresMember("pg-1", "127.0.0.1", data_dir=Path("/data/pg-1")),
                      recorder)
    await getattr(host, method)(*ARGS.get(method, ()))
    assert tuple(recorder.timeouts) == worst.HOST_TIMEOUTS[method]


async def test_stop_and_rewind_timeouts_match_member_host() -> None:
    recorder = Recorder()
    host = MemberHost(PostgresMember("pg-1", "127.0.0.1", data_dir=Path("/data/pg-1")),
                      recorder)
    await host.stop()  # running (the recorder says yes), then pg_ctl stop
    assert recorder.timeouts == [*worst.HOST_TIMEOUTS["running"],
                                 worst.STOP_TIMEOUT + worst.STOP_MARGIN]
    recorder.timeouts.clear()
    await host.rewind(RewindSource("host=x", "x:1:*:u:p\n"))
    assert recorder.timeouts == [*worst.HOST_TIMEOUTS["write_text"], worst.REWIND_TIMEOUT,
                                 *worst.HOST_TIMEOUTS["remove"]]


class Cluster:
    """Just what the bounds read: the settings and each member's host."""

    def __init__(self, executor: Any) -> None:
        self.pg = type("Pg", (), {"connect_timeout": 3.0, "statement_timeout": 5.0})()
        self.executor = executor

    def host(self, name: str) -> MemberHost:
        return MemberHost(PostgresMember(name, "127.0.0.1", data_dir=Path(f"/data/{name}")),
                          self.executor)


def test_bounds_add_the_executor_stop_to_each_host_command() -> None:
    local = LocalExecutor()
    cluster: Any = Cluster(local)
    assert worst.query(cluster) == 3 + 5 + 1 + worst.ABANDON
    assert worst.query(cluster, 65) == 3 + 65 + 2 + worst.ABANDON
    assert worst.host(cluster, "pg-1", "reachable", "running") == (
        run_bound(local, 10) + run_bound(local, 15))
    # before the promotion: standby.signal, the kill script (SIGSTOP + SIGKILL + wait), and
    # standby.signal removed again when the kill fails
    assert worst.fence_first(cluster, "pg-1") == pytest.approx(
        sum(run_bound(local, t) for t in (15, 15, 15)))
    # after it, for a host the preflight could not reach: reachable, standby.signal, the kill
    assert worst.fence_after(cluster, "pg-1") == pytest.approx(
        sum(run_bound(local, t) for t in (10, 15, 15)))
    assert worst.rejoin(cluster, "pg-1") > worst.REWIND_TIMEOUT + worst.STREAM_WAIT_SECONDS
