"""`sfops` with no command: open the TUI on the configuration."""

from __future__ import annotations

import argparse
import sys

from tui import exitcodes


def run_tui(args: argparse.Namespace) -> int:
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.config import ConfigError, load
    from backends.services import build_services

    try:
        config = load(args.config)
    except ConfigError as exc:
        from backends.safetext import safe_text

        print(f"sfops: {safe_text(str(exc), None, lines=True)}", file=sys.stderr)
        return exitcodes.USAGE
    if args.read_only:
        config = config.as_read_only()  # the read-only identities, as read_only = true
    read_only = config.sfops.read_only
    from backends.locks import manager_for

    runner = ActionRunner(
        AuditLog(config.sfops.audit_log), read_only=read_only, secrets=config.secrets(),
        locks=manager_for(config),
    )
    from tui.app import SfopsApp

    app = SfopsApp(config, build_services(config), runner=runner, config_path=args.config)
    app.run()
    return exitcodes.OK
