"""`sfops` with no command: open the TUI on the configuration (its chosen environment; the
TUI may switch to another of the file's environments)."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import TYPE_CHECKING

from tui import exitcodes

if TYPE_CHECKING:
    from backends.config import SfopsConfig
    from tui.environments import Session


def run_tui(args: argparse.Namespace) -> int:
    from backends.config import ConfigError, load
    from tui.commands._action import chosen_env

    try:
        config = load(args.config, env=chosen_env(args))
    except ConfigError as exc:
        from backends.safetext import safe_text

        print(f"sfops: {safe_text(str(exc), None, lines=True)}", file=sys.stderr)
        return exitcodes.USAGE
    from tui.app import SfopsApp, keep_out_of_gc
    from tui.environments import CallableOpener

    def load_env(env: str) -> SfopsConfig:
        return load(args.config, env=env)

    opener = CallableOpener(load_env, lambda c: session(c, read_only=args.read_only))
    first = session(config, read_only=args.read_only)
    app = SfopsApp(first.config, first.services, runner=first.runner, config_path=args.config,
                   opener=opener)
    # The modules and objects of the start-up stay for the whole session: frozen out of the
    # collector's reach (as the app does after each backend's first complete snapshot), then
    # the collector, off during the start (tui.cli.main), is on again.
    keep_out_of_gc()
    gc.enable()
    app.run()
    return exitcodes.OK


def session(config: SfopsConfig, *, read_only: bool) -> Session:
    """The services and action runner of one environment; ``--read-only`` on the command
    line holds for every environment, an environment's own ``read_only`` for itself."""
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.locks import manager_for
    from backends.services import build_services
    from backends.writepath.action import write_path_check
    from tui.environments import Session

    if read_only:
        config = config.as_read_only()  # the read-only identities, as read_only = true
    runner = ActionRunner(
        AuditLog(config.sfops.audit_log, env=config.env),
        read_only=config.sfops.read_only, secrets=config.secrets(),
        locks=manager_for(config), write_path=write_path_check(config),
    )
    return Session(config, build_services(config), runner)
