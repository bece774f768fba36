"""The PostgreSQL backend service: polls every member concurrently, summarises the cluster.

Each member is read on its own task with its own deadline and circuit breaker, so a hung
member (SIGSTOP, a dead host) shows as unreachable after its budget while the others are
reported on time. A poll never raises for a member failure: an unreachable member is a fact
the operator needs (the primary being down is *the* reason to open sfops).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from backends.config import SfopsConfig
from backends.postgres.config import PostgresConfig
from backends.postgres.connection import MemberConnection
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

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections.values()))


def breaker_states(service: PostgresService) -> dict[str, BreakerState]:
    return {name: breaker.state for name, breaker in service.breakers.items()}


def build_service(config: SfopsConfig) -> PostgresService | None:
    if config.postgres is None:
        return None
    return PostgresService(config.postgres, state=PgState(config.sfops.state_dir),
                           secrets=config.secrets())
