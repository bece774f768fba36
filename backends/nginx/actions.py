"""drain / undrain one upstream member: mark it ``down`` in the upstream file, test, reload
gracefully and (drain) wait until no request is in flight to it.

Guarantees: the upstream file changes by exactly one token; until the master runs workers with
the new configuration, any stop — a failure, a cancellation, an interruption at a progress step
— puts the original bytes back and, if a reload had been sent, reloads again, so nginx is never
left with a written but unapplied file; a drain that fails later restores the same way.
Writes are never retried.

"After the reload" means after it took effect: the whole previous generation of workers has
exited (see :class:`~backends.nginx.control.ReloadProgress`). Before that, old workers still
accept requests and route them by the previous configuration, to the member being drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import ClassVar

from backends.actions import Action, CheckResult, Step, WorstCase
from backends.audit import RUNNING, AuditLog
from backends.locks import HostLockFile, LockKey, executor_config_of, key_name, lock_file_beside
from backends.nginx.config import NginxMember
from backends.nginx.contract import DEFAULT_DRAIN_TIMEOUT
from backends.nginx.control import (
    COMMAND_TIMEOUT,
    FILE_READ_POLICY,
    NginxControl,
    ReloadProgress,
    reload_progress,
)
from backends.nginx.model import DRAIN_QUIET_SECONDS, ProbeResult
from backends.nginx.service import (
    HTTP_POLICY,
    HTTP_TIMEOUT,
    PROBE_POLICY,
    PROBE_TIMEOUT,
    NginxService,
    NginxUnreachable,
)
from backends.nginx.upstream import UpstreamError, decode, parse_upstream, set_down_bytes
from backends.resilience import describe_error
from backends.topology.blast import cross_layer, member_drain

RELOAD_TIMEOUT = 10.0  # for the master to start workers with the new configuration
# The HTTP checks: a member's probe, nginx's own liveness (each with its retry's deadline).
PROBE_BOUND = (PROBE_POLICY.deadline or 0.0) + PROBE_TIMEOUT
LIVENESS_BOUND = (HTTP_POLICY.deadline or 0.0) + HTTP_TIMEOUT + 0.5
# Host steps (reads and commands through the executor) in each phase.
CHANGE_STEPS = 6  # read the upstream, the pid file, ps; write, nginx -t, reload
NEW_WORKERS_POLL_STEPS = 2  # the pid file, ps
DRAINED_POLL_STEPS = 4  # the pid file, ps, stat and dd of the access log
RESTORE_STEPS = 3  # write, read back, reload
POLL_INTERVAL = 0.25
# Watch the access log at least this long after the reload took effect, so another nginx or
# upstream that still sends to the member has a chance to show before we call it drained.
QUIET_AFTER_RELOAD = 1.0


class NginxActionError(Exception):
    pass


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _clock(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _pids(pids: tuple[int, ...]) -> str:
    return ", ".join(map(str, pids)) or "none"


class _MemberAction(Action):
    """Shared preflight and the write → test → reload → restore-on-failure core."""

    mark_down: ClassVar[bool]

    def __init__(self, service: NginxService, member: str,
                 timeout: float = DEFAULT_DRAIN_TIMEOUT, *,
                 audit: AuditLog | None = None) -> None:
        super().__init__(member, {"member": member, "timeout": timeout})
        self.service = service
        self.audit = audit  # where an interrupted earlier nginx action would be recorded
        self.timeout = timeout
        self.member: NginxMember | None = service.config.members.get(member)
        self.reload_sent_at: float | None = None  # epoch seconds
        # Epoch seconds when we saw the previous generation of workers gone (None: not seen,
        # or the workers cannot be watched).
        self.reload_took_effect_at: float | None = None
        self.drained_at: float | None = None  # epoch seconds, when the drain completed
        self._original: bytes | None = None  # the file before a live change (for restore)
        # Worker pids before our reload; None when the master's workers cannot be listed.
        self._previous_generation: frozenset[int] | None = None
        self._deadline = time.monotonic() + timeout  # reset when execute() starts

    @property
    def control(self) -> NginxControl:
        return self.service.control

    def locks(self) -> list[LockKey]:
        """The upstream file, on nginx's host: every member action edits the same file."""
        config = self.service.config
        name = key_name("nginx", config.upstream_name, digest=str(config.upstream_file))
        executor = executor_config_of(self.service.executor)
        files = () if executor is None else (
            HostLockFile(executor, lock_file_beside(config.upstream_file, name),
                         label="nginx's host"),)
        return [LockKey(name, f"nginx upstream {config.upstream_name} ({config.upstream_file})",
                        files)]

    def _member(self) -> NginxMember:
        if self.member is None:
            raise NginxActionError(f"{self.target}: not a configured nginx member")
        return self.member

    def _step_note(self, step: float) -> str:
        return (f"each host step on {self.control.executor.host} ≤ {step:.0f} s: its "
                f"{COMMAND_TIMEOUT:g} s timeout, stopping it on the host if it overruns, a "
                f"read's retry within {FILE_READ_POLICY.deadline or 0:g} s")

    # ---------------------------------------------------------------- preflight

    async def _common_checks(self) -> tuple[list[CheckResult], bool | None]:
        """Checks every member action makes; returns them and the member's ``down`` flag
        (None when it could not be read)."""
        config = self.service.config
        checks: list[CheckResult] = []
        if self.member is None:
            known = ", ".join(config.members) or "none"
            checks.append(CheckResult.failed("member configured",
                                             f"{self.target} is not in [nginx.members] "
                                             f"(configured: {known})"))
            return checks, None
        checks.append(CheckResult.passed("member configured",
                                         f"{self.target} = {self.member.address}"))
        down: bool | None = None
        try:
            upstream = parse_upstream(decode(await self.control.read_upstream()),
                                      config.upstream_name)
            server = upstream.find(self.member.address)
        except Exception as exc:  # unreadable file, no such upstream/server line
            checks.append(CheckResult.failed("member in upstream", describe_error(exc)))
        else:
            down = server.down
            checks.append(CheckResult.passed(
                "member in upstream",
                f"{config.upstream_file}:{server.line}: server {server.address}"
                + (" (down)" if server.down else ""),
            ))
        try:
            await self.service.liveness()
        except NginxUnreachable as exc:
            checks.append(CheckResult.failed("nginx running", str(exc)))
        else:
            checks.append(CheckResult.passed("nginx running", "answers"))
        try:
            test = await self.control.test_config()
        except Exception as exc:
            checks.append(CheckResult.failed("nginx -t", describe_error(exc)))
        else:
            checks.append(CheckResult.passed("nginx -t", "configuration valid") if test.ok
                          else CheckResult.failed("nginx -t", _tail(test.stderr)))
        checks += await self._interrupted_checks()
        return checks, down

    async def _interrupted_checks(self) -> list[CheckResult]:
        """An earlier drain/undrain that stopped without an outcome, and an upstream file
        modified after nginx loaded it: an edit on disk that nginx does not run. Warnings:
        this action's reload would apply whatever the file holds."""
        checks: list[CheckResult] = []
        if self.audit is not None:
            from backends.intent import unfinished_of

            try:
                items = await asyncio.to_thread(unfinished_of, self.audit, "nginx")
            except OSError as exc:
                items = []
                checks.append(CheckResult.warned(
                    "earlier nginx actions finished",
                    f"cannot read the audit log {self.audit.path}: {exc.strerror or exc}"))
            for item in items:
                checks.append(CheckResult.warned(
                    "earlier nginx actions finished",
                    f"{item.describe()}: the upstream file may be edited but not applied"
                    if item.state != RUNNING else f"another one is in progress: "
                    f"{item.describe()}"))
            if not items and not checks:
                checks.append(CheckResult.passed("earlier nginx actions finished",
                                                 "none without an outcome in the audit log"))
        try:
            times = await self.control.upstream_vs_running()
        except Exception:
            times = None  # best effort: nginx -t and the file read above report real trouble
        if times is not None:
            mtime, loaded = times
            name = self.service.config.upstream_file
            if mtime > loaded + 1:  # whole seconds on both sides
                checks.append(CheckResult.warned(
                    "upstream file applied",
                    f"{name} was modified at {_clock(mtime)}, after nginx loaded its "
                    f"configuration at {_clock(loaded)}: an edit may be on disk but not "
                    "applied (an interrupted action?); this action's reload applies it too"))
            else:
                checks.append(CheckResult.passed("upstream file applied",
                                                 f"unchanged since nginx loaded it at "
                                                 f"{_clock(loaded)}"))
        return checks

    async def _probes(self) -> dict[str, ProbeResult | None]:
        members = list(self.service.config.members.values())

        async def probe(m: NginxMember) -> ProbeResult | None:
            return await self.service.probe(m.health_url) if m.health_url else None

        results = await asyncio.gather(*(probe(m) for m in members))
        return {m.name: r for m, r in zip(members, results, strict=True)}

    # ---------------------------------------------------------------- execute core

    async def _apply(self, original: bytes, edited: bytes) -> None:
        """Write, ``nginx -t``, reload; on any failure (or cancellation) restore."""
        reloaded = False
        try:
            await self.control.write_upstream(edited)
            test = await self.control.test_config()
            if not test.ok:
                raise NginxActionError(f"nginx -t failed: {_tail(test.stderr)}")
            self.reload_sent_at = time.time()
            reloaded = True  # from here on, assume the signal may have been delivered
            result = await self.control.reload()
            if not result.ok:
                raise NginxActionError(f"nginx -s reload failed: {_tail(result.stderr)}")
        except BaseException as exc:
            restore = asyncio.ensure_future(self._restore(original, reload=reloaded))
            # Shielded: a cancelled action must still put the file back.
            note = await asyncio.shield(restore)
            if isinstance(exc, Exception) and not isinstance(exc, NginxActionError):
                raise NginxActionError(f"{describe_error(exc)}; {note}") from exc
            if isinstance(exc, NginxActionError):
                raise NginxActionError(f"{exc}; {note}") from None
            raise

    async def _restore(self, original: bytes, *, reload: bool) -> str:
        """Put ``original`` back (and reload); returns a sentence for the error message."""
        try:
            await self.control.write_upstream(original)
            if await self.control.read_upstream() != original:
                return "RESTORE FAILED: upstream file differs from the original after writing"
            if reload:
                result = await self.control.reload()
                if not result.ok:
                    return f"original restored, but its reload failed: {_tail(result.stderr)}"
                return "original configuration restored and reloaded"
            return "original configuration restored (nginx was not reloaded)"
        except Exception as exc:
            return f"RESTORE FAILED: {describe_error(exc)}"

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def _workers_now(self) -> ReloadProgress:
        workers = await self.control.workers()
        return reload_progress(self._previous_generation or frozenset(), workers or [])

    async def _wait_new_workers(self) -> AsyncGenerator[Step, None]:
        """Until the master runs workers it started after our reload: it has parsed and
        accepted the new configuration. A master that rejects it keeps its old workers, so
        give up after RELOAD_TIMEOUT (or the action's own timeout, if sooner)."""
        if self._previous_generation is None:
            # No pid file or no workers to compare: nothing to watch; give it a moment.
            await asyncio.sleep(max(0.0, min(1.0, self._remaining())))
            return
        limit = max(0.0, min(RELOAD_TIMEOUT, self._remaining()))
        deadline = time.monotonic() + limit
        while True:
            progress = await self._workers_now()
            if progress.new_workers_up:
                return
            if time.monotonic() >= deadline:
                raise NginxActionError(
                    f"nginx did not start new workers within {limit:.3g} s of the reload "
                    f"(see its error log)")
            yield Step("waiting for nginx to start workers with the new configuration "
                       f"({len(progress.previous)} of the previous generation running)", 0.15)
            await asyncio.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    async def _edit(self, original: bytes) -> bytes:
        member = self._member()
        return set_down_bytes(original, self.service.config.upstream_name, member.address,
                              self.mark_down)

    async def would_change(self) -> list[str]:
        """The upstream file's unified diff, then what follows it."""
        original = await self.control.read_upstream()
        edited = await self._edit(original)
        if edited == original:
            return [f"nothing: {self.target} is already {'down' if self.mark_down else 'up'} "
                    "in the upstream"]
        name = str(self.service.config.upstream_file)
        diff = difflib.unified_diff(decode(original).splitlines(), decode(edited).splitlines(),
                                    f"{name} (now)", f"{name} (after)", lineterm="", n=1)
        return [*diff, "then: nginx -t, graceful reload (SIGHUP)"
                + (f", wait up to {self.timeout:g} s for in-flight requests"
                   if self.mark_down else "")]

    async def _change(self) -> AsyncGenerator[Step, None]:
        """Steps common to drain and undrain, up to a live new configuration. Run it under
        ``aclosing``: a stop at one of its steps must reach its restore at once."""
        member = self._member()
        self._deadline = time.monotonic() + self.timeout
        yield Step(f"reading {self.service.config.upstream_file}", 0.05)
        original = await self.control.read_upstream()
        edited = await self._edit(original)
        if edited == original:
            yield Step(f"{self.target} is already {'down' if self.mark_down else 'up'} in "
                       "the upstream: no change", 0.3)
            return
        before = await self.control.workers()
        self._previous_generation = frozenset(w.pid for w in before) if before else None
        verb = "marking" if self.mark_down else "unmarking"
        yield Step(f"{verb} {member.address} down; nginx -t; graceful reload", 0.1)
        # _apply restores by itself; from its return until new workers run, this does.
        await self._apply(original, edited)
        try:
            async for step in self._wait_new_workers():
                yield step  # a stop here (GeneratorExit) restores too
        except BaseException as exc:
            note = await asyncio.shield(self._restore(original, reload=True))
            if isinstance(exc, Exception):
                raise NginxActionError(f"{exc}; {note}") from None
            raise
        self._original = original
        yield Step("reloaded: new workers use the new configuration", 0.3)

    # ---------------------------------------------------------------- verify helpers

    async def _marked(self) -> CheckResult:
        member = self._member()
        want = "down" if self.mark_down else "up"
        try:
            upstream = parse_upstream(decode(await self.control.read_upstream()),
                                      self.service.config.upstream_name)
            down = upstream.find(member.address).down
        except Exception as exc:
            return CheckResult.failed(f"member marked {want}", describe_error(exc))
        if down == self.mark_down:
            return CheckResult.passed(f"member marked {want}", f"server {member.address}")
        return CheckResult.failed(f"member marked {want}",
                                  f"server {member.address} is {'down' if down else 'up'}")

    async def _serving(self) -> CheckResult:
        try:
            await self.service.liveness()
        except NginxUnreachable as exc:
            return CheckResult.failed("nginx serving", str(exc))
        return CheckResult.passed("nginx serving", "answers after the reload")


