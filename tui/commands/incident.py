"""`sfops incident export --since 1h [--out DIR]`: the postmortem bundle — ``incident.md``
and ``incident.json`` — with the timeline of the window, each action in it with its audit
record and its backend's status before and after, the alerts at export time and the gaps
nobody watched; secrets redacted (backends.timeline.export)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.safetext import TEXT, safe_text
from tui import exitcodes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("incident", help="export an incident bundle",
                                   description="Incident tooling: `sfops incident export`.")
    commands = parser.add_subparsers(dest="incident_command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export", help="write Markdown + JSON for the postmortem",
        description="Write incident.md and incident.json: the timeline of the window, every "
        "action in it with its audit record and its backend's status before and after, the "
        "alerts now and the gaps nobody watched; secrets redacted. Takes one fresh reading "
        "first (the alerts now).")
    from tui.commands.timeline import add_window

    add_window(export, "1h")
    export.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="the directory to write into (default: ./sfops-incident-<UTC "
                        "time>); an existing bundle there is never overwritten")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from backends.service import wrong_now
    from backends.timeline.export import bundle, write
    from tui.commands.timeline import gather_cli, read_timeline

    def work_of(config: Any, since: float) -> Any:
        def work(store: Any) -> tuple[Any, list[dict[str, Any]], list[Any]]:
            timeline, records = read_timeline(store, config, since)
            # An action that started before the window but ended in it keeps its "before".
            return timeline, records, store.snapshots(since - 3600.0, timeline.until)

        return work

    got = gather_cli(args, work_of, role="incident export")
    if isinstance(got, int):
        return got
    config, writer, results, now = got.config, got.writer, got.results, time.time()
    timeline, records, snapshots = got.found
    alerts: list[dict[str, Any]] | None = None
    if results is not None:
        alerts = [{"source": a.source, "key": a.key, "severity": a.severity.name.lower(),
                   "unreachable": a.unreachable, "message": a.message}
                  for a in wrong_now(summary for _, _, _, summary in results)]
    data = bundle(timeline, records, snapshots, alerts, env=config.env,
                  store=str(writer.store.path), generated=now, secrets=config.secrets(),
                  store_error=writer.last_error)
    out = args.out or Path(f"sfops-incident-{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}")
    try:
        paths = write(data, out)
    except FileExistsError as exc:
        print(safe_text(f"sfops: {exc}", TEXT), file=sys.stderr)
        return exitcodes.USAGE
    except OSError as exc:
        print(safe_text(f"sfops: cannot write {out}: {exc.strerror or exc}", TEXT),
              file=sys.stderr)
        return exitcodes.USAGE
    for path in paths:
        print(safe_text(str(path), TEXT))
    return exitcodes.OK
