"""PostgreSQL access for the API service: a bounded pool that follows failovers by itself.

- libpq multi-host conninfo with ``target_session_attrs=read-write``: a new connection goes to
  whichever member is the primary now, so after a failover the pool finds the new primary
  without a restart. Connections to the old primary break; the pool's ``check`` (run on every
  getconn) discards them, and a connection whose query failed with an OperationalError is left
  in a broken state that the pool discards on return. A connection that turns out to be on a
  read-only server (e.g. an old primary restarted as a standby) is closed so it is never reused.
- every call goes through a circuit breaker, so a dead database costs callers a fast 503
  instead of a pool timeout each;
- idempotent reads are retried with exponential backoff (tenacity); writes never are, since a
  failed INSERT may have committed;
- readiness has its own connection outside the pool (:class:`ReservedConnection`), so busy
  request traffic never makes a healthy worker look unready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from deploy.api.breaker import CircuitBreaker
from deploy.api.settings import Settings

log = logging.getLogger("sfapi.db")
T = TypeVar("T")

# Failures that say "the database is not there / not usable", as opposed to a bad request.
# They count against the breaker and make reads retry.
DOWNSTREAM_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # includes PoolTimeout and PoolClosed
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.AdminShutdown,
    TimeoutError,
)


class DatabaseUnavailable(RuntimeError):
    """The database could not serve the call. The message names the underlying error (host,
    user, server text): for the server log only, never for a client."""


@dataclass(frozen=True)
class EventRow:
    id: int
    payload: Any
    served_by: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payload": self.payload,
            "served_by": self.served_by,
            "created_at": self.created_at.isoformat(),
        }


def _connection_kwargs(settings: Settings, purpose: str = "") -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,  # every call is one statement; no idle-in-transaction
        "application_name": f"streamforge-api/{settings.worker_name}{purpose}"[:63],
    }
    if settings.database_password is not None:
        # Passed as a separate keyword, never spliced into a string we log.
        kwargs["password"] = settings.database_password
    return kwargs


def make_pool(settings: Settings) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        settings.database_url,
        kwargs=_connection_kwargs(settings),
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        open=False,
        check=AsyncConnectionPool.check_connection,
        max_lifetime=settings.pool_max_lifetime,
        max_idle=120.0,
        timeout=settings.db_timeout,
        # Short, so a pool that gave up during an outage restarts its backoff from 1 s on
        # the next request instead of sleeping tens of seconds after the database is back.
        reconnect_timeout=settings.pool_reconnect_timeout,
        name=f"sfapi-{settings.worker_name}",
    )


def reserved_connector(settings: Settings) -> Callable[[], Awaitable[Any]]:
    """How the readiness connection is made: same target and password as the pool."""
    kwargs = _connection_kwargs(settings, "/ready")

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(settings.database_url, **kwargs)

    return connect


class ReservedConnection:
    """One connection kept outside the pool, for readiness only.

    Readiness used to borrow from the request pool: a handful of slow requests per worker
    held every pooled connection, the ping timed out, and every replica turned unready at
    once although the database was fine. This connection answers "is a read-write primary
    reachable" whatever the request traffic does.

    Checks are serialised (one query on one connection at a time). A reused connection that
    fails, or that finds its server in recovery (an old primary restarted as a standby), is
    replaced by a fresh one within the same check, so a failover costs no false "unready";
    libpq's ``target_session_attrs=read-write`` then finds the new primary. Any failure or
    cancellation discards the connection: it may be mid-query.
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def in_recovery(self) -> bool:
        """``pg_is_in_recovery()`` of the server the reserved connection reaches."""
        async with self._lock:
            reused = self._usable()
            try:
                recovering = await self._query()
                if not (recovering and reused):
                    return recovering
            except psycopg.OperationalError:
                if not reused:
                    await self._discard()
                    raise
            except BaseException:
                await self._discard()
                raise
            await self._discard()  # stale: try once on a fresh connection
            try:
                return await self._query()
            except BaseException:
                await self._discard()
                raise

    def _usable(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not getattr(conn, "broken", False)

    async def _query(self) -> bool:
        if not self._usable():
            self._conn = None
            self._conn = await self._connect()
        cur = await self._conn.execute("SELECT 1, pg_is_in_recovery()")
        row = await cur.fetchone()
        if row is None:
            raise psycopg.OperationalError("readiness query returned no row")
        return bool(row[1])

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # already broken: nothing left to release
                log.debug("closing the readiness connection: %s", exc)

    async def close(self) -> None:
        async with self._lock:
            await self._discard()


class Database:
    def __init__(
        self,
        pool: Any,
        breaker: CircuitBreaker,
        *,
        reserved: ReservedConnection,
        timeout: float = 3.0,
    ) -> None:
        self.pool = pool
        self.breaker = breaker
        self.reserved = reserved
        self.timeout = timeout
        self.last_error: str | None = None

    async def open(self) -> None:
        # Do not wait: the process must start (live, not ready) while the database is down.
        await self.pool.open(wait=False)

    async def close(self, wait_seconds: float = 5.0) -> None:
        await self.reserved.close()
        await self.pool.close(timeout=wait_seconds)

    @asynccontextmanager
    async def _guarded(self, call_seconds: float) -> AsyncIterator[None]:
        """A database call under the breaker and a deadline. Raises DatabaseUnavailable.

        Outcomes: an outage (connection, pool or statement timeout, read-only server) is a
        failure; an answer from the server, even an error such as a constraint violation, is a
        success; a refused value (``DataError``: input jsonb cannot store), a cancellation or
        any other exception says nothing about the database and only frees a half-open probe.
        """
        self.breaker.allow()  # CircuitOpenError propagates: callers map it to 503
        try:
            async with asyncio.timeout(call_seconds):
                yield
        except DOWNSTREAM_ERRORS as exc:
            self.breaker.record_failure()
            self.last_error = f"{type(exc).__name__}: {exc}".strip()[:300]
            raise DatabaseUnavailable(self.last_error) from exc
        except psycopg.DataError:
            self.breaker.release()
            raise
        except psycopg.Error:
            self.breaker.record_success()  # the database answered: it is up
            raise
        except BaseException:  # CancelledError included
            self.breaker.release()
            raise
        else:
            self.breaker.record_success()

    @asynccontextmanager
    async def _connection(
        self, getconn_seconds: float | None = None, *, call_seconds: float | None = None
    ) -> AsyncIterator[Any]:
        """A pooled connection, guarded by the breaker. Raises DatabaseUnavailable.

        ``getconn_seconds`` bounds waiting for a connection, ``call_seconds`` the whole call; both
        count as a downstream failure (the timeout sits inside the breaker's accounting).
        """
        getconn_seconds = self.timeout if getconn_seconds is None else getconn_seconds
        call_seconds = self.timeout * 2 if call_seconds is None else call_seconds
        async with (
            self._guarded(call_seconds),
            self.pool.connection(timeout=getconn_seconds) as conn,
        ):
            try:
                yield conn
            except psycopg.errors.ReadOnlySqlTransaction:
                await conn.close()  # on a standby: never hand this connection out again
                raise

    async def ping(self, within_seconds: float) -> None:
        """Ready means: the reserved (not pooled) connection reaches a read-write primary and
        it answers SELECT 1 in time."""
        async with self._guarded(within_seconds):
            if await self.reserved.in_recovery():
                raise psycopg.errors.ReadOnlySqlTransaction("connected server is in recovery")

    async def insert_event(self, payload: Any, served_by: str) -> EventRow:
        # Not retried: after a lost connection we cannot know whether the INSERT committed.
        async with self._connection() as conn:
            cur = await conn.execute(
                "INSERT INTO events (payload, served_by) VALUES (%s, %s) "
                "RETURNING id, payload, served_by, created_at",
                (Jsonb(payload), served_by),
            )
            row = await cur.fetchone()
        assert row is not None
        return EventRow(*row)

    async def get_event(self, event_id: int) -> EventRow | None:
        async def read() -> EventRow | None:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "SELECT id, payload, served_by, created_at FROM events WHERE id = %s",
                    (event_id,),
                )
                row = await cur.fetchone()
            return EventRow(*row) if row else None

        return await self._retrying_read(read)

    async def list_events(self, after_id: int, limit: int) -> list[EventRow]:
        async def read() -> list[EventRow]:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "SELECT id, payload, served_by, created_at FROM events "
                    "WHERE id > %s ORDER BY id LIMIT %s",
                    (after_id, limit),
                )
                rows = await cur.fetchall()
            return [EventRow(*row) for row in rows]

        return await self._retrying_read(read)

    async def upsert_canary(self, key: str, token: str, served_by: str,
                            ttl_seconds: float) -> datetime:
        """The write-path canary's row (``written_at``, the database's clock). An upsert: the
        same key written twice is one row (sfops may send its canary again after a failure:
        the write is idempotent by its key). Rows older than ``ttl_seconds`` — this key's
        excepted, the statement upserts it — are deleted by the same statement, so the
        table never grows past what one TTL of canaries writes. Not retried here: the
        caller decides."""
        async with self._connection() as conn:
            cur = await conn.execute(
                "WITH expired AS (DELETE FROM canary WHERE key <> %s AND written_at < "
                "now() - make_interval(secs => %s)) "
                "INSERT INTO canary (key, token, served_by, written_at) "
                "VALUES (%s, %s, %s, now()) ON CONFLICT (key) DO UPDATE SET "
                "token = EXCLUDED.token, served_by = EXCLUDED.served_by, written_at = now(), "
                "consumed_at = NULL, consumed_by = NULL RETURNING written_at",
                (key, ttl_seconds, key, token, served_by),
            )
            row = await cur.fetchone()
        assert row is not None
        written_at: datetime = row[0]
        return written_at

    async def get_canary(self, key: str) -> dict[str, Any] | None:
        """The canary's row and, once a consumer received it, the milliseconds from its
        commit to the consumer (both the database's clock). An idempotent read: retried."""
        async def read() -> dict[str, Any] | None:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "SELECT token, served_by, written_at, consumed_at, consumed_by, "
                    "extract(epoch FROM consumed_at - written_at) * 1000 "
                    "FROM canary WHERE key = %s",
                    (key,),
                )
                row = await cur.fetchone()
            if row is None:
                return None
            token, served_by, written_at, consumed_at, consumed_by, consumer_ms = row
            return {
                "key": key, "token": token, "served_by": served_by,
                "written_at": written_at.isoformat(),
                "consumed_at": consumed_at.isoformat() if consumed_at else None,
                "consumed_by": consumed_by,
                "consumer_ms": None if consumer_ms is None else round(float(consumer_ms), 1),
            }

        return await self._retrying_read(read)

    async def sleep(self, seconds: float) -> None:
        async with self._connection(call_seconds=seconds + self.timeout * 2) as conn:
            await conn.execute("SELECT pg_sleep(%s)", (seconds,))

    async def _retrying_read(self, read: Callable[[], Awaitable[T]]) -> T:
        # Only DatabaseUnavailable is retried; an open breaker (CircuitOpenError) is not,
        # since retrying it would just spin until the reset timeout.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            stop=stop_after_attempt(3),
            wait=wait_exponential_jitter(multiplier=0.1, max=1.0, jitter=0.1),
            reraise=True,
        ):
            with attempt:
                return await read()
        raise AssertionError("unreachable")  # pragma: no cover

    def snapshot(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        try:
            raw = self.pool.get_stats()
            stats = {
                k: raw.get(k, 0)
                for k in (
                    "pool_min",
                    "pool_max",
                    "pool_size",
                    "pool_available",
                    "requests_waiting",
                    "connections_lost",
                    "requests_errors",
                )
            }
        except Exception:  # a fake pool in tests, or a closed pool
            stats = {}
        # last_error stays out: it carries hosts, users and server text (logged instead).
        return {"pool": stats, "breaker": self.breaker.snapshot()}
