"""`sfops nginx drain|undrain MEMBER`: take an upstream member out of rotation and back."""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack

from backends.actions import Action, ActionRunner
from backends.config import ConfigError, SfopsConfig
from backends.nginx.actions import DEFAULT_DRAIN_TIMEOUT, DrainMember, UndrainMember
from tui.commands._action import add_action_flags, run_action_command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nginx = subparsers.add_parser("nginx", help="nginx upstream members: drain, undrain")
    actions = nginx.add_subparsers(dest="nginx_command", required=True, metavar="COMMAND")
    for name, action_cls, text in (
        ("drain", DrainMember,
         "mark MEMBER down, reload gracefully, wait for its in-flight requests"),
        ("undrain", UndrainMember, "put MEMBER back into rotation"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("member", metavar="MEMBER",
                            help="member name as in [nginx.members.*] (e.g. api-3)")
        parser.add_argument("--timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT,
                            metavar="S",
                            help="how long to wait for in-flight requests (default %(default)g)")
        add_action_flags(parser)
        parser.set_defaults(func=_command(action_cls))


def _command(action_cls: type[DrainMember] | type[UndrainMember]) -> object:
    def run(args: argparse.Namespace) -> int:
        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            from backends.nginx import build_service

            runner.check_allowed(action_cls)
            service = build_service(config)
            if service is None:
                raise ConfigError(f"{config.path}: nginx: section is missing")
            stack.push_async_callback(service.close)
            return runner.build(action_cls, service, args.member, timeout=args.timeout)

        return run_action_command(args, action_cls, build)

    return run