class DrainMember(_MemberAction):
    name = "nginx.drain"
    mutating = True
    destructive = True  # takes capacity away: confirm by typing the member's name
    mark_down = True

    def describe(self) -> str:
        address = self.member.address if self.member else "?"
        return (f"Drain {self.target} ({address}): mark it down in upstream "
                f"{self.service.config.upstream_name}, reload nginx gracefully and wait up "
                f"to {self.timeout:g} s for its in-flight requests to finish")

    async def preflight(self) -> list[CheckResult]:
        checks, down = await self._common_checks()
        if self.member is None:
            return checks
        if down:
            checks.append(CheckResult.warned("not already drained",
                                             f"{self.target} is already marked down"))
        elif down is not None:
            checks.append(CheckResult.passed("not already drained", "currently up"))
        remains = await self._another_remains(down)
        if remains is not None:
            checks.append(remains)
        # Blast radius: the pod and node behind the member, and what the other layers say
        # of the members that stay (the check above refuses the last one by its probes).
        checks += await cross_layer(self.layers, ("nginx", "kubernetes"),
                                    lambda topology: member_drain(topology, self.target))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """The re-check; the edit and reload; the wait, up to the drain timeout (counted from
        the edit: an upper bound); the polls in flight at the deadline; a restore or the
        verification. Each host step at its bound (:meth:`NginxControl.step_bound`)."""
        step = self.control.step_bound()
        return WorstCase((
            ("re-check", step + PROBE_BOUND),
            ("edit and reload", CHANGE_STEPS * step),
            ("drain timeout", self.timeout),
            ("polls at the deadline", (NEW_WORKERS_POLL_STEPS + DRAINED_POLL_STEPS) * step),
            ("restore or verify", RESTORE_STEPS * step + LIVENESS_BOUND),
        ), self._step_note(step))

    async def recheck(self) -> list[CheckResult]:
        """Right before the edit: another operator may have drained the others meanwhile."""
        remains = await self._another_remains(None)
        return [] if remains is None else [remains]

    async def _another_remains(self, down: bool | None) -> CheckResult | None:
        probes = await self._probes()
        try:
            upstream = parse_upstream(decode(await self.control.read_upstream()),
                                      self.service.config.upstream_name)
        except Exception:
            return None  # reported as "member in upstream"
        if down is None:
            with contextlib.suppress(UpstreamError):
                down = upstream.find(self._member().address).down
        healthy: list[str] = []
        for name, member in self.service.config.members.items():
            if name == self.target:
                continue
            try:
                server = upstream.find(member.address)
            except UpstreamError:
                continue
            probe = probes.get(name)
            if not server.down and (probe is None or probe.ok) and not server.backup:
                healthy.append(name)
        if healthy:
            return CheckResult.passed("another healthy member remains",
                                      ", ".join(healthy) + " up and answering")
        if down:
            return CheckResult.passed("another healthy member remains",
                                      "no change: the member is already down")
        return CheckResult.failed(
            "another healthy member remains",
            f"{self.target} is the last member that is up and answering its probe")

    async def execute(self) -> AsyncIterator[Step]:
        async with aclosing(self._change()) as change:
            async for step in change:
                yield step
        try:
            async with aclosing(self._wait_drained()) as wait:
                async for step in wait:
                    yield step
        except Exception as exc:
            if self._original is None:
                raise
            note = await asyncio.shield(self._restore(self._original, reload=True))
            raise NginxActionError(f"{describe_error(exc)}; {note}") from None

    async def _wait_drained(self) -> AsyncGenerator[Step, None]:
        """Until the reload took effect — the previous generation of workers has finished
        its in-flight requests and exited — and then until the member has been quiet for
        DRAIN_QUIET_SECONDS, as the status requires to call it drained.

        A request to the member that *started* after the reload took effect cannot have been
        routed by our configuration: fail (and restore) rather than call it drained."""
        address = self._member().address
        watching = self._previous_generation is not None
        started = time.monotonic()
        took_effect_at: float | None = None
        while True:
            now = time.monotonic()
            progress: ReloadProgress | None = None
            if watching and took_effect_at is None:
                progress = await self._workers_now()
                if progress.took_effect:
                    took_effect_at = self.reload_took_effect_at = time.time()
                    progress = None
            # Read after the ps: an exited worker wrote its last lines before it exited.
            last = await self._last_request(address)
            ago = f"{time.time() - last:.1f} s ago" if last is not None else "none seen"
            if progress is not None:
                if now >= self._deadline:
                    raise NginxActionError(
                        f"drain not finished after {self.timeout:g} s: "
                        f"{len(progress.previous)} worker(s) of the previous configuration "
                        f"still finishing requests (pids {_pids(progress.previous)})")
                detail = (f"{len(progress.previous)} worker(s) of the previous configuration "
                          "finishing requests" if progress.new_workers_up
                          else "no worker with the new configuration running")
                fraction = 0.3 + 0.6 * min(1.0, (now - started) / max(self.timeout, 0.001))
                yield Step(f"waiting: {detail}; last request to {self.target} {ago}", fraction)
                await asyncio.sleep(POLL_INTERVAL)
                continue
            if took_effect_at is not None:
                newest = self.service.window.last_request_started_at(address)
                if newest is not None and newest > took_effect_at:
                    raise NginxActionError(
                        f"{self.target} received a request {newest - took_effect_at:.2f} s "
                        "after the reload took effect (another upstream or nginx instance "
                        "uses it?)")
            quiet_for = None if last is None else time.time() - last
            watched_for = None if took_effect_at is None else time.time() - took_effect_at
            if ((quiet_for is None or quiet_for >= DRAIN_QUIET_SECONDS)
                    and (watched_for is None or watched_for >= QUIET_AFTER_RELOAD)):
                self.drained_at = time.time()
                yield Step(f"{self.target} drained: no request in flight", 0.95)
                return
            if now >= self._deadline:
                raise NginxActionError(
                    f"drain not finished after {self.timeout:g} s: last request to "
                    f"{self.target} finished {ago}")
            basis = ("previous workers exited" if took_effect_at is not None
                     else "workers cannot be watched (no pid file)")
            yield Step(f"waiting: {basis}; last request to {self.target} finished {ago}",
                       0.9)
            await asyncio.sleep(POLL_INTERVAL)

    async def _last_request(self, address: str) -> float | None:
        if self.service.config.access_log is None:
            return None
        try:
            await self.service.read_log()
        except Exception:
            return self.service.window.last_request_at(address)  # best effort
        return self.service.window.last_request_at(address)

    async def verify(self) -> list[CheckResult]:
        checks = [await self._serving(), await self._marked()]
        since, what = self.reload_took_effect_at, "the reload took effect"
        if since is None:
            since, what = self.drained_at, "the drain completed"
        if since is not None and self.member is not None:
            await self._last_request(self.member.address)  # reads the log's new lines
            newest = self.service.window.last_request_started_at(self.member.address)
            if newest is not None and newest > since:
                checks.append(CheckResult.failed("no new requests",
                                                 f"a request to {self.target} started after "
                                                 f"{what}"))
            else:
                checks.append(CheckResult.passed("no new requests", f"none since {what}"))
        return checks


