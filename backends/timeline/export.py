"""The incident bundle (``sfops incident export``): Markdown for people and JSON for tools —
the timeline of a window, each action in it with its audit record and the status of its
backend before and after, the alerts at export time and the gaps nobody watched.

Secrets are redacted twice: every string by the value of every secret sfops read and by the
patterns of :func:`backends.secrets.redact_text` (``password=…``, ``user:pw@``, bearer
tokens). Outside text (pod names, event messages, errors) is made safe for a terminal
(:func:`~backends.safetext.safe_text`) and escaped for Markdown, so a bundle pasted into a
ticket renders as text, never as links, HTML or tables of someone else's making.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.audit import fold
from backends.safetext import CELL, LINE, safe_text
from backends.secrets import Secret, redact_known
from backends.timeline.store import StoredSnapshot
from backends.timeline.view import Timeline, document, iso, parse_ts

MARKDOWN = "incident.md"
JSON = "incident.json"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def bundle(timeline: Timeline, records: Sequence[Mapping[str, Any]],
           snapshots: Sequence[StoredSnapshot],
           alerts_now: Sequence[Mapping[str, Any]] | None, *,
           env: str, store: str, generated: float, secrets: Iterable[Secret | str] = (),
           store_error: str | None = None) -> dict[str, Any]:
    """The bundle as one JSON-ready document, redacted."""
    by_action: dict[str, list[StoredSnapshot]] = {}
    for snap in snapshots:
        by_action.setdefault(snap.action_id, []).append(snap)
    actions = []
    for record in fold(records).actions:
        start = parse_ts(record.get("ts"))
        if start is None:
            continue
        duration = record.get("duration_s")
        end = start + (float(duration) if isinstance(duration, int | float) else 0.0)
        if end < timeline.since or start > timeline.until:
            continue
        ident = str(record.get("started_id") or record.get("id") or "")
        actions.append({
            "record": dict(record),
            "snapshots": {phase: [_snapshot_json(s) for s in by_action.get(ident, ())
                                  if s.phase == phase] for phase in ("before", "after")},
        })
    doc = document(timeline.entries, timeline.ages, timeline.gaps, since=timeline.since,
                   until=timeline.until, env=env, store=store, error=store_error,
                   problems=timeline.problems)
    data = {
        "generated_at": iso(generated),
        "env": env,
        "window": {"since": doc["since"], "until": doc["until"]},
        "sources": doc["sources"],
        "gaps": doc["gaps"],
        "alerts_at_export": None if alerts_now is None else [dict(a) for a in alerts_now],
        "actions": actions,
        "timeline": doc["entries"],
        "store": store,
        "store_error": store_error,
        "problems": doc["problems"],
    }
    redacted: dict[str, Any] = redact_all(data, list(secrets))
    return redacted


def _snapshot_json(snap: StoredSnapshot) -> dict[str, Any]:
    return {"backend": snap.backend, "phase": snap.phase, "stored_at": iso(snap.ts),
            "taken_at": iso(snap.taken_at) if snap.taken_at is not None else None,
            "ok": snap.ok, "error": snap.error, "summary": dict(snap.summary),
            "status": snap.status}


def redact_all(value: Any, secrets: Sequence[Secret | str] = ()) -> Any:
    """Every string (keys too) through :func:`redact_known`."""
    if isinstance(value, str):
        return redact_known(value, secrets)
    if isinstance(value, Mapping):
        return {redact_known(str(k), secrets): redact_all(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(v, secrets) for v in value]
    return value


def md(text: Any, limit: int | None = LINE) -> str:
    """Outside text for Markdown: safe for a terminal, one line, every character Markdown
    or HTML would act on escaped."""
    return _MD_SPECIAL.sub(r"\\\1", safe_text(text, limit))


def markdown(data: Mapping[str, Any]) -> str:
    lines = [
        f"# Incident bundle: {md(data['env'], CELL)}, {md(data['window']['since'])} to "
        f"{md(data['window']['until'])}",
        "",
        f"Generated {md(data['generated_at'])} by sfops. Secrets are redacted. The full "
        f"status of each backend before and after each action is in `{JSON}`.",
        "",
        "## Data sources",
        "",
        "| source | reachable | last contact (UTC) | error |",
        "|---|---|---|---|",
    ]
    for s in data["sources"]:
        lines.append(f"| {md(s['source'], CELL)} | {'yes' if s['reachable'] else 'no'} | "
                     f"{md(s['last_contact'] or 'never')} | {md(s['error'] or '')} |")
    for problem in [data.get("store_error"), *data.get("problems", ())]:
        if problem:
            lines += ["", f"Problem: {md(problem)}"]
    lines += ["", "## Gaps (no sfops observing)", ""]
    lines += [f"- {md(g['from'])} to {md(g['to'])} ({g['seconds']:.0f} s): changes in this "
              "time were not seen" for g in data["gaps"]] or ["- none"]
    lines += ["", "## Alerts at export time", ""]
    alerts = data["alerts_at_export"]
    if alerts is None:
        lines.append("- not read (--no-refresh)")
    else:
        lines += [f"- **{md(a.get('severity', '?'))}** {md(a.get('source', ''))}: "
                  f"{md(a.get('message', ''))}" for a in alerts] or ["- none: nothing was wrong"]
    lines += ["", "## Timeline", "", "| time (UTC) | source | level | what |", "|---|---|---|---|"]
    for e in data["timeline"]:
        lines.append(f"| {md(e['ts'][11:23])} | {md(e['source'], CELL)} | {md(e['level'])} | "
                     f"{md(e['message'])} |")
    lines += ["", "## Actions", ""]
    if not data["actions"]:
        lines.append("No action in this window.")
    for item in data["actions"]:
        lines += _action_markdown(item)
    return "\n".join(lines) + "\n"


def _action_markdown(item: Mapping[str, Any]) -> list[str]:
    r = item["record"]
    duration = r.get("duration_s")
    took = f", {duration:.1f} s" if isinstance(duration, int | float) else ""
    lines = [f"### {md(r.get('action', '?'), CELL)} {md(r.get('target', ''), CELL)}: "
             f"{md(r.get('outcome', '?'))}",
             "",
             f"- by {md(r.get('user', '?'), CELL)}@{md(r.get('host', '?'), CELL)}, started "
             f"{md(r.get('ts', '?'))}{took}" + (" (forced)" if r.get("forced") else "")]
    if r.get("error"):
        lines.append(f"- error: {md(r['error'])}")
    for stage in ("preflight", "verify"):
        for check in r.get(stage) or ():
            if isinstance(check, Mapping):
                detail = check.get("detail")
                lines.append(f"- {stage} {md(check.get('status', '?'))}: "
                             f"{md(check.get('name', ''))}"
                             + (f" — {md(detail)}" if detail else ""))
    for phase in ("before", "after"):
        for snap in item["snapshots"].get(phase, ()):
            summary = snap.get("summary") or {}
            figures = ", ".join(f"{f['label']} {f['value']}" for f in summary.get("figures", ()))
            state = summary.get("health") or ("not read: " + str(snap.get("error")))
            lines.append(f"- {phase}: {md(snap['backend'], CELL)} {md(state)}"
                         + (f" — {md(figures)}" if figures else "")
                         + (f" (taken {md(snap['taken_at'])})" if snap.get("taken_at") else ""))
            for alert in summary.get("alerts", ()):
                lines.append(f"  - {md(alert.get('severity', ''))}: {md(alert.get('message'))}")
    return [*lines, ""]


def write(data: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write the two files into ``out_dir`` (created 0700; the files 0600). An existing
    bundle there is never overwritten (FileExistsError)."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = (out_dir / MARKDOWN, out_dir / JSON)
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} exists: choose another --out (nothing was written)")
    texts = (markdown(data), json.dumps(data, indent=2, default=str) + "\n")
    for path, text in zip(paths, texts, strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    return paths
