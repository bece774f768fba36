"""Pure rendering of the nginx drill-down: NginxStatus -> keyed rows of ``rich.text.Text``.

Member names, addresses and probe errors come from configuration files and remote servers:
they are always put into ``Text`` as plain text, never parsed as markup (a DataTable would run
a ``str`` cell through markup, and ``[@click=app.quit]`` would become a live action).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from backends.nginx.model import MemberState, MemberStatus, NginxStatus
from backends.service import BackendSummary
from backends.snapshot import Health
from tui.render.cells import LINE, age_text, plain, safe_text, text_table

COLUMNS = ("member", "state", "weight", "probe", "req/s", "5xx/s", "p50/p95 ms", "last req")

STATE_STYLE = {
    MemberState.UP: "green",
    MemberState.DRAINING: "yellow",
    MemberState.DRAINED: "grey50",
    MemberState.FAILING: "bold red",
    MemberState.ABSENT: "yellow",
}
# Symbols so state reads without colour (NO_COLOR, monochrome terminals).
STATE_LABEL = {
    MemberState.UP: "● up",
    MemberState.DRAINING: "◐ draining",
    MemberState.DRAINED: "○ drained",
    MemberState.FAILING: "✖ failing",
    MemberState.ABSENT: "? absent",
}


@dataclass(frozen=True)
class MemberRow:
    key: str  # the member name: stable across polls, for keyed diff updates
    cells: tuple[Text, ...]
    health: Health


def _number(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def probe_cell(member: MemberStatus) -> Text:
    probe = member.probe
    if probe is None:
        return plain("—", "dim")
    if probe.ok:
        latency = f" {probe.latency_ms:.0f}ms" if probe.latency_ms is not None else ""
        return plain(f"{probe.status_code}{latency}", "green")
    return plain(probe.error or f"HTTP {probe.status_code}", "red", limit=LINE)


def member_row(member: MemberStatus, now: float) -> MemberRow:
    traffic = member.traffic
    server = member.server
    weight = "—" if server is None else str(server.weight) + (" backup" if server.backup else "")
    if traffic.p50_ms is None or traffic.p95_ms is None:
        latency = plain("—", "dim")
    else:
        latency = plain(f"{traffic.p50_ms:.0f}/{traffic.p95_ms:.0f}")
    last = (None if traffic.last_request_at is None else now - traffic.last_request_at)
    cells = (
        plain(member.name, "bold"),
        plain(STATE_LABEL[member.state], STATE_STYLE[member.state]),
        plain(weight),
        probe_cell(member),
        plain(_number(traffic.requests_per_s)),
        plain(_number(traffic.errors_5xx_per_s, 2),
              "red" if traffic.errors_5xx_per_s > 0 else ""),
        latency,
        plain(age_text(last), "dim"),
    )
    return MemberRow(member.name, cells, member.health)


def member_rows(status: NginxStatus, now: float | None = None) -> list[MemberRow]:
    """One row per configured member, in configuration order. ``now`` is epoch seconds (the
    access log's clock); default: the status's own time, so rendering stays pure."""
    now = status.taken_at if now is None else now
    return [member_row(member, now) for member in status.members]


def header(status: NginxStatus) -> Text:
    """One line above the table: upstream, counts, global connections, problems."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("upstream ", style="dim")
    line.append_text(plain(status.upstream_name, "bold"))
    for state in MemberState:
        count = status.count(state)
        if count:
            line.append("  ")
            line.append_text(plain(f"{count} {state.value}", STATE_STYLE[state]))
    if status.stub is not None:
        line.append(f"  connections {status.stub.active}", style="dim")
    if status.old_workers > 0:
        line.append(f"  {status.old_workers} old worker(s) finishing", style="yellow")
    line.append(f"  window {status.log_window_s:.0f}s", style="dim")
    for problem in status.problems:
        line.append("  ")
        line.append_text(plain(problem, "yellow", limit=LINE))
    return line


def now_epoch() -> float:
    return time.time()


def status_text(status: NginxStatus, summary: BackendSummary,
                options: Mapping[str, Any]) -> str:
    """`sfops nginx status` under its health line: the upstream line and one row per member,
    as the screen shows them (alerts follow in the generic "What is wrong now")."""
    return "\n".join([safe_text(header(status).plain, None),
                      text_table(COLUMNS, (row.cells for row in member_rows(status)))])
