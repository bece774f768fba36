"""The `sfops` command line. With no command it opens the TUI."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from backends.secrets import scrub_known
from tui import exitcodes

# Subcommand modules; each has register(subparsers). The backends' own commands
# (`sfops nginx|pg|kafka|k8s …`) are generated from their contracts (tui/commands/backend.py)
# and come between "status" and these.
COMMAND_MODULES = ("status", "verify", "audit", "timeline", "incident", "lab", "completion")
# Options of `sfops` itself, accepted before or after the sub-command (value-taking ones first).
GLOBAL_VALUE_OPTIONS = ("--config", "--env")
GLOBAL_FLAGS = ("--read-only",)


def package_version() -> str:
    try:
        return version("streamforge-ops")
    except PackageNotFoundError:
        return "0+unknown"


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move the global options to the front, wherever they were written (`sfops pg status
    --config X`), so argparse's sub-parsers never see them. Stops at ``--``."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest += argv[index:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS:
            if "=" in arg or index + 1 >= len(argv):
                front.append(arg)
            else:
                front += [arg, argv[index + 1]]
                index += 1
        elif arg in GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (skipping global options)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in GLOBAL_VALUE_OPTIONS:
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
        "5 backend unreachable, 130 interrupted, 141 output pipe closed (e.g. `| head`).",
    )
    parser.add_argument("--version", action="version", version=f"sfops {package_version()}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $SFOPS_CONFIG, else ~/.config/sfops/sfops.toml)",
    )
    parser.add_argument(
        "--env",
        metavar="NAME",
        default=None,
        help="the environment of the configuration to use (default: $SFOPS_ENV, else the "
        "file's default_env, else its only one)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="show everything, change nothing: mutating commands and keys do not exist",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Register only the command that was asked for (all of them for help and completion):
    # a command module may import heavy client libraries. None for a bare `sfops` (the TUI):
    # registering them all there took ~0.1 s of its start.
    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    chosen = chosen_command(args)
    if chosen is None and not {"-h", "--help"} & set(args):
        return parser
    from backends.registry import backends
    from tui.commands import backend as backend_commands

    declared = backends()
    commands = {b.command for b in declared}
    known = commands | set(COMMAND_MODULES)
    wanted = [chosen] if chosen in known else [
        "status", *(b.command for b in declared), *COMMAND_MODULES[1:]]
    for name in wanted:
        if name in commands:
            backend_commands.register(subparsers, next(b for b in declared if b.command == name))
            continue
        try:
            module = importlib.import_module(f"tui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tui.commands.{name}":
                continue  # not part of this build yet
            raise
        module.register(subparsers)
    return parser


class _RedactingStream:
    """A text stream that replaces every known secret value (:mod:`backends.secrets`) before
    writing: the last redaction of a command's output, whatever printed it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub_known(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """stdout and stderr of a command, redacted by known secret values until it returns.
    (Not the TUI's: Textual writes to the terminal itself, and its notifications are
    redacted by the app.)"""
    out, err = sys.stdout, sys.stderr
    sys.stdout = _RedactingStream(out)
    sys.stderr = _RedactingStream(err)
    try:
        yield
    except (KeyboardInterrupt, BrokenPipeError, SystemExit):
        raise
    except Exception:
        # A bug's traceback carries exception text too: printed here, redacted, rather than
        # by the interpreter after the streams are restored.
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        sys.stdout, sys.stderr = out, err


def main(argv: list[str] | None = None) -> int:
    # Start-up is some 1,000 module imports and the objects they make, nearly none of them
    # garbage: the cyclic collector's passes over them cost ~15 % of the start (measured:
    # 0.99 s -> 0.84 s of CPU for the TUI's imports). It is off until the command runs (the
    # TUI turns it back on before its first frame, see run_tui), on again whatever happens.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: list[str] | None) -> int:
    argv = hoist_global_options(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.config is None:
        from backends.config import default_config_path

        args.config = default_config_path()
    from backends.secrets import take_configured_env

    take_configured_env(Path(args.config))  # before any command imports a client library
    try:
        if getattr(args, "func", None) is None:
            from tui.commands.ui import run_tui

            return run_tui(args)
        gc.enable()
        with redacted_output():
            code = int(args.func(args))
            sys.stdout.flush()  # inside the try: a closed pipe must surface here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`sfops lab status --json | head`): end quietly. Python would
        # otherwise print a traceback, and again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
