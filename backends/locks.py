"""One action per target at a time, across operators and machines.

Every action declares what it locks (:meth:`backends.actions.Action.locks`): a
:class:`LockKey` per target — one PostgreSQL cluster (failover, switchover and rejoin of it
share the key), one nginx upstream file, one Kafka cluster, one Kubernetes deployment or node.
The runner takes the locks before the preflight and holds them to the end of the run.

The locks live in coordination systems that already exist, never in a server of our own, and
each provider has the same small interface (:class:`LockProvider`: ``acquire(key, holder)`` →
a :class:`Grant` to ``release()``, or :class:`LockBusy` naming the holder, or
:class:`LockUnavailable`):

* :class:`LeaseLocks` — where ``[kubernetes]`` is configured, a ``coordination.k8s.io/v1``
  Lease per key (holder ``user@host``, ``leaseDurationSeconds`` :data:`LEASE_SECONDS`),
  renewed by a background task while the action runs and released at its end. A Lease whose
  holder stopped renewing (a killed sfops) is taken over once it expired. Every write carries
  the ``resourceVersion`` read, so of two takers exactly one wins (the other gets 409).
* :class:`HostFlockLocks` — for host-bound keys (an nginx upstream file, the PostgreSQL
  members' hosts): an exclusive ``flock`` on the host where the change happens, held by a
  process started through the executor's configuration (locally, or over its own SSH
  connection). The process holds the lock until its stdin closes, so the lock dies with the
  sfops that took it (SIGKILL, power cut, dropped link) — no expiry to wait for.
* :class:`LocalFlockLocks` — an ``flock`` on a file in ``state_dir``: excludes sfops runs on
  this machine only. The last fallback, used only when neither of the others could be taken,
  and named as such in the preflight (a WARN check).

A busy target fails the preflight with a check naming the holder and since when; the checks
(what was taken, where) go into the audit record with the rest of the preflight.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from backends.actions import CheckResult, CheckStatus
from backends.audit import INTERRUPTED, process_identity, process_state
from backends.config import ExecutorConfig, LocalExecutorConfig, SshExecutorConfig
from backends.secrets import child_environment

if TYPE_CHECKING:
    import asyncssh

    from backends.config import SfopsConfig
    from backends.kubernetes.client import Connection, KubeClient

log = logging.getLogger(__name__)

CHECK_NAME = "target lock"
# A Lease lives this long without renewal; renewed every RENEW_SECONDS. A killed sfops's
# Lease is taken over LEASE_SECONDS (+ CLOCK_SKEW_SECONDS) after its last renewal.
LEASE_SECONDS = 15
RENEW_SECONDS = 5.0
# Expiry compares the holder's renewTime (its clock) with ours: allow this much skew.
CLOCK_SKEW_SECONDS = 2.0
REQUEST_TIMEOUT = 5.0  # every Lease request
HOST_LOCK_TIMEOUT = 10.0  # starting the lock process on a host until it answers
RELEASE_TIMEOUT = 5.0
LEASE_API = "/apis/coordination.k8s.io/v1"
ANNOTATION = "sfops.streamforge.io/"


# --------------------------------------------------------------------------- what is locked


@dataclass(frozen=True)
class HostLockFile:
    """A lock file on the host where a change happens, reached through an executor."""

    executor: ExecutorConfig
    path: str
    prefix: tuple[str, ...] = ()  # run as (e.g. ``sudo -n -u postgres --``)
    label: str = ""  # "pg-1's host"

    @property
    def where(self) -> str:
        host = "local" if isinstance(self.executor, LocalExecutorConfig) else (
            f"{self.executor.host}")
        return f"flock {host}:{self.path}"


@dataclass(frozen=True)
class LockKey:
    """One target's lock. ``name`` is stable across operators' configurations (it names the
    Lease and the local lock file); ``title`` is for people."""

    name: str
    title: str
    hosts: tuple[HostLockFile, ...] = ()


def key_name(*parts: str, digest: str | None = None) -> str:
    """A DNS-label-safe name from ``parts`` (plus a short hash of ``digest`` when given, or
    when the name had to be shortened), e.g. ``key_name("nginx", "api_backend")``."""
    raw = "-".join(parts).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if digest is not None or len(name) > 40 or name != raw:
        text = digest if digest is not None else raw
        name = f"{name[:40].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return name


def lease_name(key: LockKey) -> str:
    return f"sfops-{key.name}"


# --------------------------------------------------------------------------- holders


@dataclass(frozen=True)
class Holder:
    """Who takes a lock: ``user@host`` for people, a token for sfops itself (two sfops of the
    same user on the same machine — a TUI and a runbook — are different holders)."""

    user: str
    host: str
    action: str = ""  # "pg.failover pg-2"
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    since: float = field(default_factory=time.time)

    @property
    def identity(self) -> str:
        return f"{self.user}@{self.host}"

    def record(self) -> str:
        """One JSON line, written into host and local lock files."""
        return json.dumps({"holder": self.identity, "since": self.since, "action": self.action,
                           "pid": self.pid, "token": self.token}, ensure_ascii=False)


def format_since(when: float | None, now: float | None = None) -> str:
    if when is None:
        return "an unknown time"
    now = time.time() if now is None else now
    pattern = "%H:%M:%S UTC" if abs(now - when) < 20 * 3600 else "%Y-%m-%d %H:%M:%S UTC"
    return time.strftime(pattern, time.gmtime(when))


class LockBusy(Exception):
    """Someone else holds the lock."""

    def __init__(self, where: str, holder: str, since: float | None, action: str = "",
                 pid: str = "") -> None:
        self.where = where
        self.holder = holder or "an unknown holder"
        self.since = since
        self.action = action
        self.pid = pid
        super().__init__(self.detail())

    def detail(self) -> str:
        """E.g. held by alice@host2 since 03:12:04 UTC (pg.failover pg-2, pid 4242; Lease
        streamforge/sfops-pg-…)."""
        about = ", ".join(part for part in (self.action, f"pid {self.pid}" if self.pid else "")
                          if part)
        about = f"{about}; " if about else ""
        return f"held by {self.holder} since {format_since(self.since)} ({about}{self.where})"


class LockUnavailable(Exception):
    """This provider could not take or judge the lock (unreachable, forbidden, no flock)."""


def busy_from_record(where: str, text: str) -> LockBusy:
    """A :class:`LockBusy` from a lock file's holder line (possibly empty or garbled)."""
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    since = data.get("since")
    return LockBusy(where, str(data.get("holder") or ""),
                    float(since) if isinstance(since, int | float) else None,
                    str(data.get("action") or ""), str(data.get("pid") or ""))