class UndrainMember(_MemberAction):
    name = "nginx.undrain"
    mutating = True
    destructive = False
    mark_down = False

    def describe(self) -> str:
        address = self.member.address if self.member else "?"
        return (f"Undrain {self.target} ({address}): remove `down` from its server line in "
                f"upstream {self.service.config.upstream_name} and reload nginx gracefully")

    async def preflight(self) -> list[CheckResult]:
        checks, down = await self._common_checks()
        if self.member is None:
            return checks
        if down is False:
            checks.append(CheckResult.warned("currently drained", f"{self.target} is already up"))
        elif down:
            checks.append(CheckResult.passed("currently drained", "marked down"))
        if self.member.health_url:
            probe = await self.service.probe(self.member.health_url)
            if probe.ok:
                checks.append(CheckResult.passed(
                    "member healthy",
                    f"HTTP {probe.status_code} in {probe.latency_ms or 0:.0f} ms"))
            else:
                checks.append(CheckResult.warned(
                    "member healthy",
                    f"probe fails ({probe.error}): it will get traffic and fail it"))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """The edit and reload, the wait for new workers, the poll in flight at its
        deadline, a restore or the verification; each host step at its bound."""
        step = self.control.step_bound()
        return WorstCase((
            ("edit and reload", CHANGE_STEPS * step),
            ("reload wait", min(RELOAD_TIMEOUT, self.timeout)),
            ("poll at the deadline", NEW_WORKERS_POLL_STEPS * step),
            ("restore or verify", RESTORE_STEPS * step + LIVENESS_BOUND),
        ), self._step_note(step))

    async def execute(self) -> AsyncIterator[Step]:
        async with aclosing(self._change()) as change:
            async for step in change:
                yield step
        yield Step(f"{self.target} is back in rotation", 0.95)

    async def verify(self) -> list[CheckResult]:
        return [await self._serving(), await self._marked()]

