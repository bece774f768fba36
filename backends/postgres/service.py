"""The PostgreSQL backend service: polls every member concurrently, summarises the cluster.

Each member is read on its own task with its own deadline and circuit breaker, so a hung
member (SIGSTOP, a dead host) shows as unreachable after its budget while the others are
reported on time. A poll never raises for a member failure: an unreachable member is a fact
the operator needs (the primary being down is *the* reason to open sfops).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from backends.config import SfopsConfig
from backends.postgres.config import PostgresConfig
from backends.postgres.connection import MemberConnection, PgError
from backends.postgres.model import (
    NAME,
    TITLE,
    MemberStatus,
    PostgresStatus,
    build_cluster,
    summarize_status,
)
from backends.postgres.probe import read_member, unreachable
from backends.postgres.state import PgState
from backends.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    RetryPolicy,
    call_read,
    describe_error,
)
from backends.service import (
    CONTACT_TIMEOUT,
    BackendSummary,
    summary_for_failure,
)
from backends.snapshot import Snapshot

log = logging.getLogger(__name__)

# One attempt per poll: the poll loop itself is the retry, and a slow member must not make
# the whole cycle wait through a backoff.
POLL_POLICY = RetryPolicy(attempts=1, deadline=None)

# A member's watch (re)opens at most this often: a server that keeps closing idle sessions
# (idle_session_timeout, an administrator's pg_terminate_backend) gets no reconnect loop.
WATCH_REOPEN_S = 5.0
# After a watch could not be opened (max_connections reached, pg_hba refusing it), the
# polls go on without one for this long.
WATCH_RETRY_S = 30.0


class PostgresService:
    name = NAME
    title = TITLE

    def __init__(self, config: PostgresConfig, *, state: PgState | None = None,
                 secrets: Iterable[Any] = ()) -> None:
        self.config = config
        self.state = state
        self.connections = {
            name: MemberConnection(config, member, secrets=list(secrets))
            for name, member in config.members.items()
        }
        # A short reset: once open, every refresh still lets one read through, so a member
        # that is back reads as up within the liveness bound (two refreshes plus its probe).
        self.breakers = {
            name: CircuitBreaker(f"postgres:{name}", failure_threshold=3, reset_timeout=1.0)
            for name in config.members
        }
        # The overview shows one breaker; the per-member ones are in ``breakers``.
        self.breaker: CircuitBreaker | None = None
        # Set by whoever polls (the TUI wakes its poll job): called with a member's name as
        # soon as that member's server closes its watch connection (a killed server closes
        # its sockets at once), so the next poll need not wait for the refresh interval.
        # None (the CLI, actions): no watch is opened.
        self.on_lost: Callable[[str], None] | None = None
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._watched: dict[str, bool] = {}  # the watch's connection is open
        self._watch_opened: dict[str, float] = {}
        self._watch_failed: dict[str, float] = {}

    @property
    def contact_timeout(self) -> float:
        # Each member's probe may first have to connect (see MemberConnection.contact_budget).
        return self.config.connect_timeout + CONTACT_TIMEOUT + 1.0

    async def contact(self) -> None:
        """PostgreSQL is probed per member, inside :meth:`poll`: the first statement of every
        member's status read runs on a short budget (``MemberConnection.contact_budget``) and
        a member that does not answer is shown down; when none answered, :meth:`unreachable`
        says so and the refresh fails. A separate ``SELECT 1`` here would only queue behind
        the same connection lock."""

    def unreachable(self, status: PostgresStatus) -> str | None:
        """Why the cluster as a whole is unreachable (no member answered), or None."""
        if status.members and not any(m.reachable for m in status.members):
            return "no member answers: " + "; ".join(
                f"{m.name}: {m.error or 'no answer'}" for m in status.members)
        return None

    def connection(self, member: str) -> MemberConnection:
        return self.connections[member]

    async def read_member(self, name: str, *, use_breaker: bool = True) -> MemberStatus:
        conn = self.connections[name]
        breaker = self.breakers[name] if use_breaker else None
        try:
            return await call_read(lambda: read_member(conn), POLL_POLICY,
                                   what=f"{name} status", breaker=breaker)
        except CircuitOpen as exc:
            last = breaker.last_error if breaker else None
            return unreachable(conn, f"{last or 'failing'} (circuit open, retry in "
                                     f"{exc.retry_after:.0f} s)")
        except Exception as exc:
            return unreachable(conn, describe_error(exc) if not str(exc) else exc)

    async def read_members(self, *, use_breaker: bool = True) -> list[MemberStatus]:
        """Every member at once; the slowest member's deadline bounds the whole read."""
        return list(await asyncio.gather(
            *(self.read_member(name, use_breaker=use_breaker) for name in self.connections)))

    async def poll(self, *, use_breaker: bool = True) -> PostgresStatus:
        members = await self.read_members(use_breaker=use_breaker)
        self._update_watches(members)
        last_lsn = None
        fenced: dict[str, dict[str, Any]] = {}
        if self.state is not None:
            primaries = [m for m in members if m.is_primary]
            try:
                current = primaries[0].current_lsn if len(primaries) == 1 else None
                if current is not None:
                    primary = primaries[0]
                    streaming = [m.name for m in members if m.is_standby and m.streaming]
                    last_lsn = await asyncio.to_thread(
                        self.state.record_primary_lsn, primary.name, current,
                        primary.timeline, streaming, primary.system_identifier)
                else:
                    last_lsn = await asyncio.to_thread(self.state.last_primary_lsn)
                fenced = await asyncio.to_thread(self.state.fenced)
            except OSError as exc:  # a full disk must not blank the status
                log.warning("postgres state %s: %s", self.state.path, exc)
        return build_cluster(members, fenced=fenced, last_primary_lsn=last_lsn)

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        status: PostgresStatus | None = snapshot.best
        if status is None:
            return summary_for_failure(self.name, self.title, snapshot)
        return summarize_status(status, self.title)

    # -- watches --------------------------------------------------------------------------
    def watching(self, member: str) -> bool:
        """Whether ``member``'s watch connection is open now."""
        return self._watched.get(member, False)

    def _update_watches(self, members: list[MemberStatus]) -> None:
        """After a poll: a watch on every member it reached (opened only here, so a member
        that is down is never hammered: it is tried again by the poll, behind its breaker),
        none on a member it did not reach (the poll's own connection is dropped then, and
        the watch's must not outlive it, e.g. through a shutdown)."""
        now = time.monotonic()
        for status in members:
            name = status.name
            task = self._watches.get(name)
            running = task is not None and not task.done()
            if not status.reachable:
                if running:
                    assert task is not None
                    task.cancel()
                continue
            if running or self.on_lost is None:
                continue
            if now - self._watch_opened.get(name, -WATCH_REOPEN_S) < WATCH_REOPEN_S:
                continue
            if now - self._watch_failed.get(name, -WATCH_RETRY_S) < WATCH_RETRY_S:
                continue
            self._watch_opened[name] = now
            self._watches[name] = asyncio.create_task(self._watch(name),
                                                      name=f"postgres watch {name}")

    async def _watch(self, name: str) -> None:
        def opened() -> None:
            self._watched[name] = True

        try:
            why = await self.connections[name].watch(opened)
        except PgError as exc:
            self._watch_failed[name] = time.monotonic()
            log.debug("postgres %s: no watch: %s", name, exc)
            return
        finally:
            self._watched[name] = False
        log.debug("postgres %s: watch connection lost: %s", name, why)
        callback = self.on_lost
        if callback is not None:
            try:
                callback(name)
            except Exception:
                log.exception("postgres %s: on_lost callback failed", name)

    async def _stop_watches(self) -> None:
        tasks = [task for task in self._watches.values() if not task.done()]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            # Each ends at once (the connection is idle: nothing to cancel on the server).
            await asyncio.wait(tasks, timeout=2.0)

    async def close(self) -> None:
        await self._stop_watches()
        await asyncio.gather(*(c.close() for c in self.connections.values()))


def breaker_states(service: PostgresService) -> dict[str, BreakerState]:
    return {name: breaker.state for name, breaker in service.breakers.items()}


def build_service(config: SfopsConfig) -> PostgresService | None:
    if config.postgres is None:
        return None
    return PostgresService(config.postgres, state=PgState(config.sfops.state_dir),
                           secrets=config.secrets())
