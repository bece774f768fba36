"""One psycopg connection per member, every call bounded on the client side.

``statement_timeout`` bounds a query the server is working on; it cannot bound a server that
does not answer at all (a SIGSTOPped postmaster, a dead host behind a live TCP stack). So every
call also runs under a client-side deadline. Cancelling psycopg mid-query makes it try to
cancel on the server and wait for that (up to ~10 s against a hung server), so on expiry we
first close the socket — the connection is dropped and rebuilt by the next call — and only
then cancel the task: the deadline holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from backends.config import Secret, redact_text
from backends.postgres.config import PgIdentity, PostgresConfig, PostgresMember
from backends.resilience import BackendTimeout

# As backends.service.CONTACT_TIMEOUT (not imported: connection.py sits below the service
# contract and must not depend on it).
CONTACT_TIMEOUT = 2.0

T = TypeVar("T")
Row = dict[str, Any]

APPLICATION_NAME = "sfops"  # polls (pg_stat_activity tells them from the actions)
OPERATOR_APPLICATION_NAME = "sfops-operator"  # actions
WATCH_APPLICATION_NAME = "sfops-watch"  # a poll's idle watch on a member (MemberConnection.watch)


class PgError(Exception):
    """A member could not be reached or a statement failed; the message is redacted."""

    def __init__(self, member: str, message: str) -> None:
        self.member = member
        super().__init__(f"{member}: {message}")


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    # libpq repeats itself per host attempt; keep it to one readable line.
    return " ".join(text.split()) or type(exc).__name__


def tls_hint(text: str, member: PostgresMember) -> str:
    """What to change in the configuration for a libpq TLS failure (its messages name a
    file or a host, never the key): "" when ``text`` is not one."""
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        return (f"the server's certificate does not chain to the CA in "
                f"{member.config_key('sslrootcert')} ({member.sslrootcert or 'not set'}): "
                "a wrong CA, or a server certificate from another CA")
    if "does not match host name" in lowered:
        return (f"{member.config_key('sslmode')} = {member.sslmode or 'verify-full'} checks "
                f"the host name: [postgres.members.{member.name}] host ({member.host}) is "
                "not a name or address in the server's certificate")
    if "root certificate file" in lowered:
        return f"check {member.config_key('sslrootcert')}"
    if "private key file" in lowered or "could not load private key" in lowered:
        return (f"check {member.config_key('sslkey')} (0600, owned by the user running "
                "sfops) and [postgres] sslpassword")
    if "certificate file" in lowered:
        return f"check {member.config_key('sslcert')}"
    if "server does not support ssl" in lowered:
        return f"the server runs without TLS; {member.config_key('sslmode')} requires it"
    if "no encryption" in lowered and "pg_hba.conf" in lowered:
        return (f"the server accepts TLS connections only (hostssl); "
                f"{member.config_key('sslmode')} = {member.sslmode} does not use TLS")
    return ""


_servicefile: str | None = None


def _use_servicefile(path: object) -> None:
    """libpq reads the service file from ``PGSERVICEFILE`` only (no conninfo keyword): set it
    for this process when ``[postgres] servicefile`` is given."""
    global _servicefile
    if path is not None and _servicefile != str(path):
        _servicefile = os.environ["PGSERVICEFILE"] = str(path)


class MemberConnection:
    """A lazily opened, reused autocommit connection to one member.

    By default the poll's: as ``[postgres]``'s read-only identity, in a session whose
    transactions are read-only (``default_transaction_read_only=on`` from the first
    statement, sent by libpq at connect): a poll cannot write even through a superuser role.
    Actions pass ``identity=config.operator_identity, read_only=False``."""

    def __init__(
        self,
        config: PostgresConfig,
        member: PostgresMember,
        *,
        secrets: Sequence[Secret | str] = (),
        identity: PgIdentity | None = None,
        read_only: bool = True,
    ) -> None:
        self.config = config
        self.member = member
        self.name = member.name
        self.identity = identity if identity is not None else config.readonly_identity
        self.read_only = read_only
        self._secrets: list[Secret | str] = list(secrets)
        for password in (config.password, self.identity.password):
            if password is not None:
                self._secrets.append(password)
        self._conn: psycopg.AsyncConnection[Row] | None = None
        self._lock = asyncio.Lock()

    @property
    def deadline(self) -> float:
        """Client-side budget for one call: connecting plus one statement, plus slack."""
        return self.config.connect_timeout + self.config.statement_timeout + 1.0

    @property
    def contact_budget(self) -> float:
        """The budget of a status read's first statement, which is this member's reachability
        probe: short, so a hung member reads as unreachable within the liveness bound, plus
        ``connect_timeout`` when the connection has to be (re)built first."""
        connected = self._conn is not None and not self._conn.closed
        return CONTACT_TIMEOUT + (0.0 if connected else self.config.connect_timeout)

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _kwargs(self) -> dict[str, Any]:
        options = f"-c statement_timeout={int(self.config.statement_timeout * 1000)}"
        if self.read_only:
            options += " -c default_transaction_read_only=on"
        kwargs: dict[str, Any] = {
            "host": self.member.host,
            "port": self.member.port,
            "dbname": self.config.dbname,
            "user": self.identity.user,
            "connect_timeout": max(1, math.ceil(self.config.connect_timeout)),
            "application_name": APPLICATION_NAME if self.read_only
            else OPERATOR_APPLICATION_NAME,
            "options": options,
            "autocommit": True,
            "row_factory": dict_row,
        }
        if self.identity.password is not None:
            kwargs["password"] = self.identity.password.reveal()
        member = self.member
        for key, value in (("sslmode", member.sslmode), ("sslrootcert", member.sslrootcert),
                           ("sslcert", member.sslcert), ("sslkey", member.sslkey),
                           ("service", member.service), ("passfile", self.config.passfile)):
            if value is not None:
                kwargs[key] = str(value)
        if self.config.sslpassword is not None and member.sslkey is not None:
            kwargs["sslpassword"] = self.config.sslpassword.reveal()
        _use_servicefile(self.config.servicefile)
        return kwargs

    def _failure(self, what: str, exc: BaseException) -> PgError:
        """A redacted error; a TLS failure also names the configuration key to change."""
        text = _error_text(exc)
        hint = tls_hint(text, self.member)
        return PgError(self.name, self.redact(f"{what}: {text}" + (f" — {hint}" if hint else "")))

    async def _connection(self) -> psycopg.AsyncConnection[Row]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = await psycopg.AsyncConnection.connect(**self._kwargs())
        return self._conn

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()  # closes the socket now; no server round trip

    async def _bounded(self, fn: Callable[[], Awaitable[T]], what: str,
                       seconds: float | None,
                       abandon: Callable[[], None] | None = None) -> T:
        budget = seconds if seconds is not None else self.deadline
        abandon = abandon or self._abandon
        task = asyncio.ensure_future(fn())
        try:
            done, _ = await asyncio.wait({task}, timeout=budget)
        except asyncio.CancelledError:
            abandon()
            task.cancel()
            raise
        if task in done:
            return task.result()
        abandon()
        task.cancel()
        _, pending = await asyncio.wait({task}, timeout=0.5)
        if pending:
            task.cancel()  # psycopg was waiting on its own server-side cancel: stop that too
            await asyncio.wait({task}, timeout=0.5)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: never "exception was never retrieved"
        raise BackendTimeout(f"{self.name}: {what}", budget)

    async def fetch(self, sql: str, params: Sequence[Any] | None = None, *, what: str,
                    timeout: float | None = None,  # noqa: ASYNC109
                    statement_timeout: float | None = None) -> list[Row]:
        """Run one statement and return its rows; raises :class:`PgError` (redacted).
        ``statement_timeout`` raises the server-side limit for this statement only (a
        CHECKPOINT or a waiting pg_promote may rightly take longer than a status read)."""

        async def run() -> list[Row]:
            conn = await self._connection()
            async with conn.cursor() as cursor:
                if statement_timeout is not None:
                    await cursor.execute(b"SELECT set_config('statement_timeout', %s, false)",
                                         (f"{int(statement_timeout * 1000)}",))
                try:
                    await cursor.execute(sql.encode(), params)  # type: ignore[arg-type]
                    rows = [] if cursor.description is None else await cursor.fetchall()
                finally:
                    if statement_timeout is not None and not conn.closed:
                        await cursor.execute(b"RESET statement_timeout")
                return rows

        if timeout is None and statement_timeout is not None:
            timeout = self.config.connect_timeout + statement_timeout + 2.0
        async with self._lock:
            try:
                return await self._bounded(run, what, timeout)
            except BackendTimeout as exc:
                raise PgError(self.name, f"{what}: no answer within {exc.seconds:g} s") from None
            except psycopg.Error as exc:
                if self._conn is not None and self._conn.closed:
                    self._conn = None
                if isinstance(exc, psycopg.OperationalError):
                    self._abandon()
                raise self._failure(what, exc) from None
            except OSError as exc:
                self._abandon()
                raise self._failure(what, exc) from None

    async def fetchone(self, sql: str, params: Sequence[Any] | None = None, *, what: str,
                       timeout: float | None = None,  # noqa: ASYNC109
                       statement_timeout: float | None = None) -> Row:
        rows = await self.fetch(sql, params, what=what, timeout=timeout,
                                statement_timeout=statement_timeout)
        if not rows:
            raise PgError(self.name, f"{what}: no row returned")
        return rows[0]

    @property
    def probe_budget(self) -> float:
        """What :meth:`probe_recovery` gets by default: connecting plus the contact budget
        (the most a status read's first statement may take on a fresh connection)."""
        return self.config.connect_timeout + CONTACT_TIMEOUT

    async def probe_recovery(self, seconds: float | None = None) -> bool:
        """``pg_is_in_recovery()`` on a connection of its own, opened and closed within
        ``seconds`` (default :attr:`probe_budget`); raises :class:`PgError`.

        Not the shared connection: a poll of a hung member holds that one's lock for its
        whole budget, and a re-check right before a change must not queue behind it."""
        budget = self.probe_budget if seconds is None else seconds
        opened: list[psycopg.AsyncConnection[Row]] = []

        def abandon() -> None:
            for conn in opened:
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()

        async def ask() -> bool:
            conn = await psycopg.AsyncConnection.connect(**self._kwargs())
            opened.append(conn)
            async with conn:
                cursor = await conn.execute(b"SELECT pg_is_in_recovery() AS in_recovery")
                row = await cursor.fetchone()
            return bool(row and row["in_recovery"])

        what = "probe pg_is_in_recovery()"
        try:
            return await self._bounded(ask, what, budget, abandon)
        except BackendTimeout as exc:
            raise PgError(self.name, f"{what}: no answer within {exc.seconds:g} s") from None
        except (psycopg.Error, OSError) as exc:
            abandon()
            raise self._failure(what, exc) from None

    async def watch(self, on_open: Callable[[], None] | None = None) -> str:
        """Wait on an idle connection of its own until the server goes away; return why
        (redacted). Raises :class:`PgError` when it cannot be opened within
        ``connect_timeout`` (plus slack).

        The poll's identity and read-only session, ``application_name`` sfops-watch. Nothing
        is sent once open: psycopg's ``notifies()`` only waits on the socket (no LISTEN, which
        a standby refuses) and raises as soon as the server closes it — a killed server, or a
        backend ended by a fast shutdown. A hung server closes nothing: the poll's liveness
        rule covers that. Cancelling the task closes the connection (no server round trip:
        the session is idle, so psycopg has no query to cancel)."""
        kwargs = self._kwargs()
        kwargs["application_name"] = WATCH_APPLICATION_NAME
        opened: list[psycopg.AsyncConnection[Row]] = []

        def abandon() -> None:
            for conn in opened:
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()

        async def connect() -> psycopg.AsyncConnection[Row]:
            conn = await psycopg.AsyncConnection.connect(**kwargs)
            opened.append(conn)
            return conn

        what = "watch"
        try:
            try:
                conn = await self._bounded(connect, f"{what}: connect",
                                           self.config.connect_timeout + 1.0, abandon)
            except BackendTimeout as exc:
                raise PgError(self.name, f"{what}: no connection within {exc.seconds:g} s"
                              ) from None
            except (psycopg.Error, OSError) as exc:
                raise self._failure(what, exc) from None
            if on_open is not None:
                on_open()
            try:
                async with contextlib.aclosing(conn.notifies()) as notifies:
                    async for _ in notifies:
                        pass  # nothing LISTENs on this session: none is expected
            except (psycopg.Error, OSError) as exc:
                return self.redact(_error_text(exc))
            return "connection closed"
        finally:
            abandon()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.close()
            if not conn.closed:
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()
