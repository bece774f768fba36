"""`sfops pg status|failover|switchover|rejoin`: PostgreSQL replication status and role changes.

Exit codes (tui/exitcodes.py): status 0 healthy, 1 warnings, 5 no member reachable; actions
0 done, 1 failed during execute/verify, 3 refused by preflight or not confirmed, 4 read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack

from rich.text import Text

from backends.actions import Action, ActionRunner
from backends.config import ConfigError, SfopsConfig
from backends.postgres.actions import Failover, Rejoin, Switchover
from backends.postgres.cluster import PgCluster
from backends.postgres.model import ClusterStatus, Level
from tui import exitcodes
from tui.commands._action import add_action_flags, load_config, run_action_command
from tui.render.postgres import (
    MEMBER_COLUMNS,
    SLOT_COLUMNS,
    STANDBY_COLUMNS,
    WARNING_COLUMNS,
    member_rows,
    plain_table,
    slot_rows,
    standby_rows,
    warning_rows,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pg = subparsers.add_parser("pg", help="PostgreSQL: status, failover, switchover, rejoin")
    commands = pg.add_subparsers(dest="pg_command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="replication status of every member")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)

    failover = commands.add_parser(
        "failover", help="the primary is gone: promote MEMBER and fence the old primary",
        description="Promote a standby after the primary died. Refused while the primary "
        "answers (use switchover). --force accepts a candidate lagging more than "
        "max_lag_on_failover (audited); it never overrides the primary-is-gone check.")
    failover.add_argument("--to", required=True, metavar="MEMBER", help="standby to promote")
    add_action_flags(failover)
    failover.set_defaults(func=_action(Failover, lambda a: a.to))

    switchover = commands.add_parser(
        "switchover", help="planned, zero-loss: make MEMBER the primary, old primary rejoins",
        description="CHECKPOINT, clean fast shutdown of the primary, confirm MEMBER received "
        "the shutdown checkpoint, promote it, rejoin the old primary as its standby.")
    switchover.add_argument("--to", required=True, metavar="MEMBER", help="standby to promote")
    add_action_flags(switchover)
    switchover.set_defaults(func=_action(Switchover, lambda a: a.to))

    rejoin = commands.add_parser(
        "rejoin", help="make MEMBER a streaming standby of the primary (pg_rewind if needed)")
    rejoin.add_argument("member", metavar="MEMBER", help="member to rejoin (e.g. pg-1)")
    add_action_flags(rejoin)
    rejoin.set_defaults(func=_action(Rejoin, lambda a: a.member))


def _action(action_cls: type[Failover] | type[Switchover] | type[Rejoin],
            target: Callable[[argparse.Namespace], str]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            runner.check_allowed(action_cls)
            if config.postgres is None:
                raise ConfigError(f"{config.path}: postgres: section is missing")
            cluster = PgCluster(config)
            stack.push_async_callback(cluster.close)
            return runner.build(action_cls, cluster, target(args))

        return run_action_command(args, action_cls, build)

    return run


async def _poll(config: SfopsConfig) -> ClusterStatus:
    cluster = PgCluster(config)
    try:
        return await cluster.service.poll(use_breaker=False)
    finally:
        await cluster.close()


def run_status(args: argparse.Namespace) -> int:
    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    if config.postgres is None:
        print(f"sfops: {config.path}: no [postgres] section", file=sys.stderr)
        return exitcodes.USAGE
    status = asyncio.run(_poll(config))
    if not any(m.reachable for m in status.members):
        code = exitcodes.UNREACHABLE
    elif status.warnings and status.worst_level is not None and status.worst_level > Level.INFO:
        code = exitcodes.DEGRADED
    else:
        code = exitcodes.OK
    if args.json:
        print(json.dumps({**status.to_json(), "exit_code": code}, ensure_ascii=False))
        return code
    bound = config.postgres.max_lag_on_failover
    print(plain_table(MEMBER_COLUMNS, member_rows(status, max_lag_bytes=bound)))
    for member in status.members:
        if member.standbys:
            print(f"\nreplication from {member.name}:")
            print(plain_table(STANDBY_COLUMNS, standby_rows(member)))
    slots = [row for m in status.members for row in slot_rows(m)]
    if slots:
        print("\nslots:")
        print(plain_table(("member", *SLOT_COLUMNS),
                          [(key, [Text(key.split("/")[0]), *cells]) for key, cells in slots]))
    if status.warnings:
        print("\nwarnings:")
        print(plain_table(WARNING_COLUMNS, warning_rows(status)))
    return code
