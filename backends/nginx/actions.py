"""drain / undrain one upstream member: mark it ``down`` in the upstream file, test, reload
gracefully and (drain) wait until no request is in flight to it.

Guarantees: the upstream file changes by exactly one token; between writing it and a finished
reload there is no safe point (no progress step), so an interruption never leaves a written but
unapplied file; any failure puts the original bytes back and — if a reload had been sent —
reloads again, leaving nginx serving the previous configuration. Writes are never retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import ClassVar

from backends.actions import Action, CheckResult, Step
from backends.config import NginxMember
from backends.nginx.control import NginxControl, WorkerProcess
from backends.nginx.model import DRAIN_QUIET_SECONDS, ProbeResult
from backends.nginx.service import NginxService, NginxUnreachable
from backends.nginx.upstream import UpstreamError, decode, parse_upstream, set_down_bytes
from backends.resilience import describe_error

DEFAULT_DRAIN_TIMEOUT = 60.0
RELOAD_TIMEOUT = 10.0  # for the master to start workers with the new configuration
POLL_INTERVAL = 0.25
QUIET_AFTER_WORKERS = 1.0  # a last look at the access log this long after old workers exit


class NginxActionError(Exception):
    pass


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:]) or "(no output)"


class _MemberAction(Action):
    """Shared preflight and the write → test → reload → restore-on-failure core."""

    mark_down: ClassVar[bool]

    def __init__(self, service: NginxService, member: str,
                 timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        super().__init__(member, {"member": member, "timeout": timeout})
        self.service = service
        self.timeout = timeout
        self.member: NginxMember | None = service.config.members.get(member)
        self.reload_sent_at: float | None = None  # epoch seconds
        self.drained_at: float | None = None  # epoch seconds, when the drain completed
        self._original: bytes | None = None  # the file before a live change (for restore)

    @property
    def control(self) -> NginxControl:
        return self.service.control

    def _member(self) -> NginxMember:
        if self.member is None:
            raise NginxActionError(f"{self.target}: not a configured nginx member")
        return self.member

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
        return checks, down

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

    async def _wait_reload(self, before: list[WorkerProcess] | None) -> None:
        """Until the master runs workers started after our reload (the new configuration
        is live). A master that rejects the new configuration keeps its old workers."""
        if before is None:
            await asyncio.sleep(1.0)  # no pid file: nothing to watch; give it a moment
            return
        old_pids = {w.pid for w in before}
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            workers = await self.control.workers() or []
            if any(w.pid not in old_pids and not w.shutting_down for w in workers):
                return
            await asyncio.sleep(POLL_INTERVAL)
        raise NginxActionError(
            f"nginx did not start new workers within {RELOAD_TIMEOUT:g} s of the reload "
            f"(see its error log)"
        )

    async def _edit(self, original: bytes) -> bytes:
        member = self._member()
        return set_down_bytes(original, self.service.config.upstream_name, member.address,
                              self.mark_down)

    async def _change(self) -> AsyncIterator[Step]:
        """Steps common to drain and undrain, up to a live new configuration."""
        member = self._member()
        yield Step(f"reading {self.service.config.upstream_file}", 0.05)
        original = await self.control.read_upstream()
        edited = await self._edit(original)
        if edited == original:
            yield Step(f"{self.target} is already {'down' if self.mark_down else 'up'} in "
                       "the upstream: no change", 0.3)
            return
        before = await self.control.workers()
        verb = "marking" if self.mark_down else "unmarking"
        yield Step(f"{verb} {member.address} down; nginx -t; graceful reload", 0.1)
        # No yield from here until the reload is live: not a safe point.
        await self._apply(original, edited)
        try:
            await self._wait_reload(before)
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
        probes = await self._probes()
        try:
            upstream = parse_upstream(decode(await self.control.read_upstream()),
                                      self.service.config.upstream_name)
        except Exception:
            return checks  # already reported as "member in upstream"
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
            checks.append(CheckResult.passed("another healthy member remains",
                                             ", ".join(healthy) + " up and answering"))
        elif down:
            checks.append(CheckResult.passed("another healthy member remains",
                                             "no change: the member is already down"))
        else:
            checks.append(CheckResult.failed(
                "another healthy member remains",
                f"{self.target} is the last member that is up and answering its probe"))
        return checks

    async def execute(self) -> AsyncIterator[Step]:
        async for step in self._change():
            yield step
        try:
            async for step in self._wait_drained():
                yield step
        except Exception as exc:
            if self._original is None:
                raise
            note = await asyncio.shield(self._restore(self._original, reload=True))
            raise NginxActionError(f"{describe_error(exc)}; {note}") from None

    async def _wait_drained(self) -> AsyncIterator[Step]:
        """Until no old worker is shutting down and the access log shows no request to the
        member since they exited (requests are logged when they finish)."""
        address = self._member().address
        started = time.monotonic()
        deadline = started + self.timeout
        workers_gone_at: float | None = None
        while True:
            now = time.monotonic()
            workers = await self.control.workers()
            old = -1 if workers is None else sum(w.shutting_down for w in workers)
            last = await self._last_request(address)
            if old <= 0:
                if workers_gone_at is None:
                    workers_gone_at = time.time()
                elif time.time() - workers_gone_at >= QUIET_AFTER_WORKERS:
                    # A request that *started* after the old workers were gone was routed by
                    # the new configuration; one that merely finished late was in flight.
                    newest = self.service.window.last_request_started_at(address)
                    if newest is not None and newest > workers_gone_at:
                        raise NginxActionError(
                            f"{self.target} still receives requests after the reload "
                            "(another upstream or nginx instance uses it?)")
                    # Finish when the status would call the member drained too (its last
                    # request has been quiet for as long as derive_state requires).
                    quiet_for = None if last is None else time.time() - last
                    if quiet_for is not None and quiet_for < DRAIN_QUIET_SECONDS:
                        yield Step(f"waiting: last request to {self.target} finished "
                                   f"{quiet_for:.1f} s ago", 0.9)
                        await asyncio.sleep(min(POLL_INTERVAL, DRAIN_QUIET_SECONDS - quiet_for))
                        continue
                    self.drained_at = time.time()
                    yield Step(f"{self.target} drained: no request in flight", 0.95)
                    return
            if now >= deadline:
                raise NginxActionError(
                    f"drain not finished after {self.timeout:g} s: {old} old worker(s) still "
                    f"finishing requests")
            ago = f"{time.time() - last:.1f} s ago" if last is not None else "none seen"
            fraction = 0.3 + 0.6 * min(1.0, (now - started) / max(self.timeout, 0.001))
            detail = (f"{old} old worker(s) finishing requests" if old > 0
                      else "old workers exited, watching the access log")
            yield Step(f"waiting: {detail}; last request to {self.target} {ago}", fraction)
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
        drained_at = self.drained_at
        if drained_at is not None and self.member is not None:
            await self._last_request(self.member.address)  # reads the log's new lines
            newest = self.service.window.last_request_started_at(self.member.address)
            if newest is not None and newest > drained_at:
                checks.append(CheckResult.failed("no new requests",
                                                 f"a request to {self.target} started after "
                                                 "the drain completed"))
            else:
                checks.append(CheckResult.passed("no new requests",
                                                 "none since the drain completed"))
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
        return checks

    async def execute(self) -> AsyncIterator[Step]:
        async for step in self._change():
            yield step
        yield Step(f"{self.target} is back in rotation", 0.95)

    async def verify(self) -> list[CheckResult]:
        return [await self._serving(), await self._marked()]