# --------------------------------------------------------------------------- interface


class Grant(Protocol):
    where: str  # "Lease streamforge/sfops-pg-…", "flock local:/…", "local lock …"
    notes: list[str]  # what could not be taken beside (WARN)

    @property
    def lost(self) -> str | None:
        """None while held; why not, once the lock was lost during the run."""
        ...

    async def release(self) -> None: ...


class LockProvider(Protocol):
    kind: str

    async def acquire(self, key: LockKey, holder: Holder) -> Grant:
        """Take ``key`` or raise :class:`LockBusy` / :class:`LockUnavailable`."""
        ...


# --------------------------------------------------------------------------- Kubernetes Lease


def _micro(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def lease_expired(spec: dict[str, Any], now: float, skew: float = CLOCK_SKEW_SECONDS) -> bool:
    """A Lease with no holder, or not renewed for its duration (plus clock skew), is free."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    if renewed is None:
        return True
    duration = spec.get("leaseDurationSeconds")
    duration = float(duration) if isinstance(duration, int | float) else float(LEASE_SECONDS)
    return now > renewed + duration + skew


class LeaseLocks:
    """A ``coordination.k8s.io/v1`` Lease per key, in ``namespace``."""

    kind = "lease"

    def __init__(self, client: Callable[[], KubeClient], namespace: str, *,
                 duration: int = LEASE_SECONDS, renew_every: float = RENEW_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.namespace = namespace
        self.duration = duration
        self.renew_every = renew_every
        self.clock = clock

    def path(self, name: str | None = None) -> str:
        base = f"{LEASE_API}/namespaces/{self.namespace}/leases"
        return base if name is None else f"{base}/{name}"

    async def acquire(self, key: LockKey, holder: Holder) -> LeaseGrant:
        from backends.kubernetes.client import KubeApiError, KubeError

        name = lease_name(key)
        where = f"Lease {self.namespace}/{name}"
        client = self._client()
        lease: dict[str, Any] | None
        try:
            try:
                lease = await _request(client, "GET", self.path(name), what=f"get {where}")
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
                lease = None
            if lease is None:
                try:
                    created = await _request(client, "POST", self.path(),
                                             self._body(name, holder, None), what=f"create {where}")
                    return self._grant(client, where, name, holder, created)
                except KubeApiError as exc:
                    if exc.status != 409:  # AlreadyExists: another taker created it first
                        raise
                    lease = await _request(client, "GET", self.path(name), what=f"get {where}")
            spec = dict(lease.get("spec") or {})
            annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
            ours = annotations.get(ANNOTATION + "token") == holder.token
            if not ours and not lease_expired(spec, self.clock()) and not holder_gone(lease):
                raise _lease_busy(where, lease)
            try:
                replaced = await _request(client, "PUT", self.path(name),
                                          self._body(name, holder, lease), what=f"take {where}")
            except KubeApiError as exc:
                if exc.status != 409:  # Conflict: someone else wrote it since our read
                    raise
                raise _lease_busy(where, await _request(
                    client, "GET", self.path(name), what=f"get {where}")) from None
            return self._grant(client, where, name, holder, replaced)
        except LockBusy:
            await client.close()
            raise
        except KubeError as exc:
            await client.close()
            raise LockUnavailable(f"{where}: {exc}") from None
        except BaseException:
            await client.close()
            raise

    async def peek(self, key: LockKey) -> str:
        """Who holds ``key`` now, without taking it (a read only): raises :class:`LockBusy`
        for a live holder, returns where the lock would be taken when it is free."""
        from backends.kubernetes.client import KubeApiError, KubeError

        name = lease_name(key)
        where = f"Lease {self.namespace}/{name}"
        client = self._client()
        try:
            try:
                lease = await _request(client, "GET", self.path(name), what=f"get {where}")
            except KubeApiError as exc:
                if not exc.not_found:
                    raise
                return where
            if not lease_expired(dict(lease.get("spec") or {}), self.clock()):
                raise _lease_busy(where, lease)
            return where
        except KubeError as exc:
            raise LockUnavailable(f"{where}: {exc}") from None
        finally:
            await client.close()

    def _grant(self, client: KubeClient, where: str, name: str, holder: Holder,
               lease: dict[str, Any]) -> LeaseGrant:
        grant = LeaseGrant(self, client, where, name, holder, lease)
        grant.start()
        return grant

    def _body(self, name: str, holder: Holder, current: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro(self.clock())
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace}
        spec: dict[str, Any] = {}
        transitions = 0
        if current is not None:
            metadata = dict(_writable(current)["metadata"])
            old = dict(current.get("spec") or {})
            transitions = int(old.get("leaseTransitions") or 0)
            if old.get("holderIdentity"):
                transitions += 1
        labels = dict(metadata.get("labels") or {})
        labels["app.kubernetes.io/managed-by"] = "sfops"
        annotations = {k: v for k, v in dict(metadata.get("annotations") or {}).items()
                       if not k.startswith(ANNOTATION)}
        annotations.update({ANNOTATION + "token": holder.token,
                            ANNOTATION + "action": holder.action,
                            ANNOTATION + "pid": str(holder.pid),
                            ANNOTATION + "process": json.dumps(process_identity(holder.pid))})
        metadata.update(labels=labels, annotations=annotations)
        spec.update(holderIdentity=holder.identity, leaseDurationSeconds=self.duration,
                    acquireTime=now, renewTime=now, leaseTransitions=transitions)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": spec}


def holder_gone(lease: dict[str, Any]) -> bool:
    """The Lease's holder was an sfops process on this machine, in this boot, that no longer
    runs (SIGKILL, OOM kill, a closed terminal): provably dead, so its Lease is free now
    rather than after its expiry. A holder on another machine — or one whose process cannot
    be judged — is waited out (:func:`lease_expired`)."""
    annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
    try:
        process = json.loads(annotations.get(ANNOTATION + "process") or "{}")
    except ValueError:
        return False
    if not isinstance(process, dict) or not process.get("node") or not process.get("boot_id"):
        return False
    return process_state(process) == INTERRUPTED


def _lease_busy(where: str, lease: dict[str, Any]) -> LockBusy:
    spec = dict(lease.get("spec") or {})
    annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
    holder = str(spec.get("holderIdentity") or "")
    if not holder:
        holder = "another sfops (taken and released meanwhile: try again)"
    return LockBusy(where, holder, _parse_time(spec.get("acquireTime")),
                    str(annotations.get(ANNOTATION + "action") or ""),
                    str(annotations.get(ANNOTATION + "pid") or ""))


async def _request(client: KubeClient, method: str, path: str, body: Any = None, *,
                   what: str) -> dict[str, Any]:
    data = await client.request(method, path, body=body, timeout=REQUEST_TIMEOUT,
                                verb=method.lower(), what=what)
    parsed = json.loads(data) if data else {}
    return parsed if isinstance(parsed, dict) else {}


def _writable(lease: dict[str, Any]) -> dict[str, Any]:
    """A Lease as read, ready to be written back: its resourceVersion kept (the write fails
    with 409 if anyone wrote since), the server-managed field bookkeeping left out."""
    body = dict(lease)
    metadata = dict(lease.get("metadata") or {})
    metadata.pop("managedFields", None)
    body["metadata"] = metadata
    return body


class LeaseGrant:
    """A held Lease, renewed in the background until :meth:`release`."""

    def __init__(self, locks: LeaseLocks, client: KubeClient, where: str, name: str,
                 holder: Holder, lease: dict[str, Any]) -> None:
        self.locks = locks
        self.client = client
        self.where = where
        self.name = name
        self.holder = holder
        self.lease = lease
        self.notes: list[str] = []
        self.renewed_at = time.monotonic()
        self.renewals = 0
        self._lost: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._released = False

    @property
    def lost(self) -> str | None:
        return self._lost

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_loop(), name=f"renew {self.where}")

    async def _renew_loop(self) -> None:
        while self._lost is None:
            await asyncio.sleep(self.locks.renew_every)
            try:
                await self.renew()
            except Exception as exc:  # never end the renewals silently
                log.warning("renewing %s: %s", self.where, type(exc).__name__)

    async def renew(self) -> None:
        """One renewal; marks the grant lost when someone else took the Lease, or when it
        could not be renewed for its whole duration."""
        from backends.kubernetes.client import KubeApiError

        body = _writable(self.lease)
        body["spec"] = {**dict(self.lease.get("spec") or {}),
                        "renewTime": _micro(self.locks.clock())}
        try:
            self.lease = await _request(self.client, "PUT", self.locks.path(self.name), body,
                                        what=f"renew {self.where}")
            self.renewed_at = time.monotonic()
            self.renewals += 1
            return
        except KubeApiError as exc:
            if exc.status == 409:
                await self._reread()
                return
            problem = str(exc)
        except Exception as exc:  # KubeError, or an answer that is not a Lease
            problem = str(exc)
        if time.monotonic() - self.renewed_at >= self.locks.duration:
            self._lost = f"{self.where} not renewed for {self.locks.duration} s: {problem}"
            log.warning("lock lost: %s", self._lost)

    async def _reread(self) -> None:
        from backends.kubernetes.client import KubeError

        try:
            lease = await _request(self.client, "GET", self.locks.path(self.name),
                                   what=f"get {self.where}")
        except KubeError:
            return
        annotations = dict((lease.get("metadata") or {}).get("annotations") or {})
        if annotations.get(ANNOTATION + "token") == self.holder.token:
            self.lease = lease  # still ours (a write we did not see answered): go on from it
            return
        self._lost = _lease_busy(self.where, lease).detail().replace("held by", "taken by", 1)
        log.warning("lock lost: %s", self._lost)

    async def release(self) -> None:
        from backends.kubernetes.client import KubeApiError, KubeError

        if self._released:
            return
        self._released = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            if self._lost is None:
                for _ in range(2):
                    body = _writable(self.lease)
                    spec = dict(self.lease.get("spec") or {})
                    spec.pop("holderIdentity", None)
                    spec.update(leaseDurationSeconds=1, renewTime=_micro(self.locks.clock()))
                    body["spec"] = spec
                    try:
                        await _request(self.client, "PUT", self.locks.path(self.name), body,
                                       what=f"release {self.where}")
                        break
                    except KubeApiError as exc:
                        if exc.status != 409:
                            raise
                        await self._reread()  # ours still: retry from the new version
                        if self._lost is not None:
                            break
        except KubeError as exc:
            log.warning("releasing %s failed (it expires by itself within %s s): %s",
                        self.where, self.locks.duration, exc)
        finally:
            await self.client.close()


# --------------------------------------------------------------------------- host flock

# Holds an exclusive flock on $1 until stdin closes. Busy: prints "busy" and the holder line.
# The file is created group-writable and locked through a read-only descriptor, so operators
# with different accounts on the host lock the same file. The holder line ($2) is written
# once the lock is held (where the file is writable) and emptied before it is let go.
_HOLD_SCRIPT = """[ -e "$1" ] || (umask 002 && : >> "$1") || exit 71
exec 9<"$1" || exit 71
if ! flock -n 9; then echo busy; cat -- "$1"; exit 75; fi
{ printf '%s\\n' "$2" > "$1"; } 2>/dev/null || true
echo locked
cat > /dev/null
{ : > "$1"; } 2>/dev/null || true
"""


class _Held(Protocol):
    async def readline(self) -> str: ...

    async def read_rest(self) -> str: ...

    async def wait(self) -> int | None: ...

    async def stop(self) -> None: ...


class _LocalProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def readline(self) -> str:
        assert self.process.stdout is not None
        return (await self.process.stdout.readline()).decode("utf-8", "replace")

    async def read_rest(self) -> str:
        assert self.process.stdout is not None and self.process.stderr is not None
        out = await self.process.stdout.read()
        err = await self.process.stderr.read()
        return (out + err).decode("utf-8", "replace")

    async def wait(self) -> int | None:
        return await self.process.wait()

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()  # EOF: the script empties the file and exits
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                pass
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await process.wait()


class _SshProcess:
    def __init__(self, executor: Any, process: asyncssh.SSHClientProcess[str]) -> None:
        self.executor = executor  # its own connection: closed with the lock
        self.process = process

    async def readline(self) -> str:
        return str(await self.process.stdout.readline())

    async def read_rest(self) -> str:
        out = str(await self.process.stdout.read())
        err = str(await self.process.stderr.read())
        return out + err

    async def wait(self) -> int | None:
        completed = await self.process.wait(check=False)
        return completed.exit_status

    async def stop(self) -> None:
        try:
            self.process.stdin.write_eof()
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await self.process.wait(check=False)
        except Exception:  # noqa: S110 - closing the connection below ends it anyway
            pass
        finally:
            await self.executor.close()


async def _spawn(file: HostLockFile, argv: list[str]) -> _Held:
    if isinstance(file.executor, SshExecutorConfig):
        from backends.executors import SshExecutor

        # A connection of its own: the action's executor may drop and reconnect its
        # connection mid-run, which must not end the lock process.
        executor = SshExecutor(file.executor)
        try:
            connection = await executor._connect()
            remote = await connection.create_process(shlex.join(argv), encoding="utf-8",
                                                     errors="replace")
        except BaseException:
            await executor.close()
            raise
        return _SshProcess(executor, remote)
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C on the terminal must not end the lock first
        env=child_environment(),  # no secret in a child's environment
    )
    return _LocalProcess(process)


class HostFlockLocks:
    """``flock`` on each of a key's host lock files (in the key's order), held by a process on
    that host. A host that cannot be reached is skipped with a note — the action's own
    preflight says whether it needs that host — but a busy one refuses."""

    kind = "host"

    def __init__(self, timeout: float = HOST_LOCK_TIMEOUT) -> None:
        self.timeout = timeout

    async def acquire(self, key: LockKey, holder: Holder) -> HostGrant:
        grants: list[_HostFile] = []
        notes: list[str] = []
        try:
            for file in key.hosts:
                try:
                    grants.append(await self._take(file, holder))
                except LockUnavailable as exc:
                    notes.append(f"{file.label or file.where} not locked: {exc}")
        except BaseException:
            await asyncio.gather(*(g.release() for g in grants), return_exceptions=True)
            raise
        if not grants:
            raise LockUnavailable("; ".join(notes) or "no host lock file declared")
        return HostGrant(grants, notes)

    async def _take(self, file: HostLockFile, holder: Holder) -> _HostFile:
        argv = [*file.prefix, "sh", "-c", _HOLD_SCRIPT, "sfops-lock", file.path, holder.record()]
        try:
            async with asyncio.timeout(self.timeout):
                process = await _spawn(file, argv)
        except TimeoutError:
            raise LockUnavailable(f"no answer in {self.timeout:g} s") from None
        except Exception as exc:  # ExecutorError (SSH connect), OSError (no sh)
            raise LockUnavailable(_reason(exc)) from None
        try:
            async with asyncio.timeout(self.timeout):
                first = (await process.readline()).strip()
                if first == "locked":
                    held = _HostFile(file, process)
                    held.start()
                    return held
                rest = await process.read_rest()
                status = await process.wait()
        except TimeoutError:
            await process.stop()
            raise LockUnavailable(f"no answer in {self.timeout:g} s") from None
        except BaseException:
            await process.stop()
            raise
        await process.stop()
        if first == "busy":
            raise busy_from_record(file.where, rest)
        detail = " / ".join((first + "\n" + rest).strip().splitlines()[-2:])
        raise LockUnavailable(f"exit status {status}: {detail}" if detail
                              else f"exit status {status}")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _HostFile:
    def __init__(self, file: HostLockFile, process: _Held) -> None:
        self.file = file
        self.process = process
        self.lost: str | None = None
        self._releasing = False
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_exit(), name=f"watch {self.file.where}")

    async def _watch_exit(self) -> None:
        with contextlib.suppress(Exception):
            status = await self.process.wait()
            if not self._releasing:
                self.lost = f"{self.file.where}: the lock process ended (exit status {status})"
                log.warning("lock lost: %s", self.lost)

    async def release(self) -> None:
        self._releasing = True
        await self.process.stop()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch


class HostGrant:
    def __init__(self, files: list[_HostFile], notes: list[str]) -> None:
        self.files = files
        self.notes = notes
        self.where = ", ".join(f.file.where for f in files)

    @property
    def lost(self) -> str | None:
        return next((f.lost for f in self.files if f.lost), None)

    async def release(self) -> None:
        await asyncio.gather(*(f.release() for f in self.files), return_exceptions=True)


# --------------------------------------------------------------------------- local fallback


class LocalFlockLocks:
    """``flock`` on ``<state_dir>/locks/<key>.lock``: this machine only (last fallback)."""

    kind = "local"

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "locks"

    async def acquire(self, key: LockKey, holder: Holder) -> LocalGrant:
        path = self.dir / f"{key.name}.lock"
        where = f"local lock {path} (last fallback: excludes sfops on this machine only)"
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LockUnavailable(f"{path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = ""
            with contextlib.suppress(OSError):
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise busy_from_record(f"local lock {path}", text) from None
        except OSError as exc:
            os.close(fd)
            raise LockUnavailable(f"{path}: {exc.strerror or exc}") from None
        record = (holder.record() + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        return LocalGrant(fd, where)


class LocalGrant:
    def __init__(self, fd: int, where: str) -> None:
        self.fd: int | None = fd
        self.where = where
        self.notes: list[str] = []
        self.lost: str | None = None

    async def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor lets the lock go


# --------------------------------------------------------------------------- the manager


@dataclass
class HeldLocks:
    """What one action took: the checks to show and record, and the grants to release."""

    checks: list[CheckResult]
    grants: list[Grant] = field(default_factory=list)
    refused: bool = False
    keys: list[LockKey] = field(default_factory=list)  # what was asked for
    holder: Holder | None = None  # who holds them (recorded with the intent)

    @property
    def lost(self) -> str | None:
        return next((g.lost for g in self.grants if g.lost), None)

    async def release(self) -> None:
        grants, self.grants = self.grants, []
        for grant in reversed(grants):
            try:
                await grant.release()
            except Exception as exc:  # the class only: never hide the outcome
                log.warning("releasing %s failed: %s", grant.where, type(exc).__name__)


class LockManager:
    """Takes an action's keys in order with the providers configured: the Lease (when
    Kubernetes is configured), then host flocks (host-bound keys); the local flock only when
    neither could be taken. All or nothing: a busy key releases what was taken before it."""

    def __init__(self, *, local: LocalFlockLocks, lease: LockProvider | None = None,
                 host: LockProvider | None = None) -> None:
        self.lease = lease
        self.host = host or HostFlockLocks()
        self.local = local

    async def acquire(self, keys: Sequence[LockKey], *, user: str, host: str,
                      action: str) -> HeldLocks:
        holder = Holder(user, host, action)
        held = HeldLocks([], keys=list(keys), holder=holder)
        try:
            for key in keys:
                check, grants = await self._acquire_key(key, holder)
                held.checks.append(check)
                held.grants.extend(grants)
                if check.status is CheckStatus.FAIL:
                    held.refused = True
                    await held.release()
                    return held
        except BaseException:
            await asyncio.shield(held.release())
            raise
        return held

    async def peek(self, keys: Sequence[LockKey], *, user: str, host: str,
                   action: str) -> list[CheckResult]:
        """The lock checks a dry run shows: who holds each key now, or where it would be
        taken — without holding anything a real action could run into. A Lease is only read;
        a flock cannot be read without trying it, so host and local locks are taken and
        released at once (a real action arriving in that instant is refused naming this dry
        run, as for any holder)."""
        checks: list[CheckResult] = []
        for key in keys:
            try:
                check = await self._peek_key(key, Holder(user, host, f"dry run: {action}"))
            except LockBusy as busy:
                check = CheckResult.failed(CHECK_NAME, f"{key.title}: {busy.detail()}")
            checks.append(check)
        return checks

    async def _peek_key(self, key: LockKey, holder: Holder) -> CheckResult:
        places: list[str] = []
        notes: list[str] = []
        if self.lease is not None:
            peek = getattr(self.lease, "peek", None)
            try:
                if peek is not None:
                    places.append(await peek(key))
            except LockUnavailable as exc:
                notes.append(f"lease lock not read: {exc}")
        if key.hosts:
            try:
                grant = await self.host.acquire(key, holder)
            except LockUnavailable as exc:
                notes.append(f"host lock not tried: {exc}")
            else:
                places.append(grant.where)
                notes.extend(grant.notes)
                await asyncio.shield(grant.release())
        if not places:
            try:
                grant = await self.local.acquire(key, holder)
            except LockUnavailable as exc:
                return CheckResult.failed(CHECK_NAME, f"{key.title}: no lock could be taken: "
                                          + "; ".join([*notes, str(exc)]))
            await asyncio.shield(grant.release())
            return CheckResult.warned(CHECK_NAME, "; ".join(
                [f"{key.title}: free; would take {grant.where}", *notes]))
        detail = f"{key.title}: free; would take {', '.join(places)}"
        if notes:
            return CheckResult.warned(CHECK_NAME, "; ".join([detail, *notes]))
        return CheckResult.passed(CHECK_NAME, detail)

    async def _acquire_key(self, key: LockKey, holder: Holder
                           ) -> tuple[CheckResult, list[Grant]]:
        grants: list[Grant] = []
        notes: list[str] = []
        providers: list[LockProvider] = []
        if self.lease is not None:
            providers.append(self.lease)
        if key.hosts:
            providers.append(self.host)
        try:
            for provider in providers:
                try:
                    grant = await provider.acquire(key, holder)
                except LockUnavailable as exc:
                    notes.append(f"{provider.kind} lock not taken: {exc}")
                    continue
                grants.append(grant)
                notes.extend(grant.notes)
            if not grants:
                try:
                    grant = await self.local.acquire(key, holder)
                except LockUnavailable as exc:
                    return CheckResult.failed(
                        CHECK_NAME, f"{key.title}: no lock could be taken: "
                        + "; ".join([*notes, str(exc)])), []
                return CheckResult.warned(CHECK_NAME, "; ".join(
                    [f"{key.title}: {grant.where}", *notes])), [grant]
        except LockBusy as busy:
            await asyncio.shield(_release_all(grants))
            return CheckResult.failed(CHECK_NAME, f"{key.title}: {busy.detail()}"), []
        except BaseException:
            await asyncio.shield(_release_all(grants))
            raise
        detail = f"{key.title}: taken ({', '.join(g.where for g in grants)})"
        if notes:
            return CheckResult.warned(CHECK_NAME, "; ".join([detail, *notes])), grants
        return CheckResult.passed(CHECK_NAME, detail), grants


async def _release_all(grants: Sequence[Grant]) -> None:
    await asyncio.gather(*(g.release() for g in grants), return_exceptions=True)


def lease_namespace(config: SfopsConfig) -> str | None:
    section = getattr(config, "kubernetes", None)
    if section is None:
        return None
    namespace = getattr(section, "lease_namespace", None)
    if namespace:
        return str(namespace)
    namespaces = tuple(getattr(section, "namespaces", ()) or ())
    return namespaces[0] if namespaces else "default"


def manager_for(config: SfopsConfig) -> LockManager:
    """The locks of this configuration: a Lease per key where ``[kubernetes]`` is configured
    (its client is made on first use: declaring locks never loads the kubernetes package),
    host flocks for host-bound keys, the state directory as the last fallback (the one every
    environment of the file shares: the keys name targets, not environments)."""
    local = LocalFlockLocks(config.sfops.lock_dir or config.sfops.state_dir)
    namespace = lease_namespace(config)
    if namespace is None:
        return LockManager(local=local)
    if config.sfops.read_only:
        return LockManager(local=local)  # nothing is acted on; never load the operator identity
    section = config.kubernetes
    connection: list[Connection] = []

    def client() -> KubeClient:
        from backends.kubernetes.client import KubeClient
        from backends.kubernetes.kubeconfig import connection_from_kubeconfig

        if not connection:
            # The operator identity: Leases are taken by actions (create/update).
            kubeconfig = getattr(section, "operator_kubeconfig", None) or section.kubeconfig
            connection.append(connection_from_kubeconfig(kubeconfig, section.context))
        return KubeClient(connection[0], timeout=REQUEST_TIMEOUT)

    return LockManager(local=local, lease=_LazyLease(client, namespace))


class _LazyLease:
    """:class:`LeaseLocks` whose kubeconfig is read at the first acquisition; a kubeconfig
    that cannot be read makes the Lease unavailable (noted), not the action impossible."""

    kind = "lease"

    def __init__(self, client: Callable[[], KubeClient], namespace: str) -> None:
        self.locks = LeaseLocks(client, namespace)

    async def acquire(self, key: LockKey, holder: Holder) -> Grant:
        from backends.kubernetes.client import KubeError

        try:
            return await self.locks.acquire(key, holder)
        except KubeError as exc:  # the kubeconfig could not be read
            raise LockUnavailable(str(exc)) from None

    async def peek(self, key: LockKey) -> str:
        from backends.kubernetes.client import KubeError

        try:
            return await self.locks.peek(key)
        except KubeError as exc:
            raise LockUnavailable(str(exc)) from None


# --------------------------------------------------------------------------- key helpers


def lock_file_beside(path: str | os.PathLike[str], name: str) -> str:
    """A hidden lock file in the same directory as ``path`` (never matched by an
    ``include *.conf``)."""
    target = PurePosixPath(os.fspath(path))
    return str(target.parent / f".{name}.sfops-lock")


def digest_of(values: Sequence[str]) -> str:
    return ",".join(sorted(values))


def executor_config_of(executor: object) -> ExecutorConfig | None:
    """The configuration a live executor was made from (the lock opens its own process or
    connection from it), or None for one the locks cannot use (a test double)."""
    from backends.executors import LocalExecutor, SshExecutor

    if isinstance(executor, SshExecutor):
        return executor.config
    if isinstance(executor, LocalExecutor):
        return LocalExecutorConfig(name="local")
    return None
