"""The nginx adapter: one poll reads the upstream file, probes every member directly, reads
``stub_status``, the worker processes and the new part of the access log — concurrently, each
bounded by a timeout and behind its own circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from backends.config import SfopsConfig, redact_text, redact_url
from backends.executors import Executor, executor_from_config
from backends.nginx.accesslog import LogTail, MemberTraffic, TrafficWindow, parse_line
from backends.nginx.config import NginxConfig
from backends.nginx.control import NginxControl
from backends.nginx.model import (
    TITLE,
    MemberStatus,
    NginxStatus,
    ProbeResult,
    StubStatus,
    derive_state,
    parse_stub_status,
    probe_reason,
    summarize_status,
)
from backends.nginx.upstream import ServerEntry, Upstream, UpstreamError, decode, parse_upstream
from backends.resilience import CircuitBreaker, RetryPolicy, call_read, describe_error
from backends.service import (
    CONTACT_TIMEOUT,
    BackendSummary,
    BackendUnreachable,
    summary_for_failure,
)
from backends.snapshot import Snapshot

T = TypeVar("T")

PROBE_TIMEOUT = 1.5
HTTP_TIMEOUT = 3.0
# One retry: a single dropped SYN should not flip a member to failing, but a dead member must
# show as failing within one refresh interval.
# The whole probe fits in the contact budget (CONTACT_TIMEOUT): a hung member reads as failing
# within the same liveness bound as a hung backend.
PROBE_POLICY = RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.3, deadline=2.0)
# A member's breaker lets a probe through on every refresh once open: a member that is back
# must read as up within the liveness bound, not after a long reset timeout. (It still spares
# the member the retry within one poll.)
PROBE_RESET = 1.0
HTTP_POLICY = RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.5, deadline=4.0)

def _why(exc: BaseException) -> str:
    """An HTTP error as text, redacted as it enters: httpx names the URL it failed on, with
    the password of a ``user:password@`` URL from the config."""
    return redact_text(describe_error(exc))


class NginxUnreachable(BackendUnreachable):
    """nginx itself does not answer (its status endpoint / health location)."""

class NginxService:
    """:class:`~backends.service.BackendService` for one nginx and its upstream."""

    name = "nginx"
    title = TITLE
    contact_timeout = CONTACT_TIMEOUT

    def __init__(self, config: NginxConfig, executor: Executor, *,
                 log_window: float = 30.0, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.executor = executor
        # The overview's breaker: nginx's own endpoint (stub_status or /nginx-health).
        self.breaker: CircuitBreaker | None = CircuitBreaker("nginx", failure_threshold=3,
                                                             reset_timeout=10.0)
        self.breakers: dict[str, CircuitBreaker] = {"nginx": self.breaker}
        self.control = NginxControl(config, executor, self._breaker(f"host:{executor.host}"))
        self.client = client or httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False)
        self.window = TrafficWindow(window=log_window)
        self.tail = LogTail()
        self._log_lock = asyncio.Lock()  # the tail's offset is shared state: one reader

    def _breaker(self, key: str, *, reset_timeout: float = 10.0) -> CircuitBreaker:
        if key not in self.breakers:
            self.breakers[key] = CircuitBreaker(key, failure_threshold=3,
                                                reset_timeout=reset_timeout)
        return self.breakers[key]

    # ------------------------------------------------------------------ reads

    @property
    def status_url(self) -> str | None:
        """nginx's own endpoint: ``stub_status`` when configured, else ``url``/nginx-health."""
        return self.config.stub_status_url or (
            f"{self.config.url.rstrip('/')}/nginx-health" if self.config.url else None)

    async def liveness(self) -> StubStatus | None:
        """stub_status when configured (parsed), else a GET of ``url``/nginx-health."""
        url = self.status_url
        if url is None:
            return None

        async def get() -> httpx.Response:
            response = await self.client.get(url, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            return response

        try:
            response = await call_read(get, HTTP_POLICY, what=f"GET {redact_url(url)}",
                                       timeout=HTTP_TIMEOUT + 0.5, breaker=self.breaker)
        except Exception as exc:
            raise NginxUnreachable(f"nginx at {redact_url(url)}: {_why(exc)}") from exc
        return parse_stub_status(response.text) if self.config.stub_status_url else None

    async def contact(self) -> None:
        """nginx answers its status endpoint now (one attempt, no breaker: this probe is how
        we learn it is back) and its master process is alive and not stopped."""
        url = self.status_url
        checks: list[Awaitable[str | None]] = [self._master_problem()]
        if url is not None:
            checks.append(self._answers(url))
        problems = [p for p in await asyncio.gather(*checks) if p is not None]
        if problems:
            raise BackendUnreachable("; ".join(problems))

    async def _master_problem(self) -> str | None:
        """Why the master process cannot serve (gone, or stopped), or None. Without a pid file
        configured there is nothing to check: the status endpoint alone decides."""
        if self.config.pid_file is None:
            return None
        try:
            data = await self.executor.read_file(self.config.pid_file)
        except Exception as exc:
            return (f"no nginx master: pid file {self.config.pid_file} unreadable "
                    f"({describe_error(exc)})")
        pid_text = data.decode("ascii", "replace").strip()
        if not pid_text.isdigit():
            return f"nginx pid file {self.config.pid_file}: no pid"
        try:
            result = await self.executor.run(["ps", "-o", "stat=", "-p", pid_text],
                                             timeout=self.contact_timeout)
        except Exception as exc:
            return f"nginx master process: {describe_error(exc)}"
        state = result.stdout.strip()
        if result.exit_status != 0 or not state or state.startswith("Z"):
            return f"nginx master process {pid_text} is not running"
        if state.startswith("T"):
            return f"nginx master process {pid_text} is stopped (state {state})"
        return None

    async def _answers(self, url: str) -> str | None:
        try:
            # A little under the contact budget, so the master's state (gone or stopped,
            # checked at the same time) is what the operator reads, not a bare timeout.
            response = await self.client.get(url, timeout=self.contact_timeout * 0.75)
        except Exception as exc:
            return f"nginx at {redact_url(url)}: {_why(exc)}"
        if response.status_code >= 500:
            return f"nginx at {redact_url(url)}: HTTP {response.status_code}"
        return None

    async def probe(self, url: str) -> ProbeResult:
        """A direct health probe of one member; failures are results, not exceptions."""
        started = time.monotonic()

        async def get() -> httpx.Response:
            return await self.client.get(url, timeout=PROBE_TIMEOUT)

        try:
            response = await call_read(get, PROBE_POLICY, what=f"GET {redact_url(url)}",
                                       timeout=PROBE_TIMEOUT,
                                       breaker=self._breaker(f"probe:{redact_url(url)}",
                                                             reset_timeout=PROBE_RESET))
        except Exception as exc:
            return ProbeResult(False, None, None, _why(exc))
        latency = (time.monotonic() - started) * 1000
        ok = 200 <= response.status_code < 300
        if ok:
            return ProbeResult(ok, response.status_code, latency)
        reason = probe_reason(response.content, response.headers.get("content-type"))
        return ProbeResult(ok, response.status_code, latency, f"HTTP {response.status_code}",
                           None if reason is None else redact_text(reason))

    async def upstream(self) -> Upstream:
        data = await self.control.read_upstream()
        return parse_upstream(decode(data), self.config.upstream_name)

    async def read_log(self) -> dict[str, MemberTraffic]:
        """Ingest the access log's new lines; per-address traffic over the window."""
        path = self.config.access_log
        if path is None:
            return {}
        async with self._log_lock:
            state = await self.control.stat(path)
            first = self.tail.inode is None
            offset, count, skip = self.tail.plan(state)
            data = await self.control.read_range(path, offset, count)
            lines = self.tail.feed(data, skip, advance=count)
            for line in lines:
                self.window.add(parse_line(line))
            if first:
                self.window.mark_observed()
            return self.window.stats()

    async def poll(self) -> NginxStatus:
        probes = {
            name: self.probe(member.health_url)
            for name, member in self.config.members.items() if member.health_url
        }
        live_task = _task(self.liveness())
        upstream_task = _task(self.upstream())
        workers_task = _task(self.control.workers())
        log_task = _task(self.read_log())
        probe_tasks = {name: _task(coro) for name, coro in probes.items()}
        try:
            await asyncio.wait([live_task, upstream_task, workers_task, log_task,
                                *probe_tasks.values()])
        except asyncio.CancelledError:
            for task in [live_task, upstream_task, workers_task, log_task,
                         *probe_tasks.values()]:
                task.cancel()
            raise
        stub = live_task.result()  # raises NginxUnreachable: the poll failed
        upstream = upstream_task.result()  # without the configuration we know nothing
        problems: list[str] = []
        old_workers = -1
        if (workers_error := workers_task.exception()) is None:
            workers = workers_task.result()
            old_workers = -1 if workers is None else sum(w.shutting_down for w in workers)
        else:
            problems.append(f"worker processes: {describe_error(workers_error)}")
        traffic: dict[str, MemberTraffic] = {}
        if (log_error := log_task.exception()) is None:
            traffic = log_task.result()
        else:
            problems.append(f"access log: {describe_error(log_error)}")
        now = time.time()
        members: list[MemberStatus] = []
        for name, member in self.config.members.items():
            server: ServerEntry | None
            try:
                server = upstream.find(member.address)
            except UpstreamError as exc:
                server = None
                if "several lines" in str(exc):
                    problems.append(str(exc))
            probe = probe_tasks[name].result() if name in probe_tasks else None
            member_traffic = traffic.get(member.address, MemberTraffic())
            state = derive_state(server, probe, member_traffic,
                                 old_workers=max(old_workers, 0), now=now)
            members.append(MemberStatus(name, member.address, state, server, probe,
                                        member_traffic))
        return NginxStatus(
            taken_at=now, upstream_name=upstream.name, members=tuple(members), stub=stub,
            old_workers=old_workers, log_window_s=self.window.window, problems=tuple(problems),
        )

    # ------------------------------------------------------------------ summary

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        status = snapshot.best
        if not isinstance(status, NginxStatus):
            return summary_for_failure(self.name, self.title, snapshot)
        return summarize_status(status, self.title)

    async def close(self) -> None:
        await self.client.aclose()
        await self.executor.close()

def _task(coro: Awaitable[T]) -> asyncio.Task[T]:
    async def wrap() -> T:
        return await coro

    return asyncio.ensure_future(wrap())

def build_service(config: SfopsConfig) -> NginxService | None:
    if config.nginx is None:
        return None
    executor = executor_from_config(config.executors[config.nginx.executor])
    return NginxService(config.nginx, executor)
