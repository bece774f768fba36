"""`sfops nginx drain|undrain MEMBER`: take an upstream member out of rotation and back.

The nginx slice (httpx, asyncssh) is imported only when the command runs: `sfops --help`
and every other command stay fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.actions import Action, ActionRunner
    from backends.config import SfopsConfig

DEFAULT_DRAIN_TIMEOUT = 60.0  # = backends.nginx.actions.DEFAULT_DRAIN_TIMEOUT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nginx = subparsers.add_parser("nginx", help="nginx upstream members: drain, undrain")
    actions = nginx.add_subparsers(dest="nginx_command", required=True, metavar="COMMAND")
    for name, text in (
        ("drain", "mark MEMBER down, reload gracefully, wait for its in-flight requests"),
        ("undrain", "put MEMBER back into rotation"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("member", metavar="MEMBER",
                            help="member name as in [nginx.members.*] (e.g. api-3)")
        parser.add_argument("--timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT,
                            metavar="S",
                            help="how long to wait for in-flight requests (default %(default)g)")
        parser.add_argument("--yes", "-y", action="store_true",
                            help="do not ask for confirmation (runbooks, scripts)")
        parser.add_argument("--json", action="store_true",
                            help="print the outcome record as JSON on stdout")
        parser.add_argument("--force", action="store_true",
                            help="run even if a preflight check fails (recorded in the audit log)")
        parser.set_defaults(func=_command(name))


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from backends.config import ConfigError
        from backends.nginx import DrainMember, UndrainMember, build_service
        from tui.commands._action import run_action_command

        action_cls = DrainMember if name == "drain" else UndrainMember

        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            runner.check_allowed(action_cls)
            service = build_service(config)
            if service is None:
                raise ConfigError(f"{config.path}: nginx: section is missing")
            stack.push_async_callback(service.close)
            return runner.build(action_cls, service, args.member, timeout=args.timeout)

        return run_action_command(args, action_cls, build)

    return run
