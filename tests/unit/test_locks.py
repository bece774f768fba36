"""The lock providers (backends/locks.py) and the runner's use of them.

The host and local flocks are real (local processes, files in tmp_path). The Kubernetes Lease
is exercised against an in-memory API that keeps ``resourceVersion`` and answers 404/409 as
the API server does: it produces the cases a real server cannot produce on demand (two
takers reading the same version, a renewal that conflicts, a holder's clock far behind); the
real server is used by tests/integration/test_locks.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backends.actions import Action, ActionRunner, CheckResult, CheckStatus, Outcome, Step
from backends.audit import AuditLog
from backends.config import LocalExecutorConfig
from backends.kubernetes.client import KubeApiError, KubeUnavailable
from backends.locks import (
    ANNOTATION,
    CHECK_NAME,
    Holder,
    HostFlockLocks,
    HostLockFile,
    LeaseLocks,
    LocalFlockLocks,
    LockBusy,
    LockKey,
    LockManager,
    LockUnavailable,
    key_name,
    lease_expired,
)

LOCAL = LocalExecutorConfig(name="local")
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- a fake API


class FakeLeaseApi:
    """Leases by path; every write bumps resourceVersion; a PUT with a stale one is 409."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.requests: list[tuple[str, str]] = []
        self.before_write: Any = None  # async hook: runs between a taker's read and write

    def client(self) -> FakeClient:
        return FakeClient(self)

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return stored

    async def request(self, method: str, path: str, body: Any) -> bytes:
        self.requests.append((method, path))
        if self.down:
            raise KubeUnavailable(f"{method} {path}: connection refused")
        if method in ("PUT", "POST") and self.before_write is not None:
            hook, self.before_write = self.before_write, None
            await hook()
        if method == "GET":
            if path not in self.leases:
                raise KubeApiError(404, "NotFound", "leases not found")
            return json.dumps(self.leases[path]).encode()
        if method == "POST":
            full = f"{path}/{body['metadata']['name']}"
            if full in self.leases:
                raise KubeApiError(409, "AlreadyExists", "already exists")
            self.leases[full] = self._stored(body)
            return json.dumps(self.leases[full]).encode()
        if method == "PUT":
            current = self.leases.get(path)
            if current is None:
                raise KubeApiError(404, "NotFound", "leases not found")
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent != current["metadata"]["resourceVersion"]:
                raise KubeApiError(409, "Conflict", "the object has been modified")
            self.leases[path] = self._stored(body)
            return json.dumps(self.leases[path]).encode()
        raise AssertionError(method)


class FakeClient:
    def __init__(self, api: FakeLeaseApi) -> None:
        self.api = api
        self.closed = False

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> bytes:
        return await self.api.request(method, path, body)

    async def close(self) -> None:
        self.closed = True


KEY = LockKey("pg-abc12345", "PostgreSQL cluster (pg-1, pg-2)")
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/streamforge/leases/sfops-pg-abc12345"


def leases(api: FakeLeaseApi, clock: Any = time.time, **kwargs: Any) -> LeaseLocks:
    return LeaseLocks(api.client, "streamforge", clock=clock, **kwargs)  # type: ignore[arg-type]


def holder(user: str = "alice", host: str = "host2", action: str = "pg.failover pg-2") -> Holder:
    return Holder(user, host, action)


# --------------------------------------------------------------------------- Lease


async def test_lease_is_created_then_busy_for_another_holder_naming_it() -> None:
    api = FakeLeaseApi()
    grant = await leases(api).acquire(KEY, holder())
    spec = api.leases[LEASE_PATH]["spec"]
    assert spec["holderIdentity"] == "alice@host2" and spec["leaseDurationSeconds"] == 15
    with pytest.raises(LockBusy) as busy:
        await leases(api).acquire(KEY, holder("bob", "host9"))
    text = busy.value.detail()
    assert text.startswith("held by alice@host2 since ") and " UTC (pg.failover pg-2, pid " in text
    assert text.endswith("; Lease streamforge/sfops-pg-abc12345)")
    await grant.release()
    assert "holderIdentity" not in api.leases[LEASE_PATH]["spec"]


async def test_same_user_and_host_is_still_another_holder() -> None:
    """A TUI and a runbook of the same operator on the same bastion exclude each other."""
    api = FakeLeaseApi()
    grant = await leases(api).acquire(KEY, holder())
    with pytest.raises(LockBusy):
        await leases(api).acquire(KEY, holder())
    await grant.release()


