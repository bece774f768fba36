"""`sfops audit [--json] [-n N] [--all-envs] [--ack ID]`: the last actions from the audit log,
oldest first, with the environment of each; an action that started but has no outcome shows
as running or interrupted, with what to check. With an environment chosen (`sfops --env NAME
audit`, SFOPS_ENV), only that environment's actions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from backends.safetext import CELL, LINE, TEXT, safe_text
from tui import exitcodes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("audit", help="show the last actions from the audit log")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line per action: the final record as logged, or "
                        "the started record of one without an outcome, its outcome judged now "
                        "(running, interrupted, unfinished)")
    parser.add_argument("-n", type=int, default=20, metavar="N",
                        help="how many of the latest actions (default %(default)d; 0 = all)")
    parser.add_argument("--all-envs", action="store_true",
                        help="every environment's actions, also when an environment is "
                        "chosen (--env, SFOPS_ENV)")
    parser.add_argument("--ack", metavar="ID",
                        help="record that you checked the interrupted action with this record "
                        "id: sfops stops warning about it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backends.audit import AuditLog
    from tui.commands._action import chosen_env, load_config

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    # Environments may share one log: a chosen one (--env, SFOPS_ENV) shows its own actions.
    only = config.env if chosen_env(args) and not args.all_envs else None
    log = AuditLog(config.sfops.audit_log, env=only)
    if getattr(args, "ack", None):
        return _ack(log, args.ack)
    try:
        view = log.view(limit=args.n if args.n > 0 else None)
    except OSError as exc:
        print(safe_text(f"sfops: cannot read {log.path}: {exc.strerror or exc}", TEXT),
              file=sys.stderr)
        return exitcodes.USAGE
    records = view.actions
    if args.json:
        for record in records:
            print(json.dumps(record))  # ensure_ascii: control and bidi characters escaped
        return exitcodes.OK
    if not records and not view.unfinished:
        print(safe_text(f"no actions recorded in {log.path}", TEXT))
        return exitcodes.OK
    rows: list[tuple[str, ...]] = [
        ("TIME", "ENV", "USER", "ACTION", "TARGET", "OUTCOME", "SECONDS", "ERROR")
    ]
    rows += [_row(record) for record in records]
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    for row in rows:
        cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:7])]
        print("  ".join([*cells, row[7]]).rstrip())
    _print_unfinished(view.unfinished)
    return exitcodes.OK


def _print_unfinished(unfinished: list[Any]) -> None:
    """Under the table: every action without an outcome nobody has dealt with, what to check
    (an environment's own when one is chosen)."""
    from backends.intent import warning

    open_items = [u for u in unfinished if not u.resolved]
    if not open_items:
        return
    print()
    for item in open_items:
        print(safe_text(f"{item.state.upper()}: {warning(item)}", TEXT))


def _ack(log: Any, started_id: str) -> int:
    from backends.actions import ActionRunner

    who = ActionRunner(log)  # the user and host an action would be recorded with
    try:
        log.acknowledge(started_id, user=who.user, host=who.host)
    except KeyError:
        print(safe_text(f"sfops: no unfinished action with record id {started_id!r} in "
                        f"{log.path}", TEXT), file=sys.stderr)
        return exitcodes.USAGE
    except OSError as exc:
        print(safe_text(f"sfops: cannot write {log.path}: {exc.strerror or exc}", TEXT),
              file=sys.stderr)
        return exitcodes.USAGE
    print(safe_text(f"acknowledged {started_id}: sfops no longer warns about it", TEXT))
    return exitcodes.OK


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    from backends.audit import record_env
    forced = " (forced)" if record.get("forced") else ""
    done = " (resolved)" if record.get("resolved") else ""
    duration = record.get("duration_s")
    # Control characters from a hostile target name must not drive the terminal.
    cells = tuple(
        safe_text(v, CELL) for v in (
            record.get("ts", "?"), record_env(record) or "-", record.get("user", "?"),
            record.get("action", "?"),
            record.get("target", "?"), f"{record.get('outcome', '?')}{forced}{done}",
            f"{duration:.1f}" if isinstance(duration, int | float) else "?",
        )
    )
    return (*cells, safe_text(record.get("error") or "", LINE))
