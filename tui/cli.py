"""The `sfops` command line. With no command it opens the TUI."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tui import exitcodes

# Subcommand modules in help order; each has register(subparsers).
COMMAND_MODULES = ("status", "nginx", "pg", "kafka", "k8s", "audit", "lab")


def package_version() -> str:
    try:
        return version("streamforge-ops")
    except PackageNotFoundError:
        return "0+unknown"


def default_config_path() -> Path:
    if env := os.environ.get("SFOPS_CONFIG"):
        return Path(env)
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "sfops" / "sfops.toml"


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (skipping global options)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--config":
            skip = True
            continue
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfops",
        description="StreamForge Ops: a keyboard-first control plane for nginx, PostgreSQL, "
        "Kafka and Kubernetes. Without a command, opens the terminal UI.",
        epilog="Exit codes: 0 ok, 1 degraded or action failed, 2 usage/configuration error, "
        "3 refused by preflight or not confirmed, 4 refused in read-only mode, "
        "5 backend unreachable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"sfops {package_version()}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $SFOPS_CONFIG, else ~/.config/sfops/sfops.toml)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="show everything, change nothing: mutating commands and keys do not exist",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Importing a command module imports its backend (the kubernetes client alone takes a
    # second or more): register only the command that was asked for, all of them for help.
    chosen = chosen_command(sys.argv[1:] if argv is None else argv)
    wanted = [chosen] if chosen in COMMAND_MODULES else list(COMMAND_MODULES)
    for name in wanted:
        try:
            module = importlib.import_module(f"tui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tui.commands.{name}":
                continue  # not part of this build yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = default_config_path()
    try:
        if getattr(args, "func", None) is None:
            from tui.commands.ui import run_tui

            return run_tui(args)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