async def test_released_lease_is_taken_again_and_transitions_counted() -> None:
    api = FakeLeaseApi()
    first = await leases(api).acquire(KEY, holder())
    await first.release()
    second = await leases(api).acquire(KEY, holder("bob", "host9"))
    spec = api.leases[LEASE_PATH]["spec"]
    assert spec["holderIdentity"] == "bob@host9"
    await second.release()


async def test_expired_lease_of_a_dead_holder_is_taken_over() -> None:
    api = FakeLeaseApi()
    now = [1_000_000.0]
    dead = await leases(api, clock=lambda: now[0]).acquire(KEY, holder())
    assert dead._task is not None
    dead._task.cancel()  # the holder was killed: no more renewals, no release
    now[0] += 15 + 1  # within duration + skew: still held
    with pytest.raises(LockBusy):
        await leases(api, clock=lambda: now[0]).acquire(KEY, holder("bob", "host9"))
    now[0] += 2  # past duration + skew
    grant = await leases(api, clock=lambda: now[0]).acquire(KEY, holder("bob", "host9"))
    spec = api.leases[LEASE_PATH]["spec"]
    assert spec["holderIdentity"] == "bob@host9" and spec["leaseTransitions"] == 1
    await grant.release()


async def test_two_takers_of_an_expired_lease_exactly_one_wins() -> None:
    """Both read the same expired Lease; both write with the version read: one 409s."""
    api = FakeLeaseApi()
    now = [1_000_000.0]
    dead = await leases(api, clock=lambda: now[0]).acquire(KEY, holder("carol", "h0"))
    assert dead._task is not None
    dead._task.cancel()
    now[0] += 60
    results: list[Any] = []

    async def other_taker() -> None:  # between alice's read and write, bob takes it
        results.append(await leases(api, clock=lambda: now[0]).acquire(KEY, holder("bob", "h9")))

    api.before_write = other_taker
    with pytest.raises(LockBusy) as busy:
        await leases(api, clock=lambda: now[0]).acquire(KEY, holder())
    assert "held by bob@h9" in busy.value.detail()
    assert api.leases[LEASE_PATH]["spec"]["holderIdentity"] == "bob@h9"
    await results[0].release()


async def test_two_creators_exactly_one_wins() -> None:
    api = FakeLeaseApi()
    results: list[Any] = []

    async def other_creator() -> None:
        results.append(await leases(api).acquire(KEY, holder("bob", "h9")))

    api.before_write = other_creator
    with pytest.raises(LockBusy):
        await leases(api).acquire(KEY, holder())
    await results[0].release()


async def test_renewal_moves_renew_time_and_a_taken_lease_is_reported_lost() -> None:
    api = FakeLeaseApi()
    now = [1_000_000.0]
    grant = await leases(api, clock=lambda: now[0], renew_every=3600).acquire(KEY, holder())
    now[0] += 5
    await grant.renew()
    assert grant.renewals == 1 and grant.lost is None
    renewed = api.leases[LEASE_PATH]["spec"]["renewTime"]
    assert renewed.startswith("1970-01-12T13:46:45")
    # Someone took it (e.g. our renewals were cut off for longer than its duration).
    stolen = copy.deepcopy(api.leases[LEASE_PATH])
    stolen["spec"]["holderIdentity"] = "bob@h9"
    stolen["metadata"]["annotations"][ANNOTATION + "token"] = "someone-else"
    api.leases[LEASE_PATH] = api._stored(stolen)
    await grant.renew()
    assert grant.lost is not None and "taken by bob@h9" in grant.lost
    await grant.release()  # must not clear bob's Lease
    assert api.leases[LEASE_PATH]["spec"]["holderIdentity"] == "bob@h9"


async def test_renewal_failing_for_the_whole_duration_is_lost() -> None:
    api = FakeLeaseApi()
    grant = await leases(api, renew_every=3600, duration=15).acquire(KEY, holder())
    api.down = True
    await grant.renew()
    assert grant.lost is None  # one failed renewal is not a loss
    grant.renewed_at -= 16
    await grant.renew()
    assert grant.lost is not None and "not renewed for 15 s" in grant.lost
    await grant.release()


