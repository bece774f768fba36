"""What a poll of the PostgreSQL members saw: immutable values, LSN arithmetic, warnings.

Everything here is pure (no I/O), so the CLI, the TUI renderers and the unit tests share it.
LSNs are kept as integers (bytes since the start of WAL); ``format_lsn`` gives the familiar
``0/3000060`` form back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.service import Alert, BackendSummary, Figure, Severity
from backends.snapshot import Health

NAME = "postgres"
TITLE = "PostgreSQL"

# A slot holding back more WAL than this is worth a warning (the lab caps slots at 1 GiB).
SLOT_RETAINED_WARN_BYTES = 256 * 1024 * 1024


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` → integer byte position (None stays None)."""
    if text is None:
        return None
    high, _, low = str(text).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def format_bytes(value: int | float | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - loop always returns


class Role(enum.StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"
    UNKNOWN = "unknown"  # unreachable


@dataclass(frozen=True)
class StandbyRow:
    """One row of ``pg_stat_replication`` on a primary: a connected standby."""

    application_name: str
    client_addr: str | None
    state: str  # startup | catchup | streaming | backup | stopping
    sync_state: str
    sent_lsn: int | None
    write_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None
    write_lag_seconds: float | None  # NULL (None) when idle: not "unknown", just "nothing new"
    flush_lag_seconds: float | None
    replay_lag_seconds: float | None
    replay_lag_bytes: int | None  # pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)


@dataclass(frozen=True)
class SlotRow:
    slot_name: str
    slot_type: str
    active: bool
    restart_lsn: int | None
    wal_status: str | None
    retained_bytes: int | None  # WAL this slot keeps on disk


@dataclass(frozen=True)
class WalReceiver:
    """``pg_stat_wal_receiver`` on a standby (absent when no receiver runs)."""

    status: str
    received_tli: int | None
    flushed_lsn: int | None
    sender_host: str | None
    sender_port: int | None
    seconds_since_message: float | None
    slot_name: str | None


@dataclass(frozen=True)
class MemberStatus:
    name: str
    host: str
    port: int
    reachable: bool
    error: str | None = None  # redacted
    role: Role = Role.UNKNOWN
    timeline: int | None = None
    current_lsn: int | None = None  # primary: pg_current_wal_lsn()
    received_lsn: int | None = None  # standby: pg_last_wal_receive_lsn()
    replayed_lsn: int | None = None  # standby: pg_last_wal_replay_lsn()
    replay_paused: bool = False
    seconds_since_replay: float | None = None  # now() - pg_last_xact_replay_timestamp()
    connections: int | None = None
    max_connections: int | None = None
    server_version: str | None = None
    system_identifier: str | None = None  # which cluster (a re-initialised one is another)
    wal_receiver: WalReceiver | None = None
    standbys: tuple[StandbyRow, ...] = ()
    slots: tuple[SlotRow, ...] = ()
    primary_conninfo: str | None = None  # as configured, password redacted by the probe
    primary_slot_name: str | None = None
    # Filled in by the cluster view (needs the primary's LSN):
    replication_lag_bytes: int | None = None
    replication_lag_seconds: float | None = None
    fenced: bool = False
    poll_seconds: float | None = None

    @property
    def is_primary(self) -> bool:
        return self.reachable and self.role is Role.PRIMARY

    @property
    def is_standby(self) -> bool:
        return self.reachable and self.role is Role.STANDBY

    @property
    def streaming(self) -> bool:
        return self.wal_receiver is not None and self.wal_receiver.status == "streaming"

    @property
    def position(self) -> int | None:
        """How far this member's WAL goes: current on a primary, received (or replayed)
        on a standby. Used to compare candidates."""
        if self.role is Role.PRIMARY:
            return self.current_lsn
        candidates = [v for v in (self.received_lsn, self.replayed_lsn) if v is not None]
        return max(candidates) if candidates else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = _jsonable(self)
        return data


class WarningKind(enum.StrEnum):
    SPLIT_BRAIN = "split-brain"
    NO_PRIMARY = "no-primary"
    TIMELINE_MISMATCH = "timeline-mismatch"
    SLOT_RETAINING_WAL = "slot-retaining-wal"
    NO_STREAMING_STANDBY = "no-streaming-standby"
    FENCED = "fenced"
    FENCED_PRIMARY = "fenced-primary"  # a fenced former primary came back as a primary
    MEMBER_UNREACHABLE = "member-unreachable"
    STANDBY_NOT_STREAMING = "standby-not-streaming"
    REPLAY_PAUSED = "replay-paused"


class Level(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class ClusterWarning:
    kind: WarningKind
    level: Level
    member: str | None
    message: str

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.member or '*'}"


@dataclass(frozen=True)
class LastPrimaryLsn:
    """The most recent WAL position sfops saw on a primary (persisted across runs)."""

    member: str
    lsn: int
    timeline: int | None
    seen_at: float  # wall clock (time.time())
    system_identifier: str | None = None


@dataclass(frozen=True)
class PostgresStatus:
    members: tuple[MemberStatus, ...]
    warnings: tuple[ClusterWarning, ...] = ()
    last_primary_lsn: LastPrimaryLsn | None = None
    fenced: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def member(self, name: str) -> MemberStatus | None:
        return next((m for m in self.members if m.name == name), None)

    @property
    def primaries(self) -> list[MemberStatus]:
        return [m for m in self.members if m.is_primary]

    @property
    def primary(self) -> MemberStatus | None:
        """The primary when there is exactly one (None when none, or split brain)."""
        found = self.primaries
        return found[0] if len(found) == 1 else None

    @property
    def max_lag_bytes(self) -> int | None:
        lags = [m.replication_lag_bytes for m in self.members
                if m.is_standby and m.replication_lag_bytes is not None]
        return max(lags) if lags else None

    @property
    def worst_level(self) -> Level | None:
        return max((w.level for w in self.warnings), default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "primary": self.primary.name if self.primary else None,
            "members": [m.to_json() for m in self.members],
            "warnings": [
                {"kind": w.kind.value, "level": w.level.name.lower(), "member": w.member,
                 "message": w.message}
                for w in self.warnings
            ],
            "last_primary_lsn": None if self.last_primary_lsn is None else {
                "member": self.last_primary_lsn.member,
                "lsn": format_lsn(self.last_primary_lsn.lsn),
                "timeline": self.last_primary_lsn.timeline,
                "seen_at": self.last_primary_lsn.seen_at,
            },
            "fenced": {k: dict(v) for k, v in self.fenced.items()},
        }


_LSN_FIELDS = {"current_lsn", "received_lsn", "replayed_lsn", "sent_lsn", "write_lsn",
               "flush_lsn", "replay_lsn", "restart_lsn", "flushed_lsn"}


def _jsonable(value: Any, key: str = "") -> Any:
    from dataclasses import fields, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f.name) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if key in _LSN_FIELDS and isinstance(value, int):
        return format_lsn(value)
    return value


# --------------------------------------------------------------------------- cluster view


def with_lag(members: Sequence[MemberStatus]) -> tuple[MemberStatus, ...]:
    """Fill each standby's lag: bytes against the primary's current LSN (or, with no
    primary in sight, received minus replayed); seconds 0 when everything received is replayed
    — an idle primary must not make a caught-up standby look late (repmgr does the same)."""
    from dataclasses import replace

    primaries = [m for m in members if m.is_primary]
    primary_lsn = primaries[0].current_lsn if len(primaries) == 1 else None
    result: list[MemberStatus] = []
    for member in members:
        if not member.is_standby:
            result.append(member)
            continue
        lag_bytes: int | None = None
        if primary_lsn is not None and member.replayed_lsn is not None:
            lag_bytes = max(0, primary_lsn - member.replayed_lsn)
        elif member.received_lsn is not None and member.replayed_lsn is not None:
            lag_bytes = max(0, member.received_lsn - member.replayed_lsn)
        # Right after a restart the receive position is the start of the streamed segment,
        # behind replay: that is caught up too.
        caught_up = (member.received_lsn is not None and member.replayed_lsn is not None
                     and member.received_lsn <= member.replayed_lsn)
        lag_seconds = 0.0 if caught_up else member.seconds_since_replay
        result.append(replace(member, replication_lag_bytes=lag_bytes,
                              replication_lag_seconds=lag_seconds))
    return tuple(result)


def cluster_warnings(
    members: Sequence[MemberStatus],
    fenced: Iterable[str] = (),
    *,
    slot_warn_bytes: int = SLOT_RETAINED_WARN_BYTES,
) -> tuple[ClusterWarning, ...]:
    fenced_names = set(fenced)
    warnings: list[ClusterWarning] = []
    primaries = [m for m in members if m.is_primary]
    if len(primaries) > 1:
        names = ", ".join(m.name for m in primaries)
        warnings.append(ClusterWarning(
            WarningKind.SPLIT_BRAIN, Level.CRITICAL, None,
            f"split brain: {names} all accept writes as primaries"))
    for member in members:
        if member.name in fenced_names and member.is_primary:
            warnings.append(ClusterWarning(
                WarningKind.FENCED_PRIMARY, Level.CRITICAL, member.name,
                f"split-brain risk: {member.name} was fenced after a failover but is running "
                f"as a primary; stop it, then `sfops pg rejoin {member.name}`"))
        elif member.name in fenced_names:
            state = "standby, not yet rejoined" if member.is_standby else "down"
            warnings.append(ClusterWarning(
                WarningKind.FENCED, Level.WARNING, member.name,
                f"{member.name} is fenced (former primary, {state}); "
                f"`sfops pg rejoin {member.name}` makes it a standby"))
    if not primaries and any(m.reachable for m in members):
        warnings.append(ClusterWarning(
            WarningKind.NO_PRIMARY, Level.CRITICAL, None,
            "no primary: no reachable member accepts writes"))
    for member in members:
        if not member.reachable:
            level = Level.WARNING if member.name in fenced_names else Level.CRITICAL
            warnings.append(ClusterWarning(
                WarningKind.MEMBER_UNREACHABLE, level, member.name,
                f"{member.name} unreachable: {member.error or 'no answer'}"))
    if len(primaries) == 1:
        primary = primaries[0]
        streaming = [s for s in primary.standbys if s.state == "streaming"]
        if not streaming:
            warnings.append(ClusterWarning(
                WarningKind.NO_STREAMING_STANDBY, Level.WARNING, primary.name,
                f"primary {primary.name} has no streaming standby: a failover now could "
                "lose data"))
        for member in members:
            if not member.is_standby or member.name in fenced_names:
                continue
            if (member.timeline is not None and primary.timeline is not None
                    and member.timeline != primary.timeline):
                warnings.append(ClusterWarning(
                    WarningKind.TIMELINE_MISMATCH, Level.CRITICAL, member.name,
                    f"{member.name} follows timeline {member.timeline}, the primary "
                    f"{primary.name} is on {primary.timeline}: `sfops pg rejoin "
                    f"{member.name}`"))
            elif not member.streaming:
                warnings.append(ClusterWarning(
                    WarningKind.STANDBY_NOT_STREAMING, Level.WARNING, member.name,
                    f"{member.name} is a standby but not streaming from {primary.name}"))
    for member in members:
        if member.is_standby and member.replay_paused:
            warnings.append(ClusterWarning(
                WarningKind.REPLAY_PAUSED, Level.INFO, member.name,
                f"WAL replay is paused on {member.name}"))
        for slot in member.slots:
            if slot.retained_bytes is not None and slot.retained_bytes > slot_warn_bytes:
                warnings.append(ClusterWarning(
                    WarningKind.SLOT_RETAINING_WAL, Level.WARNING, member.name,
                    f"slot {slot.slot_name} on {member.name} retains "
                    f"{format_bytes(slot.retained_bytes)} of WAL"
                    + ("" if slot.active else " (inactive)")))
    return tuple(sorted(warnings, key=lambda w: -w.level))


def build_cluster(
    members: Sequence[MemberStatus],
    *,
    fenced: Mapping[str, Mapping[str, Any]] | None = None,
    last_primary_lsn: LastPrimaryLsn | None = None,
) -> PostgresStatus:
    from dataclasses import replace

    identifiers = {m.system_identifier for m in members if m.system_identifier}
    fenced = {name: entry for name, entry in (fenced or {}).items()
              if not identifiers or entry.get("system_identifier") in (None, *identifiers)}
    if (last_primary_lsn is not None and identifiers
            and last_primary_lsn.system_identifier not in (None, *identifiers)):
        last_primary_lsn = None  # seen on a cluster that has since been re-initialised
    with_fence = [replace(m, fenced=m.name in fenced) for m in with_lag(members)]
    return PostgresStatus(
        members=tuple(with_fence),
        warnings=cluster_warnings(with_fence, fenced),
        last_primary_lsn=last_primary_lsn,
        fenced=fenced,
    )


_SEVERITY = {Level.INFO: Severity.INFO, Level.WARNING: Severity.WARNING,
             Level.CRITICAL: Severity.CRITICAL}


def summarize_status(status: PostgresStatus, title: str = TITLE) -> BackendSummary:
    """The overview's summary of one good status (a failed refresh: backends.service)."""
    figures: list[Figure] = []
    for member in status.members:
        if not member.reachable:
            figures.append(Figure(member.name, "down", Health.FAILED))
        elif member.is_primary:
            figures.append(Figure(member.name, f"primary tl {member.timeline}", Health.OK))
        else:
            lag = format_bytes(member.replication_lag_bytes)
            member_health = Health.OK if member.streaming else Health.DEGRADED
            figures.append(Figure(member.name, f"standby lag {lag}", member_health))
    worst = status.worst_level
    if not status.primaries or worst is Level.CRITICAL:
        health: Health = Health.FAILED
    elif worst is Level.WARNING:
        health = Health.DEGRADED
    else:
        health = Health.OK
    alerts = tuple(
        Alert(NAME, w.key, _SEVERITY[w.level], w.message,
              unreachable=w.kind is WarningKind.MEMBER_UNREACHABLE)
        for w in status.warnings
    )
    max_lag = status.max_lag_bytes
    return BackendSummary(
        name=NAME, title=title, health=health, figures=tuple(figures), alerts=alerts,
        spark_label="lag bytes", spark_value=None if max_lag is None else float(max_lag),
    )
