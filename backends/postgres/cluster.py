"""What the PostgreSQL actions share: the configured cluster (connections, hosts, state) and
the procedures they are built from (promote, fence, rejoin as a standby).

Procedures are async generators of :class:`~backends.actions.Step`, so an action chains them
and every step reaches the CLI and the TUI as it happens. A procedure that fails raises
:class:`PgActionError` whose message states the condition the cluster was left in and what
to do next.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, Protocol

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backends.actions import Step
from backends.config import SfopsConfig
from backends.executors import Executor, executor_from_config
from backends.postgres.config import SYSTEM_CA, PostgresConfig, PostgresMember
from backends.postgres.connection import MemberConnection, PgError
from backends.postgres.host import (
    CLEAN_STATES,
    KILL_WAIT_SECONDS,
    HostError,
    Killed,
    MemberHost,
    RewindSource,
    passfile_line,
)
from backends.postgres.model import LastPrimaryLsn, MemberStatus, Role, format_lsn, parse_lsn
from backends.postgres.probe import unreachable
from backends.postgres.service import PostgresService
from backends.postgres.state import PgState
from backends.resilience import call_write
from backends.secrets import redact_conninfo

PROMOTE_WAIT_SECONDS = 60
STREAM_WAIT_SECONDS = 60.0
# A rejoin's primary_conninfo keeps user, passfile and TLS settings (sslmode, sslrootcert, a
# client certificate) of the one it copies — what replication already runs with, with paths on
# the database hosts — rather than sfops's own [postgres] TLS keys, whose paths are on sfops's
# host: so a cluster that replicates over verified TLS keeps doing so after a rejoin. It never
# copies a secret (the probe has redacted them anyway): the password comes from the passfile,
# an encrypted client key's passphrase must be configured by hand.
_CONNINFO_DROP = ("host", "hostaddr", "port", "application_name", "target_session_attrs",
                  "dbname", "password", "sslpassword")
# Conninfo keywords naming a file: a per-member path (a part equal to the member's name) is
# mapped to the rejoining member's.
CONNINFO_FILES = ("passfile", "sslrootcert", "sslcert", "sslkey", "sslcrl")


class PgActionError(Exception):
    """An action step failed. The message says what state the cluster is in and what next."""


def slot_name_for(member: str) -> str:
    """The physical slot a member streams through (the lab's convention: pg-2 → pg_2)."""
    return re.sub(r"[^a-z0-9_]", "_", member.lower())


class ClusterOps(Protocol):
    """What the actions and the procedures below use of a cluster: :class:`PgCluster`
    implements it, unit tests pass fakes. Reads, the member's host, the fencing record."""

    @property
    def members(self) -> Mapping[str, PostgresMember]: ...

    @property
    def max_lag_on_failover(self) -> int: ...

    def member(self, name: str) -> PostgresMember: ...

    def conn(self, name: str) -> MemberConnection: ...

    def host(self, name: str) -> MemberHost: ...

    async def read(self, name: str) -> MemberStatus: ...

    async def read_all(self) -> dict[str, MemberStatus]: ...

    async def read_role(self, name: str, seconds: float | None = None) -> MemberStatus: ...

    def last_primary_lsn(self) -> LastPrimaryLsn | None: ...

    def streaming_seen(self, name: str) -> float | None: ...

    def fenced_members(self) -> Mapping[str, Mapping[str, Any]]: ...

    def fence(self, name: str, *, reason: str, method: str, new_primary: str) -> None: ...

    def unfence(self, name: str) -> None: ...

    def replication_conninfo(self, member: str, primary: str, template: str,
                             template_owner: str | None) -> str: ...

    def superuser_conninfo(self, name: str) -> str: ...

    def passfile_text(self, name: str) -> str: ...

    def rewind_source(self, name: str) -> RewindSource: ...

    async def close(self) -> None: ...


class PgCluster:
    """The configured PostgreSQL cluster as the actions see it.

    Given the app's live ``service`` it shares it (the TUI: its connections, and the primary
    position it keeps recording) and never closes it; without one it builds its own and
    closes it in :meth:`close`. The executors (SSH connections) it opens for host steps are
    its own: :meth:`close` releases them."""

    def __init__(self, config: SfopsConfig, service: PostgresService | None = None) -> None:
        if config.postgres is None:
            raise PgActionError("no [postgres] section in the configuration")
        self.config = config
        self.pg: PostgresConfig = config.postgres
        self.state = PgState(config.sfops.state_dir)
        self._owns_service = service is None
        self.service = service or PostgresService(self.pg, state=self.state,
                                                  secrets=config.secrets())
        self._executors: dict[str, Executor] = {}
        # What changes something connects as the operator identity, in read-write sessions
        # of its own; the poll's connections (``service``) are read-only, maybe a
        # non-superuser, and serve this cluster's reads.
        self._operator: dict[str, MemberConnection] = {}
        self._secrets = config.secrets()
        self.system_identifier: str | None = None  # of the cluster, once a member answered

    @property
    def members(self) -> dict[str, PostgresMember]:
        return dict(self.pg.members)

    @property
    def max_lag_on_failover(self) -> int:
        return self.pg.max_lag_on_failover

    def member(self, name: str) -> PostgresMember:
        try:
            return self.pg.members[name]
        except KeyError:
            known = ", ".join(self.pg.members)
            raise PgActionError(f"unknown member {name!r} (configured: {known})") from None

    def conn(self, name: str) -> MemberConnection:
        """``name``'s connection as the operator identity (opened at its first statement)."""
        connection = self._operator.get(name)
        if connection is None:
            connection = MemberConnection(self.pg, self.member(name), secrets=self._secrets,
                                          identity=self.pg.operator_identity, read_only=False)
            self._operator[name] = connection
        return connection

    def host(self, name: str) -> MemberHost:
        member = self.member(name)
        executor_config = self.config.executors.get(member.executor)
        if executor_config is None:
            raise PgActionError(f"{name}: unknown executor {member.executor!r}")
        if member.executor not in self._executors:
            self._executors[member.executor] = executor_from_config(executor_config)
        try:
            return MemberHost(member, self._executors[member.executor], executor_config)
        except HostError as exc:
            raise PgActionError(str(exc)) from None

    async def read(self, name: str) -> MemberStatus:
        """A fresh read, not through the poll's breaker (an action must see the truth)."""
        status = await self.service.read_member(name, use_breaker=False)
        self.system_identifier = status.system_identifier or self.system_identifier
        return status

    async def read_all(self) -> dict[str, MemberStatus]:
        members = await self.service.read_members(use_breaker=False)
        for member in members:
            self.system_identifier = member.system_identifier or self.system_identifier
        return {m.name: m for m in members}

    async def read_role(self, name: str, seconds: float | None = None) -> MemberStatus:
        """Only whether ``name`` answers, and as a primary or a standby: one statement on a
        connection of its own (never queued behind a poll of a hung member), within
        ``seconds`` (default: connecting plus the contact budget). For re-checks."""
        conn = self.service.connection(name)
        try:
            in_recovery = await conn.probe_recovery(seconds)
        except PgError as exc:
            return unreachable(conn, exc)
        member = conn.member
        return MemberStatus(name, member.host, member.port, True,
                            role=Role.STANDBY if in_recovery else Role.PRIMARY)

    def fence(self, name: str, *, reason: str, method: str, new_primary: str) -> None:
        self.state.fence(name, reason=reason, method=method, new_primary=new_primary,
                         system_identifier=self.system_identifier)

    def unfence(self, name: str) -> None:
        self.state.unfence(name)

    def fenced_members(self) -> dict[str, dict[str, Any]]:
        return self.state.fenced()

    def streaming_seen(self, name: str) -> float | None:
        return self.state.streaming_seen(name)

    def last_primary_lsn(self) -> LastPrimaryLsn | None:
        """The last primary position sfops saw, if it was seen on this cluster."""
        last = self.state.last_primary_lsn()
        if (last is not None and last.system_identifier and self.system_identifier
                and last.system_identifier != self.system_identifier):
            return None
        return last

    async def close(self) -> None:
        """Release what this cluster opened: its executors (SSH connections) and, when it
        built it, its service. A shared service stays open. Safe to call more than once."""
        executors, self._executors = list(self._executors.values()), {}
        operator, self._operator = list(self._operator.values()), {}
        closing = [executor.close() for executor in executors]
        closing += [connection.close() for connection in operator]
        if self._owns_service:
            self._owns_service = False
            closing.append(self.service.close())
        results = await asyncio.gather(*closing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- replication conninfo ------------------------------------------------------------
    def replication_conninfo(self, member: str, primary: str, template: str,
                             template_owner: str | None) -> str:
        """primary_conninfo for ``member`` streaming from ``primary``, built from another
        member's (user, passfile, TLS settings kept; host, port and name replaced). A
        passfile under the template owner's directory is mapped to ``member``'s."""
        params: dict[str, Any] = {k: v for k, v in conninfo_to_dict(template).items()
                                  if k not in _CONNINFO_DROP}
        for key in CONNINFO_FILES:
            path = params.get(key)
            if path and path != SYSTEM_CA and template_owner and template_owner != member:
                parts = [member if part == template_owner else part
                         for part in PurePosixPath(str(path)).parts]
                params[key] = str(PurePosixPath(*parts))
        target = self.member(primary)
        params.update(host=target.host, port=str(target.port), application_name=member)
        return make_conninfo(**params)

    def superuser_conninfo(self, name: str) -> str:
        """pg_rewind's source: the operator identity (it needs a superuser, or a role with
        the pg_rewind grants), for a tool run on a member's host: no secret and no file of
        sfops's host (see :meth:`rewind_source`), but the ``sslmode``."""
        member = self.member(name)
        tls = {"sslmode": member.sslmode} if member.sslmode else {}
        return make_conninfo(host=member.host, port=str(member.port),
                             user=self.pg.operator_identity.user,
                             dbname=self.pg.dbname,
                             connect_timeout=str(max(1, int(self.pg.connect_timeout))), **tls)

    def rewind_source(self, name: str) -> RewindSource:
        """pg_rewind's source ``name`` as sfops reaches it, TLS included: the same CA (and
        client certificate) verify the source server from the rejoining member's host —
        copied there for the run, since the paths in the configuration are sfops's host's.
        A ``service`` is not passed on: it names an entry of sfops's service file."""
        member = self.member(name)
        files = {key: str(value) for key, value in (("sslrootcert", member.sslrootcert),
                                                    ("sslcert", member.sslcert),
                                                    ("sslkey", member.sslkey))
                 if value is not None and value != SYSTEM_CA}
        settings = {"sslrootcert": SYSTEM_CA} if member.sslrootcert == SYSTEM_CA else {}
        passphrase = (self.pg.sslpassword.reveal()
                      if self.pg.sslpassword is not None and member.sslkey is not None else None)
        return RewindSource(self.superuser_conninfo(name), self.passfile_text(name), files,
                            settings, passphrase)

    def passfile_text(self, name: str) -> str:
        member = self.member(name)
        identity = self.pg.operator_identity
        password = identity.password.reveal() if identity.password is not None else ""
        return passfile_line(member.host, member.port, identity.user, password)


# --------------------------------------------------------------------------- procedures


async def wait_for(check: Callable[[], Awaitable[Any]], seconds: float,
                   interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; returns the last value."""
    deadline = time.monotonic() + seconds
    value = await check()
    while not value and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        value = await check()
    return value


async def accepts_write(conn: MemberConnection) -> str | None:
    """None when ``conn``'s member commits a transaction (an xid is assigned), else why."""
    try:
        await call_write(lambda: conn.fetchone("SELECT pg_current_xact_id()::text AS xid",
                                               what="test write"), what="test write")
    except PgError as exc:
        return str(exc)
    return None


async def promote(cluster: ClusterOps, name: str, old_timeline: int | None) -> AsyncIterator[Step]:
    conn = cluster.conn(name)
    status = await cluster.read(name)
    if status.is_standby and status.replay_paused:
        yield Step(f"{name}: WAL replay was paused; resuming so everything received is applied")
        await call_write(lambda: conn.fetch("SELECT pg_wal_replay_resume()",
                                            what="resume replay"), what="resume replay")
    yield Step(f"{name}: promoting (pg_promote(true, {PROMOTE_WAIT_SECONDS}))")
    started = time.monotonic()
    try:
        row = await call_write(
            lambda: conn.fetchone("SELECT pg_promote(true, %s) AS promoted",
                                  (PROMOTE_WAIT_SECONDS,), what="pg_promote",
                                  statement_timeout=PROMOTE_WAIT_SECONDS + 5),
            what="pg_promote")
    except PgError as exc:
        raise PgActionError(
            f"promotion of {name} failed or its answer was lost ({exc}); it may still "
            f"finish: check `sfops pg status` before anything else") from None
    if not row["promoted"]:
        raise PgActionError(
            f"{name} did not finish promoting within {PROMOTE_WAIT_SECONDS} s; it may still "
            f"finish: check `sfops pg status`; nothing else was changed")
    after = await cluster.read(name)
    if not after.is_primary:
        raise PgActionError(f"{name}: pg_promote returned true but the member reads as "
                            f"{after.role.value if after.reachable else after.error}")
    error = await accepts_write(conn)
    if error is not None:
        raise PgActionError(f"{name} is out of recovery but a test write failed: {error}")
    timeline = after.timeline
    if old_timeline is not None and timeline is not None and timeline <= old_timeline:
        raise PgActionError(f"{name} is primary but still on timeline {timeline}")
    yield Step(f"{name}: primary on timeline {timeline}, accepts writes "
               f"({time.monotonic() - started:.2f} s after pg_promote)")


FENCE_METHOD_KILLED = "standby.signal, SIGKILL"


def _killed_step(name: str, killed: Killed | None) -> Step:
    if killed is None:
        return Step(f"{name}: no server runs from its data directory")
    if killed.exited:
        return Step(f"{name}: postmaster {killed.pid} and its processes SIGKILLed and gone (a "
                    "SIGSTOPped process dies too): it cannot answer again")
    return Step(f"{name}: postmaster {killed.pid} and its processes SIGKILLed, not exited "
                f"after {KILL_WAIT_SECONDS} s (uninterruptible I/O?): a SIGKILL cannot be "
                "undone, none of them runs again; they exit when the I/O ends")


async def fence_first(cluster: ClusterOps, name: str, new_primary: str) -> AsyncIterator[Step]:
    """Before the promotion: make ``name`` unable ever to accept another write.
    ``standby.signal`` first (a restart — by hand, by systemd — comes up read-only), then
    SIGKILL of its whole server (a hung, SIGSTOPped one too). Raises :class:`PgActionError`
    when either cannot be done; a standby.signal already written is then removed again, so
    nothing has changed and nothing may be promoted."""
    try:
        host = cluster.host(name)
        await host.write_standby_signal()
    except (PgActionError, HostError) as exc:
        raise PgActionError(
            f"{name} could not be fenced ({exc}); nothing was changed and nothing promoted. "
            f"If its host is down, run the failover again: its preflight then says so and "
            f"{name} is only recorded as fenced") from None
    yield Step(f"{name}: standby.signal written: a restart comes up read-only as a standby")
    try:
        killed = await host.kill_server()
    except HostError as exc:
        try:
            await host.remove_standby_signal()
            undone = "standby.signal was removed again: nothing has changed"
        except HostError as undo_exc:
            undone = (f"standby.signal could not be removed ({undo_exc}): a restart of {name} "
                      f"comes up as a standby; remove {host.path('standby.signal')} to undo")
        raise PgActionError(
            f"{name}'s server could not be killed ({exc}); nothing was promoted; {undone}. "
            f"Stop {name} by hand, then run the failover again") from None
    cluster.fence(name, reason="failover", method=FENCE_METHOD_KILLED,
                  new_primary=new_primary)
    yield _killed_step(name, killed)


async def fence(cluster: ClusterOps, name: str, new_primary: str) -> AsyncIterator[Step]:
    """After the promotion, for a former primary whose host the preflight could not reach:
    fenced for real if the host answers now (standby.signal, SIGKILL), else recorded."""
    try:
        host = cluster.host(name)
    except PgActionError as exc:
        cluster.fence(name, reason="failover", method="recorded", new_primary=new_primary)
        yield Step(f"{name}: no host access ({exc}); recorded as fenced: sfops alerts if it "
                   "reappears as a primary")
        return
    problem = await host.reachable()
    if problem is not None:
        cluster.fence(name, reason="failover", method="recorded", new_primary=new_primary)
        yield Step(f"{name}: host unreachable ({problem}); recorded as fenced: sfops raises a "
                   "split-brain alert if it reappears as a primary")
        return
    await host.write_standby_signal()
    cluster.fence(name, reason="failover", method="standby.signal",
                  new_primary=new_primary)
    yield Step(f"{name}: standby.signal written: a restart comes up read-only as a standby")
    try:
        killed = await host.kill_server()
    except HostError as exc:
        yield Step(f"{name}: could not kill its server ({exc}); it keeps standby.signal and "
                   "sfops alerts if it answers as a primary: stop it by hand")
        return
    cluster.fence(name, reason="failover", method=FENCE_METHOD_KILLED,
                  new_primary=new_primary)
    yield _killed_step(name, killed)


async def ensure_slot(cluster: ClusterOps, primary: str, slot: str) -> AsyncIterator[Step]:
    conn = cluster.conn(primary)
    rows = await conn.fetch("SELECT active, wal_status FROM pg_replication_slots "
                            "WHERE slot_name = %s", (slot,), what="read slot")
    if rows and rows[0]["wal_status"] == "lost":
        await call_write(lambda: conn.fetch("SELECT pg_drop_replication_slot(%s)", (slot,),
                                            what="drop lost slot"), what="drop lost slot")
        yield Step(f"{primary}: slot {slot} had lost its WAL; dropped")
        rows = []
    if not rows:
        await call_write(lambda: conn.fetch(
            "SELECT pg_create_physical_replication_slot(%s, true)", (slot,),
            what="create slot"), what="create slot")
        yield Step(f"{primary}: physical slot {slot} created")


def _template(cluster: ClusterOps, member: str, statuses: dict[str, MemberStatus]
              ) -> tuple[str, str]:
    """A primary_conninfo to copy (and whose it is): the member's own, else any other's."""
    own = statuses.get(member)
    if own is not None and own.primary_conninfo:
        return own.primary_conninfo, member
    for status in statuses.values():
        if status.primary_conninfo:
            return status.primary_conninfo, status.name
    raise PgActionError(
        f"no member has a primary_conninfo to copy the replication user and passfile from; "
        f"{member} is stopped with standby.signal (fenced): configure primary_conninfo in its "
        f"postgresql.auto.conf by hand and start it")


async def _auto_conf_conninfo(host: MemberHost) -> str | None:
    text = await host.read_text(host.path("postgresql.auto.conf")) or ""
    for line in reversed(text.splitlines()):
        key, sep, value = line.partition("=")
        if sep and key.strip() == "primary_conninfo":
            value = value.strip()
            if value.startswith("'") and value.endswith("'"):
                value = value[1:-1].replace("''", "'")
            return value or None
    return None


async def _stop_cleanly(cluster: ClusterOps, host: MemberHost) -> AsyncIterator[Step]:
    name = host.name
    if await host.running():
        yield Step(f"{name}: stopping (fast shutdown)")
        await host.stop("fast")
    control = await host.controldata()
    state = control.get("Database cluster state", "")
    if state in CLEAN_STATES:
        return
    # pg_rewind needs a clean shutdown; a crashed former primary gets its crash recovery by
    # starting as a standby (standby.signal is in place), then a fast stop.
    yield Step(f"{name}: not shut down cleanly ({state}); running crash recovery as a standby")
    await host.start()
    conn = cluster.conn(name)

    async def recovered() -> bool:
        try:
            await conn.fetchone("SELECT 1 AS one", what="probe")
        except PgError:
            return not await host.running()  # died: stop waiting, report below
        return True

    await wait_for(recovered, 60.0, 0.5)
    await host.stop("fast")
    state = (await host.controldata()).get("Database cluster state", "")
    if state not in CLEAN_STATES:
        raise PgActionError(f"{name}: still not cleanly shut down after crash recovery "
                            f"({state}); it is stopped with standby.signal (fenced); last "
                            f"log lines: {await host.log_tail()}")


async def _checkpoint_on_timeline(cluster: ClusterOps, primary: str,
                                  timeline: int | None) -> AsyncIterator[Step]:
    """pg_rewind takes the source's timeline from its control file, which a promotion only
    updates at the first checkpoint after it: without one, the rewind follows the previous
    timeline and the target cannot start (Patroni waits for this checkpoint too)."""
    conn = cluster.conn(primary)
    row = await conn.fetchone("SELECT timeline_id FROM pg_control_checkpoint()",
                              what="read checkpoint timeline")
    if timeline is None or row["timeline_id"] == timeline:
        return
    yield Step(f"{primary}: CHECKPOINT (its control file still says timeline "
               f"{row['timeline_id']}; pg_rewind reads it from there)")
    await call_write(lambda: conn.fetch("CHECKPOINT", what="CHECKPOINT", statement_timeout=120),
                     what="CHECKPOINT")
    row = await conn.fetchone("SELECT timeline_id FROM pg_control_checkpoint()",
                              what="read checkpoint timeline")
    if row["timeline_id"] != timeline:
        raise PgActionError(f"{primary}'s control file is on timeline {row['timeline_id']}, "
                            f"not {timeline}, even after a CHECKPOINT; the rejoining member "
                            "is stopped with standby.signal (fenced): retry the rejoin")


async def rejoin_conninfo(cluster: ClusterOps, host: MemberHost, name: str, primary: str,
                          statuses: Mapping[str, MemberStatus], *, stopped: bool) -> str:
    """The primary_conninfo a rejoin writes for ``name`` streaming from ``primary``: copied
    from its own (from postgresql.auto.conf when it is ``stopped``), else from another
    member's. Reads only."""
    own_conninfo = await _auto_conf_conninfo(host) if stopped else None
    if own_conninfo:
        template, owner = own_conninfo, name
    else:
        template, owner = _template(cluster, name, dict(statuses))
    conninfo = cluster.replication_conninfo(name, primary, template, owner)
    params = conninfo_to_dict(conninfo)
    for key in CONNINFO_FILES:
        path = params.get(key)
        if path and path != SYSTEM_CA and not await host.exists(str(path)):
            # Fall back to the template's own files (same replication user, same CA).
            return cluster.replication_conninfo(name, primary, template, None)
    return conninfo


def _slot_plan(primary: MemberStatus, slot: str) -> str:
    existing = next((s for s in primary.slots if s.slot_name == slot), None)
    if existing is None:
        return f"{primary.name}: create physical replication slot {slot}"
    if existing.wal_status == "lost":
        return f"{primary.name}: slot {slot} has lost its WAL: drop it and create it again"
    return f"{primary.name}: slot {slot} exists ({existing.wal_status or 'no WAL status'}): kept"


async def rejoin_plan(cluster: ClusterOps, name: str, primary: str,
                      statuses: Mapping[str, MemberStatus], *, stopped: bool | None = None,
                      primary_timeline: int | None = None) -> list[str]:
    """What :func:`rejoin` would do, step by step, from ``statuses`` (read by the caller).
    ``stopped``: plan as if ``name`` were stopped by then (a switchover stops it first);
    ``primary_timeline``: the timeline ``primary`` will be on. Reads only; passwords in the
    primary_conninfo are redacted."""
    status, primary_status = statuses[name], statuses[primary]
    timeline = primary_timeline if primary_timeline is not None else primary_status.timeline
    is_stopped = (not status.reachable) if stopped is None else stopped
    slot = slot_name_for(name)
    try:
        host = cluster.host(name)
        conninfo = redact_conninfo(await rejoin_conninfo(cluster, host, name, primary,
                                                         statuses, stopped=is_stopped))
    except (PgActionError, HostError) as exc:
        return [f"{name}: the rejoin would stop before changing anything: {exc}"]
    target = cluster.member(primary)
    settings = f"primary_conninfo = '{conninfo}', primary_slot_name = '{slot}'"
    if not is_stopped and _follows(status, primary_status, target.port):
        return [
            f"{name}: already streams {primary}'s timeline {timeline}: no pg_rewind, no "
            "restart",
            _slot_plan(primary_status, slot),
            f"{name}: ALTER SYSTEM SET {settings}; pg_reload_conf()",
            f"{name}: wait up to {STREAM_WAIT_SECONDS:.0f} s for it to stream, then no longer "
            "recorded as fenced",
        ]
    lines = [f"{name}: write {host.path('standby.signal')} (fenced while it rejoins)"]
    if status.is_primary and not is_stopped:
        lines.append(f"{name}: answers as a primary: its writes since the divergence are "
                     "rewound away")
    lines.append(f"{name}: " + ("already stopped" if is_stopped else "fast shutdown")
                 + "; if not shut down cleanly, crash recovery as a standby, then a fast stop")
    lines += [
        f"{primary}: CHECKPOINT if its control file does not yet name timeline {timeline}",
        f"{name}: pg_rewind from {primary} ({target.host}:{target.port}, timeline "
        f"{timeline}): it rewinds {name} to the divergence point, or changes nothing when "
        f"{name}'s history is a prefix of {primary}'s; config files kept",
        _slot_plan(primary_status, slot),
        f"{name}: postgresql.auto.conf: {settings}; standby.signal kept",
        f"{name}: start as a standby; wait up to {STREAM_WAIT_SECONDS:.0f} s for it to "
        f"stream timeline {timeline}, then no longer recorded as fenced",
    ]
    return lines


async def rejoin(cluster: ClusterOps, name: str, primary: str) -> AsyncIterator[Step]:
    """Turn ``name`` into a streaming standby of ``primary`` (rewinding it when its history
    diverged). Leaves it stopped with standby.signal if anything fails before the start."""
    host = cluster.host(name)
    statuses = await cluster.read_all()
    primary_status = statuses[primary]
    if not primary_status.is_primary:
        raise PgActionError(f"{primary} is not a reachable primary; nothing was changed")
    conninfo = await rejoin_conninfo(cluster, host, name, primary, statuses,
                                     stopped=not statuses[name].reachable)
    slot = slot_name_for(name)
    if _follows(statuses[name], primary_status, cluster.member(primary).port):
        # Already replaying the primary's own history (a fenced member that came back
        # pointing at it): nothing to rewind. Stopping it to run pg_rewind would even hurt —
        # its control file can still name the old timeline while its WAL is on the new one.
        async for step in _adopt_follower(cluster, name, primary, conninfo, slot):
            yield step
        return

    await host.write_standby_signal()
    cluster.fence(name, reason="rejoin in progress", method="standby.signal",
                  new_primary=primary)
    yield Step(f"{name}: standby.signal written (fenced while it rejoins)")
    async for step in _stop_cleanly(cluster, host):
        yield step

    async for step in _checkpoint_on_timeline(cluster, primary, primary_status.timeline):
        yield step
    saved = await host.save_config_files()
    yield Step(f"{name}: pg_rewind from {primary} (timeline {primary_status.timeline})")
    rewind_error: HostError | None = None
    try:
        output = await host.rewind(cluster.rewind_source(primary))
    except HostError as exc:
        rewind_error, output = exc, ""
    finally:
        await host.restore_config_files(saved)
    if rewind_error is not None:
        # E.g. "could not find previous WAL record": a standby that had already followed
        # part of the new timeline. If its history is a prefix of the primary's it will
        # stream; if not, it stays a read-only, fenced standby and we say so below.
        yield Step(f"{name}: {rewind_error}; trying it as a standby as it is")
    else:
        rewound = "no rewind required" not in output
        yield Step(f"{name}: " + ("history rewound to the divergence point" if rewound
                                  else "no rewind needed (its history is a prefix of the "
                                       "primary's)"))
    async for step in ensure_slot(cluster, primary, slot):
        yield step
    await host.set_recovery({"primary_conninfo": conninfo, "primary_slot_name": slot})
    await host.write_standby_signal()
    yield Step(f"{name}: primary_conninfo → {primary} ({cluster.member(primary).host}:"
               f"{cluster.member(primary).port}), slot {slot}")
    await host.start()
    yield Step(f"{name}: started as a standby; waiting for it to stream")

    async def streams() -> MemberStatus | None:
        status = await cluster.read(name)
        if status.is_standby and status.streaming and (
                status.timeline == primary_status.timeline):
            return status
        return None

    streaming = await wait_for(streams, STREAM_WAIT_SECONDS, 0.5)
    if not streaming:
        running = await host.running()
        cause = f" (pg_rewind: {rewind_error})" if rewind_error is not None else ""
        raise PgActionError(
            f"{name} did not start streaming from {primary} within {STREAM_WAIT_SECONDS:.0f} "
            f"s{cause}; it is {'running read-only as a standby' if running else 'stopped'} "
            f"with standby.signal (fenced, never a primary); check its log "
            f"({host.log_file}): {await host.log_tail()}; if its data diverged beyond "
            "repair, re-seed it from a base backup")
    cluster.unfence(name)
    yield Step(f"{name}: streaming from {primary}, timeline {streaming.timeline}, replayed "
               f"{format_lsn(streaming.replayed_lsn)}")


async def _write(conn: MemberConnection, statement: str, what: str) -> None:
    await call_write(lambda: conn.fetch(statement, what=what), what=what)


def _follows(member: MemberStatus, primary: MemberStatus, primary_port: int) -> bool:
    receiver = member.wal_receiver
    return (member.is_standby and member.streaming and receiver is not None
            and receiver.sender_port == primary_port and member.timeline == primary.timeline)


async def _adopt_follower(cluster: ClusterOps, name: str, primary: str, conninfo: str,
                          slot: str) -> AsyncIterator[Step]:
    yield Step(f"{name}: already streams {primary}'s timeline; no rewind, no restart")
    async for step in ensure_slot(cluster, primary, slot):
        yield step
    conn = cluster.conn(name)
    for key, value in (("primary_conninfo", conninfo), ("primary_slot_name", slot)):
        statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(
            sql.Identifier(key), sql.Literal(value)).as_string(None)
        await _write(conn, statement, f"set {key}")
    await call_write(lambda: conn.fetch("SELECT pg_reload_conf()", what="reload"),
                     what="reload")
    yield Step(f"{name}: primary_conninfo and slot {slot} set (reloaded)")

    async def streams() -> MemberStatus | None:
        status = await cluster.read(name)
        return status if status.is_standby and status.streaming else None

    streaming = await wait_for(streams, STREAM_WAIT_SECONDS, 0.5)
    if not streaming:
        raise PgActionError(f"{name} stopped streaming after its settings were reloaded; it "
                            "is a read-only standby (fenced): check its log and retry")
    cluster.unfence(name)
    yield Step(f"{name}: streaming from {primary}, timeline {streaming.timeline}")


async def checkpoint_received(cluster: ClusterOps, name: str, checkpoint_lsn: int,
                              seconds: float = 30.0) -> int | None:
    """Wait until ``name`` has received WAL past ``checkpoint_lsn``; its received LSN."""
    conn = cluster.conn(name)

    async def received() -> int | None:
        try:
            row = await conn.fetchone("SELECT pg_last_wal_receive_lsn()::text AS lsn",
                                      what="read received LSN")
        except PgError:
            return None
        lsn = parse_lsn(row["lsn"])
        return lsn if lsn is not None and lsn > checkpoint_lsn else None

    result: int | None = await wait_for(received, seconds, 0.1)
    return result
