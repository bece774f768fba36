"""PostgreSQL slice: replication status, failover, switchover and rejoin."""

from backends.postgres.model import (
    ClusterStatus,
    ClusterWarning,
    LastPrimaryLsn,
    Level,
    MemberStatus,
    Role,
    SlotRow,
    StandbyRow,
    WalReceiver,
    WarningKind,
    format_bytes,
    format_lsn,
    parse_lsn,
)
from backends.postgres.service import PostgresService, build_service, summarize_cluster

__all__ = [
    "ClusterStatus",
    "ClusterWarning",
    "LastPrimaryLsn",
    "Level",
    "MemberStatus",
    "PostgresService",
    "Role",
    "SlotRow",
    "StandbyRow",
    "WalReceiver",
    "WarningKind",
    "build_service",
    "format_bytes",
    "format_lsn",
    "parse_lsn",
    "summarize_cluster",
]
