"""Read one member's replication state (reads only; safe to retry)."""

from __future__ import annotations

import time
from typing import Any

from backends.postgres.connection import MemberConnection, PgError
from backends.postgres.model import (
    MemberStatus,
    Role,
    SlotRow,
    StandbyRow,
    WalReceiver,
    parse_lsn,
)
from backends.secrets import redact_conninfo

# One round trip for the scalar facts. CASE keeps primary-only / standby-only functions from
# running where they raise ("recovery is (not) in progress"): they are volatile, so they are
# evaluated only on the branch taken. The timeline on a primary comes from the WAL file name
# of the insert position: unlike pg_control_checkpoint() it is right immediately after a
# promotion, before the first checkpoint on the new timeline. On a standby whose WAL receiver
# is not running, the newest timeline among its WAL segments stands in for received_tli (the
# last restartpoint may still be on the previous timeline).
MEMBER_SQL = r"""
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current_lsn,
       pg_last_wal_receive_lsn()::text AS received_lsn,
       pg_last_wal_replay_lsn()::text AS replayed_lsn,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END
           AS replay_paused,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
           AS seconds_since_replay,
       CASE WHEN NOT pg_is_in_recovery()
            THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS primary_timeline,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       CASE WHEN pg_is_in_recovery() THEN
           (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir()
             WHERE name ~ '^[0-9A-F]{24}(\.partial)?$')
       END AS wal_timeline,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
           AS connections,
       current_setting('max_connections')::int AS max_connections,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier,
       current_setting('server_version') AS server_version,
       current_setting('primary_conninfo') AS primary_conninfo,
       current_setting('primary_slot_name') AS primary_slot_name
"""

RECEIVER_SQL = """
SELECT status, received_tli, flushed_lsn::text AS flushed_lsn, sender_host, sender_port,
       extract(epoch FROM now() - last_msg_receipt_time)::float8 AS seconds_since_message,
       slot_name
  FROM pg_stat_wal_receiver
"""

REPLICATION_SQL = """
SELECT coalesce(application_name, '') AS application_name, client_addr::text AS client_addr,
       state, sync_state, sent_lsn::text AS sent_lsn, write_lsn::text AS write_lsn,
       flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn,
       extract(epoch FROM write_lag)::float8 AS write_lag,
       extract(epoch FROM flush_lag)::float8 AS flush_lag,
       extract(epoch FROM replay_lag)::float8 AS replay_lag,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes
  FROM pg_stat_replication ORDER BY application_name
"""

# Retained WAL measured from where WAL is being written: the insert position on a primary,
# the replay position on a standby.
SLOTS_SQL = """
SELECT slot_name, slot_type, active, restart_lsn::text AS restart_lsn, wal_status,
       pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END,
           restart_lsn)::bigint AS retained_bytes
  FROM pg_replication_slots ORDER BY slot_name
"""


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def read_member(conn: MemberConnection) -> MemberStatus:
    """Everything the status view needs from one member; raises :class:`PgError`."""
    started = time.monotonic()
    member = conn.member
    row = await conn.fetchone(MEMBER_SQL, what="read status", timeout=conn.contact_budget)
    in_recovery = bool(row["in_recovery"])
    receiver: WalReceiver | None = None
    standbys: tuple[StandbyRow, ...] = ()
    if in_recovery:
        rows = await conn.fetch(RECEIVER_SQL, what="read pg_stat_wal_receiver")
        if rows:
            r = rows[0]
            receiver = WalReceiver(
                status=str(r["status"]),
                received_tli=r["received_tli"],
                flushed_lsn=parse_lsn(r["flushed_lsn"]),
                sender_host=r["sender_host"],
                sender_port=r["sender_port"],
                seconds_since_message=_float(r["seconds_since_message"]),
                slot_name=r["slot_name"],
            )
    else:
        rows = await conn.fetch(REPLICATION_SQL, what="read pg_stat_replication")
        standbys = tuple(
            StandbyRow(
                application_name=r["application_name"],
                client_addr=r["client_addr"],
                state=str(r["state"]),
                sync_state=str(r["sync_state"]),
                sent_lsn=parse_lsn(r["sent_lsn"]),
                write_lsn=parse_lsn(r["write_lsn"]),
                flush_lsn=parse_lsn(r["flush_lsn"]),
                replay_lsn=parse_lsn(r["replay_lsn"]),
                write_lag_seconds=_float(r["write_lag"]),
                flush_lag_seconds=_float(r["flush_lag"]),
                replay_lag_seconds=_float(r["replay_lag"]),
                replay_lag_bytes=r["replay_lag_bytes"],
            )
            for r in rows
        )
    slot_rows = await conn.fetch(SLOTS_SQL, what="read pg_replication_slots")
    slots = tuple(
        SlotRow(
            slot_name=r["slot_name"],
            slot_type=r["slot_type"],
            active=bool(r["active"]),
            restart_lsn=parse_lsn(r["restart_lsn"]),
            wal_status=r["wal_status"],
            retained_bytes=r["retained_bytes"],
        )
        for r in slot_rows
    )
    if in_recovery:
        timeline = (receiver.received_tli if receiver and receiver.received_tli
                    else row["wal_timeline"] or row["checkpoint_timeline"])
    else:
        timeline = row["primary_timeline"] or row["checkpoint_timeline"]
    return MemberStatus(
        name=member.name,
        host=member.host,
        port=member.port,
        reachable=True,
        role=Role.STANDBY if in_recovery else Role.PRIMARY,
        timeline=timeline,
        current_lsn=parse_lsn(row["current_lsn"]),
        received_lsn=parse_lsn(row["received_lsn"]),
        replayed_lsn=parse_lsn(row["replayed_lsn"]),
        replay_paused=bool(row["replay_paused"]),
        seconds_since_replay=_float(row["seconds_since_replay"]),
        connections=row["connections"],
        max_connections=row["max_connections"],
        server_version=row["server_version"],
        system_identifier=row["system_identifier"],
        wal_receiver=receiver,
        standbys=standbys,
        slots=slots,
        # Redacted as it enters: a standby made by `pg_basebackup -R` with a password carries
        # `password=` here, and the snapshot goes to screens, JSON and logs. (A rejoin copies
        # user, passfile and TLS settings from it, never the password: it needs nothing more.)
        primary_conninfo=redact_conninfo(row["primary_conninfo"]) or None,
        primary_slot_name=row["primary_slot_name"] or None,
        poll_seconds=time.monotonic() - started,
    )


def unreachable(conn: MemberConnection, error: BaseException | str) -> MemberStatus:
    text = error if isinstance(error, str) else str(error)
    prefix = f"{conn.name}: "
    if isinstance(error, PgError) and text.startswith(prefix):
        text = text[len(prefix):]
    return MemberStatus(
        name=conn.name, host=conn.member.host, port=conn.member.port, reachable=False,
        error=conn.redact(text),
    )
