"""Pure parts of the PostgreSQL slice: LSNs, lag, warnings, fences, the overview summary."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backends.postgres.model import (
    LastPrimaryLsn,
    Level,
    MemberStatus,
    Role,
    SlotRow,
    StandbyRow,
    WalReceiver,
    WarningKind,
    build_cluster,
    format_bytes,
    format_lsn,
    parse_lsn,
    summarize_status,
)
from backends.snapshot import Health

MiB = 1024 * 1024


def receiver(status: str = "streaming", tli: int = 1) -> WalReceiver:
    return WalReceiver(status, tli, None, "127.0.0.1", 5432, 0.1, "pg_2")


def standby_row(name: str = "pg-2", state: str = "streaming") -> StandbyRow:
    return StandbyRow(name, "127.0.0.1/32", state, "async", 100, 100, 100, 100,
                      None, None, None, 0)


def primary(name: str = "pg-1", lsn: int = 1000, timeline: int = 1,
            standbys: tuple[StandbyRow, ...] = (), **kw: object) -> MemberStatus:
    return MemberStatus(name, "127.0.0.1", 5432, True, role=Role.PRIMARY, timeline=timeline,
                        current_lsn=lsn, standbys=standbys, system_identifier="42",
                        **kw)  # type: ignore[arg-type]


def standby(name: str = "pg-2", received: int = 1000, replayed: int = 1000,
            timeline: int = 1, streaming: bool = True, **kw: object) -> MemberStatus:
    return MemberStatus(name, "127.0.0.1", 5433, True, role=Role.STANDBY, timeline=timeline,
                        received_lsn=received, replayed_lsn=replayed,
                        wal_receiver=receiver() if streaming else None,
                        seconds_since_replay=300.0, system_identifier="42",
                        **kw)  # type: ignore[arg-type]


def down(name: str = "pg-1") -> MemberStatus:
    return MemberStatus(name, "127.0.0.1", 5432, False, error="connection refused")


def kinds(members: list[MemberStatus], **kw: object) -> set[WarningKind]:
    return {w.kind for w in build_cluster(members, **kw).warnings}  # type: ignore[arg-type]


@pytest.mark.parametrize("text,value", [("0/0", 0), ("0/3000060", 0x3000060),
                                        ("16/B374D848", (0x16 << 32) | 0xB374D848)])
def test_lsn_round_trip(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert format_lsn(value) == text


def test_lsn_none_and_bytes_format() -> None:
    assert parse_lsn(None) is None and format_lsn(None) == "-"
    assert format_bytes(0) == "0 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * MiB) == "3.0 MiB"
    assert format_bytes(None) == "-"


def test_idle_caught_up_standby_has_zero_lag_seconds_although_replay_timestamp_is_old() -> None:
    cluster = build_cluster([primary(lsn=1000, standbys=(standby_row(),)), standby()])
    pg2 = cluster.member("pg-2")
    assert pg2 is not None
    assert pg2.replication_lag_bytes == 0
    assert pg2.replication_lag_seconds == 0.0
    assert cluster.warnings == ()


def test_paused_replay_shows_byte_and_time_lag() -> None:
    cluster = build_cluster([primary(lsn=5000, standbys=(standby_row(),)),
                             standby(received=5000, replayed=1000, replay_paused=True)])
    pg2 = cluster.member("pg-2")
    assert pg2 is not None
    assert pg2.replication_lag_bytes == 4000
    assert pg2.replication_lag_seconds == 300.0
    assert WarningKind.REPLAY_PAUSED in {w.kind for w in cluster.warnings}


def test_standby_just_restarted_reports_receive_behind_replay_as_caught_up() -> None:
    cluster = build_cluster([primary(lsn=1000, standbys=(standby_row(),)),
                             standby(received=0, replayed=1000)])
    pg2 = cluster.member("pg-2")
    assert pg2 is not None and pg2.replication_lag_seconds == 0.0
    assert pg2.position == 1000


def test_lag_without_a_primary_is_received_minus_replayed() -> None:
    cluster = build_cluster([down(), standby(received=3000, replayed=1000)])
    pg2 = cluster.member("pg-2")
    assert pg2 is not None and pg2.replication_lag_bytes == 2000
    assert cluster.primary is None
    assert {WarningKind.NO_PRIMARY, WarningKind.MEMBER_UNREACHABLE} <= kinds(
        [down(), standby(received=3000, replayed=1000)])


def test_two_primaries_are_split_brain_critical() -> None:
    cluster = build_cluster([primary(), primary("pg-2", timeline=2)])
    assert cluster.primary is None
    assert cluster.warnings[0].kind is WarningKind.SPLIT_BRAIN
    assert cluster.warnings[0].level is Level.CRITICAL


def test_standby_on_another_timeline_and_primary_without_streaming_standby() -> None:
    found = kinds([primary(timeline=3), standby(timeline=2, streaming=False)])
    assert WarningKind.TIMELINE_MISMATCH in found
    assert WarningKind.NO_STREAMING_STANDBY in found


def test_slot_retaining_too_much_wal() -> None:
    slot = SlotRow("pg_3", "physical", False, 0, "extended", 900 * MiB)
    found = kinds([primary(standbys=(standby_row(),), slots=(slot,)), standby()])
    assert found == {WarningKind.SLOT_RETAINING_WAL}


def test_fenced_former_primary_down_is_a_warning_and_back_as_primary_is_critical() -> None:
    fence = {"pg-1": {"since": 1.0, "system_identifier": "42"}}
    new_primary = primary("pg-2", timeline=2)
    found = build_cluster([down("pg-1"), new_primary], fenced=fence)
    assert {w.kind for w in found.warnings} >= {WarningKind.FENCED}
    pg1 = found.member("pg-1")
    assert pg1 is not None and pg1.fenced
    back = build_cluster([primary("pg-1"), new_primary], fenced=fence)
    critical = [w for w in back.warnings if w.level is Level.CRITICAL]
    assert {w.kind for w in critical} >= {WarningKind.FENCED_PRIMARY, WarningKind.SPLIT_BRAIN}


def test_fences_and_last_lsn_of_a_reinitialised_cluster_are_ignored() -> None:
    fence = {"pg-1": {"since": 1.0, "system_identifier": "old"}}
    last = LastPrimaryLsn("pg-1", 99, 7, 1.0, "old")
    cluster = build_cluster([primary(standbys=(standby_row(),)), standby()], fenced=fence,
                            last_primary_lsn=last)
    assert cluster.fenced == {} and cluster.last_primary_lsn is None


def test_summary_health_and_figures() -> None:
    healthy = build_cluster([primary(standbys=(standby_row(),)), standby()])
    summary = summarize_status(healthy)
    assert summary.health is Health.OK
    assert [f.label for f in summary.figures] == ["pg-1", "pg-2"]
    assert summary.spark_value == 0.0
    assert summarize_status(build_cluster([down(), standby()])).health is Health.FAILED
    lagging = build_cluster([primary(), replace(standby(), wal_receiver=None)])
    assert summarize_status(lagging).health is Health.DEGRADED


def test_to_json_formats_lsns() -> None:
    data = build_cluster([primary(lsn=0x3000060, standbys=(standby_row(),)),
                          standby()]).to_json()
    assert data["primary"] == "pg-1"
    assert data["members"][0]["current_lsn"] == "0/3000060"
    assert data["members"][0]["role"] == "primary"