async def test_background_renewal_runs() -> None:
    api = FakeLeaseApi()
    grant = await leases(api, renew_every=0.01).acquire(KEY, holder())
    for _ in range(200):
        if grant.renewals >= 2:
            break
        await asyncio.sleep(0.01)
    assert grant.renewals >= 2
    await grant.release()
    assert grant._task is not None and grant._task.done()


async def test_unreachable_api_is_unavailable_not_busy() -> None:
    api = FakeLeaseApi()
    api.down = True
    with pytest.raises(LockUnavailable):
        await leases(api).acquire(KEY, holder())


def test_lease_expiry_rule() -> None:
    spec = {"holderIdentity": "a@b", "leaseDurationSeconds": 15,
            "renewTime": "2026-12-02T03:12:04.000000Z"}
    renewed = datetime(2026, 12, 2, 3, 12, 4, tzinfo=UTC).timestamp()
    assert not lease_expired(spec, renewed + 16, skew=2)
    assert lease_expired(spec, renewed + 18, skew=2)
    assert lease_expired({"leaseDurationSeconds": 15}, renewed)  # no holder: free


# --------------------------------------------------------------------------- host flock


def host_key(tmp_path: Path, *names: str) -> LockKey:
    files = tuple(HostLockFile(LOCAL, str(tmp_path / f".{n}.sfops-lock"), label=f"{n}'s host")
                  for n in names or ("x",))
    return LockKey("nginx-up-1234", "nginx upstream", files)


async def test_host_flock_excludes_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    key = host_key(tmp_path)
    grant = await HostFlockLocks().acquire(key, holder())
    with pytest.raises(LockBusy) as busy:
        await HostFlockLocks().acquire(key, holder("bob", "h9"))
    assert busy.value.holder == "alice@host2" and busy.value.pid == str(os.getpid())
    assert f"flock local:{tmp_path}/.x.sfops-lock" in busy.value.detail()
    await grant.release()
    assert (tmp_path / ".x.sfops-lock").read_text() == ""  # emptied before it was let go
    again = await HostFlockLocks().acquire(key, holder("bob", "h9"))
    await again.release()


async def test_host_lock_dies_with_its_holder(tmp_path: Path) -> None:
    """A SIGKILLed sfops leaves no lock behind: its lock process reads end-of-file."""
    path = tmp_path / ".x.sfops-lock"
    script = (
        "import asyncio, sys\n"
        "from backends.config import LocalExecutorConfig\n"
        "from backends.locks import Holder, HostFlockLocks, HostLockFile, LockKey\n"
        "async def main():\n"
        f"    file = HostLockFile(LocalExecutorConfig('local'), {str(path)!r})\n"
        "    key = LockKey('k', 'k', (file,))\n"
        "    grant = await HostFlockLocks().acquire(key, Holder('dead', 'h'))\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "    await grant.release()\n"
        "asyncio.run(main())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy):
            await HostFlockLocks().acquire(host_key(tmp_path), holder())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for _ in range(100):  # the lock process sees end-of-file on its stdin
            try:
                grant = await HostFlockLocks().acquire(host_key(tmp_path), holder())
                break
            except LockBusy:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the dead holder's host lock was never released")
        await grant.release()
    finally:
        if child.poll() is None:
            child.kill()


async def test_host_lock_process_that_dies_is_reported_lost(tmp_path: Path) -> None:
    grant = await HostFlockLocks().acquire(host_key(tmp_path), holder())
    process = grant.files[0].process.process  # type: ignore[attr-defined]
    os.killpg(process.pid, signal.SIGKILL)
    for _ in range(100):
        if grant.lost:
            break
        await asyncio.sleep(0.02)
    assert grant.lost is not None and "lock process ended" in grant.lost
    await grant.release()


async def test_unreachable_host_is_skipped_with_a_note_busy_one_refuses(tmp_path: Path) -> None:
    key = LockKey("k", "k", (
        HostLockFile(LOCAL, str(tmp_path / "missing-dir" / ".a.sfops-lock"), label="pg-1's host"),
        HostLockFile(LOCAL, str(tmp_path / ".b.sfops-lock"), label="pg-2's host"),
    ))
    grant = await HostFlockLocks().acquire(key, holder())
    assert len(grant.files) == 1 and "pg-1's host not locked" in grant.notes[0]
    only_missing = LockKey("k", "k", key.hosts[:1])
    with pytest.raises(LockUnavailable):
        await HostFlockLocks().acquire(only_missing, holder())
    await grant.release()


# --------------------------------------------------------------------------- local fallback


async def test_local_flock_is_the_last_fallback_and_says_so(tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path))
    key = LockKey("kafka-1234abcd", "Kafka cluster (k:9092)")
    first = await manager.acquire([key], user="alice", host="h", action="kafka.drain 2")
    assert [c.status for c in first.checks] == [CheckStatus.WARN]
    assert "last fallback" in first.checks[0].detail and not first.refused
    second = await manager.acquire([key], user="bob", host="h", action="kafka.drain 3")
    assert second.refused and second.checks[0].status is CheckStatus.FAIL
    detail = second.checks[0].detail
    assert "held by alice@h" in detail and "kafka.drain 2" in detail
    await first.release()
    third = await manager.acquire([key], user="bob", host="h", action="kafka.drain 3")
    assert not third.refused
    await third.release()


