"""tui/render/postgres.py: snapshot -> keyed rows of Text, without an app."""

from __future__ import annotations

from rich.text import Text

from backends.postgres.model import (
    MemberStatus,
    Role,
    SlotRow,
    StandbyRow,
    WalReceiver,
    build_cluster,
)
from tui.render.postgres import (
    MEMBER_COLUMNS,
    SLOT_COLUMNS,
    STANDBY_COLUMNS,
    member_rows,
    plain_table,
    slot_rows,
    sparkline,
    standby_rows,
    warning_rows,
    worst_warning,
)

HOSTILE = "[@click=app.quit]boom[/]"


def cluster(error: str = "connection refused", paused: bool = False) -> object:
    row = StandbyRow("pg-2", "127.0.0.1/32", "streaming", "async", 10, 10, 10, 5,
                     0.001, 0.002, None, 2048)
    pg1 = MemberStatus("pg-1", "127.0.0.1", 5432, True, role=Role.PRIMARY, timeline=3,
                       current_lsn=0x3000060, standbys=(row,), connections=4,
                       max_connections=100,
                       slots=(SlotRow("pg_2", "physical", True, 0x3000000, "reserved", 96),))
    pg2 = MemberStatus("pg-2", "127.0.0.1", 5433, True, role=Role.STANDBY, timeline=3,
                       received_lsn=0x3000060, replayed_lsn=0x3000000,
                       seconds_since_replay=2.5, replay_paused=paused,
                       wal_receiver=WalReceiver("streaming", 3, None, "127.0.0.1", 5432,
                                                0.1, "pg_2"))
    pg3 = MemberStatus("pg-3", "127.0.0.1", 5434, False, error=error)
    return build_cluster([pg1, pg2, pg3], fenced={"pg-3": {"since": 1.0}})


def plain(cells: list[Text]) -> list[str]:
    return [c.plain for c in cells]


def test_member_rows_are_keyed_text_cells_with_roles_lag_and_state() -> None:
    rows = member_rows(cluster())  # type: ignore[arg-type]
    assert [key for key, _ in rows] == ["pg-1", "pg-2", "pg-3"]
    for _, cells in rows:
        assert len(cells) == len(MEMBER_COLUMNS)
        assert all(isinstance(c, Text) for c in cells)
    pg1, pg2, pg3 = (plain(cells) for _, cells in rows)
    assert pg1[:4] == ["pg-1", "primary", "3", "0/3000060"]
    assert pg1[6] == "4/100" and pg1[7] == "1 streaming"
    assert pg2[1] == "standby" and pg2[3] == "0/3000060 / 0/3000000"
    assert pg2[4] == "96 B" and pg2[5] == "2.5"
    assert pg3[1] == "down" and pg3[7].startswith("down: connection refused")
    assert "fenced" in pg3[7]


def test_outside_text_is_never_markup() -> None:
    rows = member_rows(cluster(error=HOSTILE))  # type: ignore[arg-type]
    state = rows[2][1][7]
    assert HOSTILE in state.plain  # shown literally, not interpreted
    assert all(span.style != "@click" for span in state.spans)


def test_standby_slot_and_warning_rows() -> None:
    status = cluster(paused=True)
    pg1 = status.members[0]  # type: ignore[attr-defined]
    (key, cells), = standby_rows(pg1)
    assert key == "pg-1/pg-2/127.0.0.1/32" and len(cells) == len(STANDBY_COLUMNS)
    assert plain(cells)[5] == "2.0 KiB"
    (slot_key, slot_cells), = slot_rows(pg1)
    assert slot_key == "pg-1/pg_2" and len(slot_cells) == len(SLOT_COLUMNS)
    warnings = warning_rows(status)  # type: ignore[arg-type]
    texts = [plain(cells)[2] for _, cells in warnings]
    assert any("replay is paused" in t for t in texts)
    levels = [plain(cells)[0] for _, cells in warnings]
    assert levels[0] == "warn" and levels[-1] == "info"  # worst first (pg-3 fenced, down)
    assert worst_warning(status).plain.startswith("warn")  # type: ignore[arg-type]


def test_sparkline_scales_and_keeps_gaps() -> None:
    line = sparkline([0, None, 50, 100], width=10)
    assert line.plain == "▁ ▄█"
    assert sparkline([0, 0]).plain == "▁▁"
    assert len(sparkline(list(range(50)), width=20).plain) == 20


def test_plain_table_aligns_columns() -> None:
    text = plain_table(("a", "bb"), [("k", [Text("xxx"), Text("y")])])
    assert text.splitlines() == ["a    bb", "xxx  y"]
