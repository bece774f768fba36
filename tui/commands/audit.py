"""`sfops audit [--json] [-n N]`: the last actions from the audit log, oldest first."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tui import exitcodes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("audit", help="show the last actions from the audit log")
    parser.add_argument("--json", action="store_true",
                        help="print the records as JSON lines, exactly as logged")
    parser.add_argument("-n", type=int, default=20, metavar="N",
                        help="how many of the latest records (default %(default)d; 0 = all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backends.audit import AuditLog
    from tui.commands._action import load_config

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    log = AuditLog(config.sfops.audit_log)
    try:
        records = log.read(limit=args.n if args.n > 0 else None)
    except OSError as exc:
        print(f"sfops: cannot read {log.path}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return exitcodes.OK
    if not records:
        print(f"no actions recorded in {log.path}")
        return exitcodes.OK
    rows: list[tuple[str, ...]] = [
        ("TIME", "USER", "ACTION", "TARGET", "OUTCOME", "SECONDS", "ERROR")
    ]
    rows += [_row(record) for record in records]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:6])]
        print("  ".join([*cells, row[6]]).rstrip())
    return exitcodes.OK


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    from tui.commands._action import printable

    forced = " (forced)" if record.get("forced") else ""
    duration = record.get("duration_s")
    # Control characters from a hostile target name must not drive the terminal.
    return tuple(
        printable(str(v)) for v in (
            record.get("ts", "?"), record.get("user", "?"), record.get("action", "?"),
            record.get("target", "?"), f"{record.get('outcome', '?')}{forced}",
            f"{duration:.1f}" if isinstance(duration, int | float) else "?",
            record.get("error") or "",
        )
    )