# --------------------------------------------------------------------------- the manager


async def test_lease_and_host_lock_both_taken_for_a_host_bound_key(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"), lease=leases(api))
    key = LockKey("pg-abc12345", "PostgreSQL cluster", host_key(tmp_path, "pg-1").hosts)
    held = await manager.acquire([key], user="alice", host="h", action="pg.failover pg-2")
    check = held.checks[0]
    assert check.status is CheckStatus.PASS, check
    assert "Lease streamforge/sfops-pg-abc12345" in check.detail and "flock local:" in check.detail
    await held.release()
    assert "holderIdentity" not in api.leases[LEASE_PATH]["spec"]


async def test_busy_lease_refuses_and_takes_no_host_lock(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    other = await leases(api).acquire(KEY, holder("bob", "h9"))
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"), lease=leases(api))
    key = LockKey(KEY.name, KEY.title, host_key(tmp_path, "pg-1").hosts)
    held = await manager.acquire([key], user="alice", host="h", action="pg.switchover pg-2")
    assert held.refused and held.grants == []
    assert held.checks[0].name == CHECK_NAME and "held by bob@h9" in held.checks[0].detail
    free = await HostFlockLocks().acquire(key, holder())  # the host lock was not kept
    await free.release()
    await other.release()


async def test_unreachable_api_falls_back_to_the_host_lock_with_a_warning(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    api.down = True
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"), lease=leases(api))
    key = LockKey(KEY.name, KEY.title, host_key(tmp_path, "pg-1").hosts)
    held = await manager.acquire([key], user="alice", host="h", action="pg.rejoin pg-1")
    assert held.checks[0].status is CheckStatus.WARN
    assert "lease lock not taken" in held.checks[0].detail
    assert "last fallback" not in held.checks[0].detail  # the host lock holds across machines
    await held.release()


async def test_a_busy_second_key_releases_the_first(tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path))
    a, b = LockKey("a", "A"), LockKey("b", "B")
    other = await manager.acquire([b], user="bob", host="h", action="x")
    held = await manager.acquire([a, b], user="alice", host="h", action="y")
    assert held.refused and held.grants == []
    again = await manager.acquire([a], user="carol", host="h", action="z")
    assert not again.refused
    await again.release()
    await other.release()


def test_key_names_are_dns_labels() -> None:
    assert key_name("k8s-deploy", "streamforge", "streamforge-api") == (
        "k8s-deploy-streamforge-streamforge-api")
    name = key_name("nginx", "api_backend", digest="/etc/nginx/conf.d/upstream.conf")
    assert name.startswith("nginx-api-backend-") and len(name) <= 63
    assert key_name("pg", digest="a:1,b:2") != key_name("pg", digest="a:1,b:3")


# --------------------------------------------------------------------------- the runner


class LockedAction(Action):
    name = "test.locked"

    def __init__(self, key: LockKey, steps: int = 3) -> None:
        super().__init__("t1")
        self.key = key
        self.steps = steps
        self.preflights = 0
        self.at_step: asyncio.Event = asyncio.Event()
        self.go_on: asyncio.Event = asyncio.Event()

    def locks(self) -> list[LockKey]:
        return [self.key]

    async def preflight(self) -> list[CheckResult]:
        self.preflights += 1
        return [CheckResult.passed("ok")]

    async def execute(self) -> AsyncIterator[Step]:
        for index in range(self.steps):
            yield Step(f"step {index}")
            if index == 0:
                self.at_step.set()
                await self.go_on.wait()


def runner(tmp_path: Path, manager: LockManager, user: str = "alice") -> ActionRunner:
    return ActionRunner(AuditLog(tmp_path / "audit.jsonl"), user=user, host="h", locks=manager)


async def test_runner_locks_before_the_preflight_and_refuses_a_busy_target_even_forced(
        tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    key = LockKey("pg-1", "PostgreSQL cluster")
    first = LockedAction(key)
    running = asyncio.create_task(runner(tmp_path, manager).run(first))
    await first.at_step.wait()
    second = LockedAction(key)
    result = await runner(tmp_path, manager, "bob").run(second, force=True)
    assert result.outcome is Outcome.REFUSED and "held by alice@h" in (result.error or "")
    assert second.preflights == 0  # refused at the lock: the preflight did not run
    first.go_on.set()
    done = await running
    assert done.ok and done.preflight[0].name == CHECK_NAME
    records = AuditLog(tmp_path / "audit.jsonl").read()
    assert {r["outcome"] for r in records} == {"refused", "succeeded"}
    assert all(r["preflight"][0]["name"] == CHECK_NAME for r in records)
    third = LockedAction(key, steps=1)
    third.go_on.set()
    assert (await runner(tmp_path, manager, "bob").run(third)).ok  # released at the end


async def test_the_intent_record_names_the_lock_held_its_key_and_holder(
        tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    action = LockedAction(LockKey("pg-abc", "PostgreSQL cluster (pg-1, pg-2)"), steps=1)
    action.go_on.set()
    assert (await runner(tmp_path, manager).run(action)).ok
    started, finished = AuditLog(tmp_path / "audit.jsonl").records()
    assert started["event"] == "started" and finished["started_id"] == started["id"]
    lock = started["lock"]
    assert lock["keys"] == [{"name": "pg-abc", "title": "PostgreSQL cluster (pg-1, pg-2)"}]
    assert lock["holder"] == "alice@h" and lock["action"] == "test.locked t1"
    assert isinstance(lock["since"], float) and isinstance(lock["pid"], int)
    assert [c["name"] for c in lock["checks"]] == [CHECK_NAME]


async def test_prepare_holds_the_lock_through_confirmation_and_close_releases_it(
        tmp_path: Path) -> None:
    from backends.actions import close_quietly

    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    key = LockKey("nginx-1", "nginx upstream")
    shown = LockedAction(key)
    checks = await runner(tmp_path, manager).prepare(shown)
    assert [c.name for c in checks] == [CHECK_NAME, "ok"] and shown.held_locks is not None
    other = LockedAction(key)
    refused = await runner(tmp_path, manager, "bob").prepare(other)
    assert refused[0].status is CheckStatus.FAIL and other.preflights == 0
    await close_quietly(shown)  # never confirmed
    assert shown.held_locks is None
    assert (await runner(tmp_path, manager, "bob").prepare(other))[0].status is not (
        CheckStatus.FAIL)
    await close_quietly(other)


async def test_a_lost_lock_stops_the_run_at_the_next_safe_point(tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    action = LockedAction(LockKey("k", "K"), steps=3)
    task = asyncio.create_task(runner(tmp_path, manager).run(action))
    await action.at_step.wait()
    assert action.held_locks is not None
    grant = action.held_locks.grants[0]
    grant.lost = "Lease streamforge/sfops-k taken by bob@h9"  # type: ignore[misc]
    action.go_on.set()
    result = await task
    assert result.outcome is Outcome.INTERRUPTED and "lock lost" in (result.error or "")
    assert result.steps == 2  # step 0 passed the check; step 1 was the next safe point


async def test_a_lock_lost_while_the_operator_read_the_preflight_refuses(
        tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    action = LockedAction(LockKey("k", "K"), steps=1)
    action.go_on.set()
    checks = await runner(tmp_path, manager).prepare(action)
    assert action.held_locks is not None
    grant = action.held_locks.grants[0]
    grant.lost = "Lease streamforge/sfops-k not renewed for 15 s"  # type: ignore[misc]
    result = await runner(tmp_path, manager).run(action, preflight=checks, force=True)
    assert result.outcome is Outcome.REFUSED and "lock lost" in (result.error or "")
    assert not action.at_step.is_set()  # nothing was executed
    assert action.held_locks is None  # released at the end all the same


# --------------------------------------------------------------------------- dry run: peek


async def test_peek_names_the_holder_and_holds_nothing(tmp_path: Path) -> None:
    api = FakeLeaseApi()
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"), lease=leases(api))
    key = LockKey(KEY.name, KEY.title, host_key(tmp_path, "pg-1").hosts)
    free = await manager.peek([key], user="alice", host="h", action="pg.failover pg-2")
    assert free[0].status is CheckStatus.PASS, free
    assert "free; would take Lease streamforge/" in free[0].detail
    assert "holderIdentity" not in api.leases.get(LEASE_PATH, {}).get("spec", {})
    held = await manager.acquire([key], user="bob", host="h9", action="pg.switchover pg-2")
    busy = await manager.peek([key], user="alice", host="h", action="pg.failover pg-2")
    assert busy[0].status is CheckStatus.FAIL and "held by bob@h9" in busy[0].detail
    await held.release()
    # The peeks left nothing behind: a real action takes both locks.
    again = await manager.acquire([key], user="carol", host="h", action="pg.rejoin pg-1")
    assert not again.refused and len(again.grants) == 2
    await again.release()


async def test_peek_of_a_host_lock_names_its_holder(tmp_path: Path) -> None:
    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    key = host_key(tmp_path, "pg-1")
    held = await manager.acquire([key], user="bob", host="h9", action="pg.failover pg-2")
    busy = await manager.peek([key], user="alice", host="h", action="pg.failover pg-1")
    assert busy[0].status is CheckStatus.FAIL and "held by bob@h9" in busy[0].detail
    await held.release()
    free = await manager.peek([key], user="alice", host="h", action="pg.failover pg-1")
    assert free[0].status is CheckStatus.PASS and "free; would take flock" in free[0].detail


async def test_dry_run_of_a_busy_target_refuses_even_forced(tmp_path: Path) -> None:
    import argparse
    import io

    from tui.commands._action import _run_built

    manager = LockManager(local=LocalFlockLocks(tmp_path / "state"))
    key = LockKey("nginx-1", "nginx upstream")
    other = await manager.acquire([key], user="bob", host="h9", action="nginx.drain api-1")
    action = LockedAction(key)
    args = argparse.Namespace(dry_run=True, force=True, json=True, yes=False)
    out, err = io.StringIO(), io.StringIO()
    code = await _run_built(action, args, runner(tmp_path, manager), io.StringIO(), out, err,
                            lambda step: None)
    data = json.loads(out.getvalue())
    assert code != 0 and data["would_refuse"] is True and action.preflights == 0
    assert "held by bob@h9" in data["preflight"][0]["detail"]
    await other.release()
    code = await _run_built(action, args, runner(tmp_path, manager), io.StringIO(), out, err,
                            lambda step: None)
    assert code == 0 and action.preflights == 1
    assert not AuditLog(tmp_path / "audit.jsonl").path.exists() or not (
        AuditLog(tmp_path / "audit.jsonl").read())  # a dry run records nothing


async def test_lease_of_a_dead_sfops_on_this_machine_is_taken_at_once() -> None:
    """Its holder ran here, in this boot, and is gone: provably dead, no expiry to wait."""
    api = FakeLeaseApi()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = await leases(api).acquire(KEY, Holder("alice", "h", "pg.failover pg-2",
                                                  pid=dead.pid))
    first._released = True  # the holder "died": no release, no renewals
    if first._task is not None:
        first._task.cancel()
    taken = await leases(api).acquire(KEY, holder("bob", "h9"))
    assert api.leases[LEASE_PATH]["spec"]["holderIdentity"] == "bob@h9"
    await taken.release()


async def test_lease_of_a_holder_on_another_machine_waits_for_its_expiry() -> None:
    api = FakeLeaseApi()
    first = await leases(api).acquire(KEY, holder("alice", "h2"))
    annotations = api.leases[LEASE_PATH]["metadata"]["annotations"]
    process = json.loads(annotations["sfops.streamforge.io/process"])
    annotations["sfops.streamforge.io/process"] = json.dumps(
        {**process, "node": "another-machine", "pid": 999999})
    with pytest.raises(LockBusy, match="held by alice@h2"):
        await leases(api).acquire(KEY, holder("bob", "h9"))
    await first.release()
