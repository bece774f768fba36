"""Pure rendering of PostgreSQL cluster status: snapshot -> keyed rows of ``rich.text.Text``.

Cells are always ``Text`` built from plain strings (never markup): server errors, slot and
application names come from outside. Rows are ``(key, cells)`` so a screen can diff a keyed
DataTable instead of clearing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text

from backends.postgres.model import (
    ClusterWarning,
    Level,
    MemberStatus,
    PostgresStatus,
    format_bytes,
    format_lsn,
)
from tui.render.cells import CELL, LINE, plain, safe_text, text_table

if TYPE_CHECKING:
    from backends.service import BackendSummary

Row = tuple[str, list[Text]]

MEMBER_COLUMNS = ("member", "role", "tl", "wal position", "lag", "lag s", "conns", "state")
STANDBY_COLUMNS = ("standby", "state", "sync", "sent", "replay", "lag", "write s", "flush s",
                   "replay s")
SLOT_COLUMNS = ("slot", "type", "active", "restart lsn", "wal status", "retained")
WARNING_COLUMNS = ("level", "member", "warning")

ROLE_STYLE = {"primary": "bold green", "standby": "cyan", "unknown": "bold red"}
LEVEL_STYLE = {Level.INFO: "cyan", Level.WARNING: "yellow", Level.CRITICAL: "bold red"}
LEVEL_LABEL = {Level.INFO: "info", Level.WARNING: "warn", Level.CRITICAL: "CRIT"}
SPARK_BARS = "▁▂▃▄▅▆▇█"


def _t(value: object, style: str = "") -> Text:
    return plain("-" if value is None else str(value), style)


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:.0f}"


def lag_style(lag_bytes: int | None, bound: int) -> str:
    if lag_bytes is None:
        return "dim"
    if lag_bytes == 0:
        return "green"
    return "yellow" if lag_bytes <= bound else "bold red"


def member_state(member: MemberStatus) -> Text:
    """What is going on with the member, in words (unreachable error included)."""
    if not member.reachable:
        text = Text("down: ", style="bold red")
        text.append(safe_text(member.error or "no answer"))
        if member.fenced:
            text.append(" [fenced]", style="yellow")
        return text
    parts: list[tuple[str, str]] = []
    if member.is_standby:
        receiver = member.wal_receiver
        if receiver is None:
            parts.append(("no wal receiver", "yellow"))
        else:
            parts.append((safe_text(receiver.status, CELL),
                          "green" if receiver.status == "streaming" else "yellow"))
            if receiver.sender_host:
                parts.append((safe_text(f"from {receiver.sender_host}:{receiver.sender_port}",
                                        CELL), "dim"))
        if member.replay_paused:
            parts.append(("replay paused", "yellow"))
    elif member.is_primary:
        streaming = sum(1 for s in member.standbys if s.state == "streaming")
        parts.append((f"{streaming} streaming", "green" if streaming else "yellow"))
    if member.fenced:
        parts.append(("fenced", "bold red" if member.is_primary else "yellow"))
    text = Text()
    for index, (part, style) in enumerate(parts):
        if index:
            text.append(", ")
        text.append(part, style=style)
    return text


def member_row(member: MemberStatus, *, max_lag_bytes: int = 1048576) -> Row:
    role = member.role.value if member.reachable else "down"
    if member.is_primary:
        position = f"{format_lsn(member.current_lsn)}"
    elif member.is_standby:
        position = f"{format_lsn(member.received_lsn)} / {format_lsn(member.replayed_lsn)}"
    else:
        position = "-"
    conns = ("-" if member.connections is None
             else f"{member.connections}/{member.max_connections}")
    lag_bytes = member.replication_lag_bytes
    cells = [
        plain(member.name, style="bold"),
        plain(role, style=ROLE_STYLE.get(member.role.value, "") if member.reachable
              else "bold red"),
        _t(member.timeline),
        plain(position),
        plain(format_bytes(lag_bytes) if member.is_standby else "",
              style=lag_style(lag_bytes, max_lag_bytes)),
        plain(seconds_text(member.replication_lag_seconds) if member.is_standby else ""),
        plain(conns),
        member_state(member),
    ]
    return member.name, cells


def member_rows(status: PostgresStatus, *, max_lag_bytes: int = 1048576) -> list[Row]:
    return [member_row(m, max_lag_bytes=max_lag_bytes) for m in status.members]


def standby_rows(member: MemberStatus) -> list[Row]:
    """``pg_stat_replication`` of a primary; empty for a standby."""
    rows: list[Row] = []
    for standby in member.standbys:
        key = f"{member.name}/{standby.application_name}/{standby.client_addr}"
        rows.append((key, [
            plain(standby.application_name or "?", style="bold"),
            plain(standby.state, style="green" if standby.state == "streaming" else "yellow"),
            plain(standby.sync_state),
            plain(format_lsn(standby.sent_lsn)),
            plain(format_lsn(standby.replay_lsn)),
            plain(format_bytes(standby.replay_lag_bytes),
                  style=lag_style(standby.replay_lag_bytes, 1 << 62)),
            plain(seconds_text(standby.write_lag_seconds)),
            plain(seconds_text(standby.flush_lag_seconds)),
            plain(seconds_text(standby.replay_lag_seconds)),
        ]))
    return rows


def slot_rows(member: MemberStatus, *, warn_bytes: int = 256 * 1024 * 1024) -> list[Row]:
    rows: list[Row] = []
    for slot in member.slots:
        retained = slot.retained_bytes
        style = "bold red" if retained is not None and retained > warn_bytes else ""
        rows.append((f"{member.name}/{slot.slot_name}", [
            plain(slot.slot_name, style="bold"),
            plain(slot.slot_type),
            plain("yes" if slot.active else "no", style="" if slot.active else "dim"),
            plain(format_lsn(slot.restart_lsn)),
            _t(slot.wal_status),
            plain(format_bytes(retained), style=style),
        ]))
    return rows


def warning_row(warning: ClusterWarning) -> Row:
    return warning.key, [
        plain(LEVEL_LABEL[warning.level], style=LEVEL_STYLE[warning.level]),
        _t(warning.member or "*"),
        plain(warning.message, limit=LINE),
    ]


def warning_rows(status: PostgresStatus) -> list[Row]:
    return [warning_row(w) for w in status.warnings]


def worst_warning(status: PostgresStatus) -> Text:
    """The one line an overview panel has room for."""
    if not status.warnings:
        return Text("no warnings", style="green")
    warning = status.warnings[0]  # sorted worst first
    text = Text(f"{LEVEL_LABEL[warning.level]} ", style=LEVEL_STYLE[warning.level])
    text.append(safe_text(warning.message))
    return text


def sparkline(values: Sequence[float | None], width: int = 20) -> Text:
    """Lag history as block characters, scaled to the window's maximum (gaps for None)."""
    window = list(values)[-width:]
    known = [v for v in window if v is not None]
    top = max(known, default=0.0)
    text = Text()
    for value in window:
        if value is None:
            text.append(" ")
        elif top <= 0:
            text.append(SPARK_BARS[0], style="green")
        else:
            index = min(len(SPARK_BARS) - 1, int(value / top * (len(SPARK_BARS) - 1)))
            text.append(SPARK_BARS[index], style="green" if value == 0 else "yellow")
    return text


def plain_table(columns: Sequence[str], rows: Sequence[Row]) -> str:
    """Keyed rows as an aligned plain-text table (the CLI's output)."""
    return text_table(columns, (cells for _, cells in rows))


def status_text(status: PostgresStatus, summary: BackendSummary,
                options: Mapping[str, Any]) -> str:
    """`sfops pg status` under its health line: every member (a member that does not answer
    reads "down" with its error), what each primary streams to, the replication slots. The
    cluster's warnings are the summary's alerts: the command lists them as "What is wrong
    now"."""
    sections = [plain_table(MEMBER_COLUMNS, member_rows(status))]
    for member in status.members:
        if member.standbys:
            sections.append(f"replication from {safe_text(member.name, CELL)}:\n"
                            + plain_table(STANDBY_COLUMNS, standby_rows(member)))
    slots = [(key, [plain(member.name), *cells])
             for member in status.members for key, cells in slot_rows(member)]
    if slots:
        sections.append("slots:\n" + plain_table(("member", *SLOT_COLUMNS), slots))
    return "\n\n".join(sections)
