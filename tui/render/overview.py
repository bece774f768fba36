"""Pure rendering of the overview: backend summaries -> panel text, alerts -> rows.

Everything that came from outside (server errors, names, messages) is put into
``rich.text.Text`` as plain text, so it is never interpreted as markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text

from backends.resilience import BreakerState
from backends.service import Alert, BackendSummary, Severity
from backends.snapshot import Health
from tui.render.cells import (
    CELL,
    HEALTH_STYLE,
    LINE,
    age_text,
    badge,
    plain,
    safe_text,
    since_text,
)

SEVERITY_STYLE = {Severity.INFO: "cyan", Severity.WARNING: "yellow", Severity.CRITICAL: "bold red"}
SEVERITY_LABEL = {Severity.INFO: "info", Severity.WARNING: "warn", Severity.CRITICAL: "CRIT"}


def panel_title(
    summary: BackendSummary,
    *,
    data_age: float | None = None,
    stale_for: float | None = None,
    breaker: BreakerState | None = None,
) -> Text:
    """"PostgreSQL ● OK · now" — the age is the time since the last successful contact; after
    a failed one, how old the last known figures are — and the circuit breaker when it is not
    closed."""
    title = Text(f"{safe_text(summary.title, CELL)} ", style="bold")
    title.append_text(badge(summary.health))
    if summary.last_known or summary.error:
        pass  # how old the last known figures are heads the body: the title has no room
    elif data_age is not None:
        title.append(f" · {age_text(data_age)}", style="dim")
    if (breaker is not None and breaker is not BreakerState.CLOSED
            and summary.health is not Health.UNREACHABLE):  # implied, and no room for it
        title.append(f" · breaker {breaker.value}", style="yellow")
    return title


def panel_body(summary: BackendSummary, *, stale_for: float | None = None,
               width: int = 35) -> Text:
    """Key figures, one per line, then the last poll's error (if any). After a failed
    contact the figures are from before it: a first line says how old they are, and they
    are greyed, so they are never mistaken for now."""
    body = Text(no_wrap=True, overflow="ellipsis")
    if summary.last_known:
        when = f"last known {age_text(stale_for)}" if stale_for is not None else "never reached"
        body.append(_clip(f"{when}: {summary.error or 'no contact'}", width) + "\n",
                    style="yellow")
    for figure in summary.figures:
        body.append(f"{safe_text(figure.label, 18):<18.18}", style="dim")
        if summary.last_known:
            body.append(Text(safe_text(figure.value, CELL), style="dim italic"))
        else:
            style = HEALTH_STYLE[figure.health] if figure.health is not Health.OK else ""
            body.append(Text(safe_text(figure.value, CELL), style=style))
        body.append("\n")
    if summary.error and not summary.last_known:
        body.append(Text(_clip(f"poll: {summary.error}", width), style="red"))
    return body


def _clip(text: str, width: int) -> str:
    return safe_text(" ".join(safe_text(text).split()), width)


@dataclass(frozen=True)
class AlertRow:
    key: str
    severity: Severity
    cells: tuple[Text, Text, Text, Text]


CHAIN_ARROW = " \u2190 "  # " ← ": "symptom ← its likely cause ← …"
SYMPTOM_MARK = "\u21b3 "  # "↳ ": listed under its likely cause


def alert_text(alert: Alert) -> str:
    """An alert as "What is wrong now" shows it: a root cause as its message; a symptom
    (listed right under its root) marked, with the chain to its likely cause."""
    if not alert.chain:
        return alert.message
    text = CHAIN_ARROW.join(" ".join(step.split()) for step in alert.chain)
    return SYMPTOM_MARK + text if alert.cause else text


def alert_rows(tracked: Sequence[tuple[Alert, datetime]], now: datetime) -> list[AlertRow]:
    if not tracked:
        return [AlertRow("none", Severity.INFO, (plain("ok", "green"), plain(""),
                                                 plain("nothing is wrong right now"), plain("")))]
    rows = []
    for alert, first in tracked:
        rows.append(
            AlertRow(
                key=f"{alert.source}:{alert.key}",
                severity=alert.severity,
                cells=(
                    plain(SEVERITY_LABEL[alert.severity], SEVERITY_STYLE[alert.severity]),
                    plain(alert.source),
                    plain(alert_text(alert), limit=LINE),
                    plain(since_text(first, now), "dim"),
                ),
            )
        )
    return rows


def recent_action_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, tuple[Text, ...]]]:
    """Audit records (newest last) -> keyed rows, newest first."""
    rows: list[tuple[str, tuple[Text, ...]]] = []
    for index, record in enumerate(reversed(records)):
        outcome = str(record.get("outcome", "?"))
        style = ("green" if outcome == "succeeded" else "red" if outcome == "failed"
                 else "cyan" if outcome == "running"
                 else "bold red" if record.get("unfinished") and not record.get("resolved")
                 else "yellow")
        ts = str(record.get("ts", ""))[11:19]
        key = f"{record.get('ts', '')}:{record.get('action', '')}:{index}"
        rows.append(
            (
                key,
                (
                    plain(ts, "dim"),
                    plain(f"{record.get('action', '?')} {record.get('target', '')}"),
                    plain(outcome, style),
                    plain(str(record.get("user", "")), "dim"),
                ),
            )
        )
    return rows
