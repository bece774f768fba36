"""Pure nginx row rendering: Text cells, health per row, outside text never markup."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.text import Text

from backends.nginx.accesslog import MemberTraffic
from backends.nginx.model import MemberState, MemberStatus, NginxStatus, ProbeResult, StubStatus
from backends.nginx.upstream import ServerEntry
from backends.safetext import safe_text
from backends.snapshot import Health
from tui.render.nginx import COLUMNS, header, member_rows

NOW = 10_000.0
INJECTIONS = ["[@click=app.quit]quit[/]", "[link=https://evil.example]x[/link]", "unclosed [",
              "[bold red]shout", "\x1b[2Jclear"]


def member(name: str = "api-1", state: MemberState = MemberState.UP, *,
           probe: ProbeResult | None = None, server: ServerEntry | None = None,
           traffic: MemberTraffic | None = None) -> MemberStatus:
    return MemberStatus(
        name, "127.0.0.1:1", state,
        server if server is not None else ServerEntry("127.0.0.1:1", weight=2),
        probe if probe is not None else ProbeResult(True, 200, 4.2),
        traffic or MemberTraffic(requests=30, errors_5xx=1, requests_per_s=3.0,
                                 errors_5xx_per_s=0.1, p50_ms=2.0, p95_ms=17.4,
                                 last_request_at=NOW - 3.2),
    )


def status(*members: MemberStatus, problems: tuple[str, ...] = ()) -> NginxStatus:
    stub = StubStatus(4, 10, 10, 20, 0, 1, 3)
    return NginxStatus(NOW, "api_backend", members, stub, 0, 30.0, problems)


def rendered(text: Text) -> str:
    console = Console(width=200, color_system=None, record=True)
    console.print(text, end="")
    return console.export_text()


def test_row_cells_and_health() -> None:
    [row] = member_rows(status(member()))
    assert row.key == "api-1"
    assert row.health is Health.OK
    assert len(row.cells) == len(COLUMNS)
    assert all(isinstance(cell, Text) for cell in row.cells)
    assert [c.plain for c in row.cells] == [
        "api-1", "● up", "2", "200 4ms", "3.0", "0.10", "2/17", "3s ago"]


@pytest.mark.parametrize(("state", "health", "label"), [
    (MemberState.UP, Health.OK, "up"),
    (MemberState.DRAINING, Health.DEGRADED, "draining"),
    (MemberState.DRAINED, Health.UNKNOWN, "drained"),
    (MemberState.FAILING, Health.FAILED, "failing"),
    (MemberState.ABSENT, Health.DEGRADED, "absent"),
])
def test_state_health_and_label(state: MemberState, health: Health, label: str) -> None:
    [row] = member_rows(status(member(state=state)))
    assert row.health is health
    assert label in row.cells[1].plain


def test_failing_probe_no_traffic_backup_and_absent() -> None:
    failing = member(state=MemberState.FAILING,
                     probe=ProbeResult(False, None, None, "ConnectError: refused"),
                     server=ServerEntry("127.0.0.1:1", backup=True), traffic=MemberTraffic())
    absent = MemberStatus("api-9", "127.0.0.1:9", MemberState.ABSENT, None, None,
                          MemberTraffic())
    rows = member_rows(status(failing, absent))
    assert [c.plain for c in rows[0].cells] == [
        "api-1", "✖ failing", "1 backup", "ConnectError: refused", "0.0", "0.00", "—", "never"]
    assert [c.plain for c in rows[1].cells][2:4] == ["—", "—"]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_outside_text_is_never_markup(evil: str) -> None:
    hostile = MemberStatus(
        evil, evil, MemberState.FAILING, None,
        ProbeResult(False, None, None, f"ConnectError: {evil}"), MemberTraffic())
    [row] = member_rows(status(hostile, problems=(evil,)))
    expected = safe_text(evil)
    assert row.cells[0].plain == expected
    assert expected in row.cells[3].plain
    for cell in row.cells:
        assert not cell.spans or all("link" not in str(s.style) for s in cell.spans)
        assert "@click" not in str(cell.style)
        # printing it shows the brackets literally
        if cell is row.cells[0]:
            assert rendered(cell) == expected
    line = header(status(hostile, problems=(evil,)))
    assert expected in line.plain
    assert "\x1b" not in line.plain


def test_header_counts() -> None:
    line = header(status(member(), member("api-2", MemberState.DRAINED)))
    assert "upstream api_backend" in line.plain
    assert "1 up" in line.plain and "1 drained" in line.plain
    assert "connections 4" in line.plain


def test_status_text_for_the_cli_is_plain_and_clean() -> None:
    from backends.nginx.model import summarize_status
    from tui.render.nginx import status_text

    value = status(member("api-1"), member("api-\x1b]0;pwned\x07", MemberState.DRAINED))
    text = status_text(value, summarize_status(value), {})
    lines = text.splitlines()
    assert lines[0].startswith("upstream ")
    assert lines[1].split()[:2] == ["member", "state"]
    assert any(line.startswith("api-1") and "up" in line for line in lines[2:])
    assert "\x1b" not in text and "\x07" not in text and "pwned" in text
