"""When a graceful reload has taken effect, judged from the master's worker generations, and
the drain built on it — against a fake nginx host that replays scripted ``ps`` output.

The sequence a real reload goes through (nginx 1.22, ngx_master_process_cycle): the master
forks the new workers, sleeps 100 ms, and only then tells the old ones to quit; those keep
accepting — under the old configuration — until they read that message, then show as
"shutting down" until their in-flight requests finish, then exit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.actions import Step
from backends.executors import DEFAULT_TIMEOUT, CommandResult
from backends.nginx import actions
from backends.nginx.actions import DrainMember, NginxActionError, UndrainMember
from backends.nginx.config import NginxConfig, NginxMember
from backends.nginx.control import parse_workers, reload_progress
from backends.nginx.service import NginxService

# `ps -o pid=,args= --ppid MASTER` as procps prints it: pids right-aligned.
BEFORE_FORK = """\
    101 nginx: worker process
    102 nginx: worker process
    103 nginx: cache manager process
"""
NEW_UP_OLD_NOT_TOLD = BEFORE_FORK + """\
    201 nginx: worker process
    202 nginx: worker process
"""
NEW_UP_OLD_SHUTTING_DOWN = """\
    102 nginx: worker process is shutting down
    201 nginx: worker process
    202 nginx: worker process
    203 nginx: cache manager process
"""
OLD_GONE = """\
    201 nginx: worker process
    202 nginx: worker process
    203 nginx: cache manager process
