"""`sfops status [-o table|json|yaml]`: poll every configured backend once, concurrently.

Exit codes: 0 all healthy, 1 something degraded or failed, 2 configuration error,
5 a backend could not be reached at all (its poll failed).
Each backend is polled on its own task with its own time budget, so a hung one delays the
answer by at most that budget and never hides the others.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, TextIO

from backends.safetext import CELL, LINE, TEXT, safe_text
from tui import exitcodes

if TYPE_CHECKING:
    from collections.abc import Collection

    from backends.config import SfopsConfig
    from backends.contract import Backend
    from backends.service import Alert, BackendService, BackendSummary
    from backends.snapshot import Snapshot

DEFAULT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status", help="poll every configured backend once and print its health",
        description="Poll every configured backend once. Exit 0 healthy, 1 degraded, "
        "2 configuration error, 5 a backend unreachable.",
    )
    from tui.commands.backend import add_output

    add_output(parser)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help="time budget per backend (default %(default)g)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: building the parser (every `sfops` start) must not load the backends.
    from backends.config import ConfigError
    from tui.commands._action import load_config

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    try:
        results = asyncio.run(poll_all(config, timeout=args.timeout))
    except ConfigError as exc:
        from tui.commands._action import config_error

        print(config_error(exc), file=sys.stderr)
        return exitcodes.USAGE
    if not results:
        print(f"sfops: {safe_text(config.path, None)}: no backend is configured", file=sys.stderr)
        return exitcodes.USAGE
    code = exit_code(results)
    if args.output == "table":
        if config.has_environments:  # which stack this is, before anything about it
            mode = " (read-only)" if config.sfops.read_only else ""
            print(f"environment: {config.env}{mode}")
        print_table(results, sys.stdout, config)
    else:
        from tui.commands.backend import print_document

        print_document(to_json(results, code, config), args.output, sys.stdout)
    return code


Result = tuple["Backend", "BackendService", "Snapshot[Any]", "BackendSummary"]


async def poll_all(config: SfopsConfig, *, timeout: float,  # noqa: ASYNC109
                   only: Collection[str] | None = None) -> list[Result]:
    """Every configured backend (``only`` these, by name) once, concurrently, under the TUI's
    liveness rule."""
    from backends.registry import backends
    from tui.commands.backend import observe_once

    configured = [(b, s) for b in backends() if only is None or b.name in only
                  if (s := b.build_service(config)) is not None]
    secrets = config.secrets()

    async def one(backend: Backend, service: BackendService) -> Result:
        snapshot, summary = await observe_once(service, timeout=timeout, secrets=secrets)
        return backend, service, snapshot, summary

    return list(await asyncio.gather(*(one(b, s) for b, s in configured)))


def exit_code(results: list[Result]) -> int:
    from backends.snapshot import Health

    if any(not snapshot.ok for _, _, snapshot, _ in results):
        return exitcodes.UNREACHABLE
    if any(summary.health is not Health.OK for _, _, _, summary in results):
        return exitcodes.DEGRADED
    return exitcodes.OK


def explained(results: list[Result], config: SfopsConfig | None) -> list[Alert]:
    """What is wrong now, each symptom under its likely cause across the layers (as the
    TUI's list): evidence only from the backends that answered."""
    from backends.service import wrong_now
    from backends.topology.causes import explain
    from backends.topology.config import topology_of
    from backends.topology.model import build_topology

    statuses = {summary.name: snapshot.value for _, _, snapshot, summary in results
                if snapshot.ok}
    topology = build_topology(
        topology_of(config), statuses, running=_running(config) if config else [],
        postgres_configured=config is not None and config.postgres is not None)
    return explain(wrong_now(summary for _, _, _, summary in results), topology)


def _running(config: SfopsConfig) -> list[str]:
    """Actions running now ("pg.failover pg-2"), from the audit log (none if unreadable)."""
    from backends.audit import RUNNING, AuditLog

    try:
        items = AuditLog(config.sfops.audit_log, env=config.env).unfinished()
    except (OSError, ValueError):
        return []
    return [f"{u.action} {u.target}" for u in items if u.state == RUNNING and not u.resolved]


def to_json(results: list[Result], code: int, config: SfopsConfig) -> dict[str, Any]:
    from backends.snapshot import Health

    overall = Health.worst(summary.health for _, _, _, summary in results)
    return {
        "health": overall.value,
        "exit_code": code,
        "config": str(config.path),
        "env": config.env,
        # Unreachable backends and members first, then by severity (as the TUI's list), each
        # likely cause followed by its symptoms: "cause" is the root's "source:key", "chain"
        # the steps from the symptom to it.
        "wrong_now": [{"source": a.source, "key": a.key, "severity": a.severity.name.lower(),
                       "unreachable": a.unreachable, "message": a.message,
                       "cause": a.cause, "chain": list(a.chain)}
                      for a in explained(results, config)],
        "backends": [
            {
                "name": summary.name,
                "title": summary.title,
                "health": summary.health.value,
                "reachable": snapshot.ok,
                "error": summary.error,
                "taken_at": snapshot.taken_at.isoformat(),
                "figures": [{"label": f.label, "value": f.value, "health": f.health.value}
                            for f in summary.figures],
                "alerts": [{"key": a.key, "severity": a.severity.name.lower(),
                            "unreachable": a.unreachable, "message": a.message}
                           for a in summary.alerts],
                "breaker": service.breaker.state.value if service.breaker else None,
                # The backend's own status, redacted by its contract.
                "detail": (backend.status_json(snapshot.value)
                           if snapshot.value is not None else None),
            }
            for backend, service, snapshot, summary in results
        ],
    }


def print_table(results: list[Result], out: TextIO, config: SfopsConfig | None = None
                ) -> None:
    rows = [("BACKEND", "HEALTH", "FIGURES")]
    for _, _, _, summary in results:
        figures = "  ".join(f"{f.label} {f.value}" for f in summary.figures)
        rows.append((safe_text(summary.title, CELL), summary.health.value.upper(),
                     safe_text(figures or (summary.error or ""), TEXT)))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]}".rstrip(), file=out)
    from tui.render.overview import alert_text

    print("", file=out)
    print("What is wrong now", file=out)
    alerts = explained(results, config)
    if not alerts:
        print("ok        nothing is wrong right now", file=out)
    for alert in alerts:
        message = safe_text(f"{alert.source}: {alert_text(alert)}", LINE)
        label = "DOWN" if alert.unreachable else alert.severity.name.lower()
        print(f"{label:<8}  {message}", file=out)