"""
PREVIOUS = frozenset({101, 102})


@pytest.mark.parametrize(
    ("ps", "new", "previous", "new_up", "took_effect"),
    [
        (BEFORE_FORK, (), (101, 102), False, False),
        (NEW_UP_OLD_NOT_TOLD, (201, 202), (101, 102), True, False),
        (NEW_UP_OLD_SHUTTING_DOWN, (201, 202), (102,), True, False),
        (OLD_GONE, (201, 202), (), True, True),
        ("", (), (), False, False),  # master gone or between generations: nothing serves
    ],
    ids=["before-fork", "new-up-old-not-told", "new-up-old-shutting-down", "old-gone", "none"],
)
def test_reload_progress_through_one_reload(ps: str, new: tuple[int, ...],
                                            previous: tuple[int, ...], new_up: bool,
                                            took_effect: bool) -> None:
    progress = reload_progress(PREVIOUS, parse_workers(ps))
    assert (progress.new, progress.previous) == (new, previous)
    assert (progress.new_workers_up, progress.took_effect) == (new_up, took_effect)


def test_workers_of_a_later_reload_that_are_leaving_belong_to_neither_generation() -> None:
    # Someone reloaded again after us: our new workers (201) are shutting down in turn.
    ps = "  201 nginx: worker process is shutting down\n  301 nginx: worker process\n"
    progress = reload_progress(PREVIOUS, parse_workers(ps))
    assert (progress.new, progress.previous, progress.took_effect) == ((301,), (), True)


def test_old_generation_that_is_not_shutting_down_still_counts_as_previous() -> None:
    # The old bug: counting only "shutting down" workers as old calls this reload done.
    progress = reload_progress(PREVIOUS, parse_workers(NEW_UP_OLD_NOT_TOLD))
    assert sum(w.shutting_down for w in parse_workers(NEW_UP_OLD_NOT_TOLD)) == 0
    assert not progress.took_effect


# ------------------------------------------------------------------ drain on a fake host

MEMBER = "127.0.0.1:8003"
UPSTREAM = b"""upstream api_backend {
    server 127.0.0.1:8001;
    server 127.0.0.1:8002;
    server 127.0.0.1:8003;
}
"""


@dataclass
class Scene:
    ps: str
    # Requests to MEMBER that old workers accepted, under the old configuration, since the
    # previous ps; logged as starting when this ps is served.
    member_requests: int = 0


class FakeNginxHost:
    """An executor for one nginx host: files, ``nginx -t``/``-s reload``, ``ps`` replaying
    ``scenes`` (one per call, the last repeats), ``stat``/``dd`` of an in-memory log."""

    host = "fake"

    def __init__(self, root: Path, scenes: Sequence[Scene], *,
                 request_after_last_scene: bool = False) -> None:
        self.root = root
        self.files: dict[str, bytes] = {str(root / "upstream.conf"): UPSTREAM,
                                        str(root / "nginx.pid"): b"100\n"}
        self.scenes = list(scenes)
        self.ps_calls = 0
        self.reloads = 0
        self.log = b""
        self.request_after_last_scene = request_after_last_scene
        self._last_scene_served = False

    def _log_request(self, started: float) -> None:
        record = {"msec": round(started + 0.001, 3), "request_time": 0.001, "status": 200,
                  "upstream_addr": MEMBER, "upstream_status": "200",
                  "upstream_response_time": "0.001"}
        self.log += json.dumps(record).encode() + b"\n"

    async def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
                  input: str | bytes | None = None, check: bool = False) -> CommandResult:
        args = tuple(argv)
        out = ""
        if args[0] == "ps":
            scene = self.scenes[min(self.ps_calls, len(self.scenes) - 1)]
            self.ps_calls += 1
            self._last_scene_served = self.ps_calls >= len(self.scenes)
            for _ in range(scene.member_requests):
                self._log_request(time.time())
            out = scene.ps
        elif args[0] == "stat":
            if self.request_after_last_scene and self._last_scene_served:
                self.request_after_last_scene = False
                # The new configuration cannot have sent it. Logged a few milliseconds on:
                # nginx's $msec has millisecond resolution, and on a quiet machine this runs
                # well within a millisecond of the moment the action saw the reload take
                # effect, which rounding could then put after the request.
                self._log_request(time.time() + 0.005)
            out = f"1 {len(self.log)}\n"
        elif args[0] == "dd":
            opts = dict(a.split("=", 1) for a in args[1:] if "=" in a)
            skip, count = int(opts["skip"]), int(opts["count"])
            out = self.log[skip:skip + count].decode()
        elif "reload" in args:
            self.reloads += 1
        return CommandResult(args, 0, out, "")

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        return self.files[os.fspath(path)]

    async def write_file(self, path: str | os.PathLike[str], data: bytes, *,
                         mode: int | None = None) -> None:
        self.files[os.fspath(path)] = data

    async def close(self) -> None:
        pass

    @property
    def upstream(self) -> bytes:
        return self.files[str(self.root / "upstream.conf")]


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "POLL_INTERVAL", 0.001)
    monkeypatch.setattr(actions, "DRAIN_QUIET_SECONDS", 0.05)
    monkeypatch.setattr(actions, "QUIET_AFTER_RELOAD", 0.0)


def service_for(host: FakeNginxHost) -> NginxService:
    members = {f"api-{i}": NginxMember(f"api-{i}", f"127.0.0.1:800{i}") for i in (1, 2, 3)}
    config = NginxConfig(executor="fake", config_file=host.root / "nginx.conf",
                         upstream_name="api_backend", upstream_file=host.root / "upstream.conf",
                         members=members, pid_file=host.root / "nginx.pid",
                         access_log=host.root / "access.json")
    return NginxService(config, host)


async def steps_of(action: DrainMember | UndrainMember) -> list[Step]:
    return [step async for step in action.execute()]


RELOAD = [
    Scene(BEFORE_FORK),  # the generation before the reload
    Scene(BEFORE_FORK),  # SIGHUP sent, master still parsing: no new workers yet
    Scene(NEW_UP_OLD_NOT_TOLD),  # new workers up: the new configuration is live...
    Scene(NEW_UP_OLD_NOT_TOLD),  # ...but during the master's 100 ms sleep
    Scene(NEW_UP_OLD_SHUTTING_DOWN, member_requests=2),  # the old ones still took these
    Scene(OLD_GONE),
]


async def test_drain_ignores_requests_old_workers_accept_before_they_are_told_to_quit(
        tmp_path: Path) -> None:
    host = FakeNginxHost(tmp_path, RELOAD)
    service = service_for(host)
    action = DrainMember(service, "api-3", timeout=30)
    try:
        steps = [s.message for s in await steps_of(action)]
    finally:
        await service.close()
    assert any("waiting for nginx to start workers" in m for m in steps)
    assert any("2 worker(s) of the previous configuration" in m for m in steps)
    assert any("1 worker(s) of the previous configuration" in m for m in steps)
    assert steps[-1] == "api-3 drained: no request in flight"
    assert b"server 127.0.0.1:8003 down;" in host.upstream
    assert host.reloads == 1
    newest = service.window.last_request_started_at(MEMBER)
    took_effect = action.reload_took_effect_at
    assert newest is not None and took_effect is not None and newest < took_effect


async def test_drain_fails_and_restores_on_a_request_after_the_reload_took_effect(
        tmp_path: Path) -> None:
    host = FakeNginxHost(tmp_path, RELOAD, request_after_last_scene=True)
    service = service_for(host)
    try:
        with pytest.raises(NginxActionError, match=r"after the reload took effect.*restored"):
            await steps_of(DrainMember(service, "api-3", timeout=30))
    finally:
        await service.close()
    assert host.upstream == UPSTREAM
    assert host.reloads == 2  # ours and the restore's


async def test_no_new_workers_within_the_reload_timeout_restores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "RELOAD_TIMEOUT", 0.05)
    host = FakeNginxHost(tmp_path, [Scene(BEFORE_FORK)])  # the master rejected the change
    service = service_for(host)
    try:
        with pytest.raises(NginxActionError, match=r"did not start new workers.*restored"):
            await steps_of(DrainMember(service, "api-3", timeout=30))
    finally:
        await service.close()
    assert host.upstream == UPSTREAM
    assert host.reloads == 2


async def test_a_stop_while_waiting_for_new_workers_restores(tmp_path: Path) -> None:
    host = FakeNginxHost(tmp_path, [Scene(BEFORE_FORK)])
    service = service_for(host)
    execute = DrainMember(service, "api-3", timeout=30).execute()
    try:
        async for step in execute:
            if "waiting for nginx to start workers" in step.message:
                break  # what the runner does at a safe point when asked to stop
        await execute.aclose()  # type: ignore[attr-defined]
    finally:
        await service.close()
    assert host.upstream == UPSTREAM
    assert host.reloads == 2
