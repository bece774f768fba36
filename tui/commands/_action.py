"""Run one Action from the command line: read-only guard, preflight, confirmation, progress,
outcome (text or JSON) and exit code. Every backend's action commands (nginx, pg, kafka, k8s)
use this, so they behave alike and run through the same ActionRunner as the TUI.

Usage in a command module::

    def register(subparsers):
        p = ...add_parser("drain")
        add_action_flags(p)
        p.set_defaults(func=lambda args: run_action_command(args, DrainMember, build))

    async def build(config, runner, stack) -> Action:
        service = build_service(config); stack.push_async_callback(service.close)
        return runner.build(DrainMember, service, args.member)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO

from backends.actions import (
    Action,
    ActionRunner,
    CheckResult,
    CheckStatus,
    Outcome,
    ReadOnlyError,
    RunResult,
    Step,
    close_quietly,
    refusing,
)
from backends.audit import AuditLog
from backends.config import ConfigError, SfopsConfig, load
from backends.safetext import TEXT, safe_text
from tui import exitcodes

BuildAction = Callable[[SfopsConfig, ActionRunner, AsyncExitStack], Awaitable[Action]]

OUTCOME_EXIT = {
    Outcome.SUCCEEDED: exitcodes.OK,
    Outcome.FAILED: exitcodes.DEGRADED,
    Outcome.REFUSED: exitcodes.REFUSED,
    Outcome.CANCELLED: exitcodes.INTERRUPTED,
    Outcome.INTERRUPTED: exitcodes.INTERRUPTED,
}
CHECK_MARK = {CheckStatus.PASS: "ok  ", CheckStatus.WARN: "WARN", CheckStatus.FAIL: "FAIL"}


def add_action_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask for confirmation (runbooks, scripts)")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome record as JSON on stdout")
    parser.add_argument("--force", action="store_true",
                        help="run even if a preflight check fails (recorded in the audit log)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the preflight and print exactly what would change; nothing "
                        "is changed (exit 0, or 3 when the preflight refuses)")


def load_config(args: argparse.Namespace, err: TextIO | None = None) -> SfopsConfig | None:
    """The configuration, or None after printing the error (callers exit USAGE). The
    ``--read-only`` flag is the file's ``read_only = true``: the same identities follow."""
    try:
        config = load(args.config, env=chosen_env(args))
    except ConfigError as exc:
        print(config_error(exc), file=err or sys.stderr)
        return None
    return config.as_read_only() if getattr(args, "read_only", False) else config


def chosen_env(args: argparse.Namespace) -> str | None:
    """The environment named on the command line (``--env``), else ``$SFOPS_ENV``, else None
    (the file's default)."""
    from backends.config import default_env

    return getattr(args, "env", None) or default_env()


def config_error(exc: ConfigError) -> str:
    """A configuration error as printed: its lines may quote values from the file."""
    return f"sfops: configuration error:\n{safe_text(str(exc), None, lines=True)}"


def read_only(args: argparse.Namespace, config: SfopsConfig) -> bool:
    return bool(getattr(args, "read_only", False) or config.sfops.read_only)


def make_runner(args: argparse.Namespace, config: SfopsConfig) -> ActionRunner:
    from backends.locks import manager_for
    from backends.writepath.action import write_path_check

    ro = read_only(args, config)
    return ActionRunner(AuditLog(config.sfops.audit_log, env=config.env), read_only=ro,
                        secrets=config.secrets(), locks=manager_for(config),
                        write_path=None if ro else write_path_check(config))


def check_line(check: CheckResult) -> str:
    detail = f" — {check.detail}" if check.detail else ""
    return safe_text(f"  [{CHECK_MARK[check.status]}] {check.name}{detail}", TEXT)


def result_json(result: RunResult) -> dict[str, Any]:
    return {
        "action": result.action,
        "target": result.target,
        "outcome": result.outcome.value,
        "ok": result.ok,
        "error": result.error,
        "forced": result.forced,
        "preflight": [c.to_json() for c in result.preflight],
        "verify": [c.to_json() for c in result.verify],
        "steps": result.steps,
        "duration_s": round(result.duration_s, 3),
        "started_at": result.started_at,
        # The canary after the action (issue #17); ok false: "done, but users cannot write".
        "write_path": None if result.write_path is None else result.write_path.to_json(),
    }


def confirm(action: Action, *, stdin: TextIO, err: TextIO) -> bool:
    """Ask on stderr; destructive actions need the target's name typed back."""
    phrase = action.confirmation_phrase
    if phrase is not None:
        print(f"This is destructive. Type {phrase!r} to confirm (anything else cancels): ",
              end="", file=err, flush=True)
    else:
        print("Proceed? [y/N] ", end="", file=err, flush=True)
    answer = stdin.readline()
    if not answer:
        print("", file=err)  # EOF: no answer is not a yes
        return False
    answer = answer.strip()
    return answer == phrase if phrase is not None else answer.lower() in ("y", "yes")


async def confirm_async(action: Action, *, stdin: TextIO, err: TextIO) -> bool:
    """:func:`confirm`, read in a daemon thread: the event loop goes on meanwhile (the
    target's Lease is renewed while the operator reads the preflight), and a Ctrl-C never
    waits for a line that will not come."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool | BaseException) -> None:
        if answer.done():
            return
        if isinstance(value, BaseException):
            answer.set_exception(value)
        else:
            answer.set_result(value)

    def read() -> None:
        try:
            result: bool | BaseException = confirm(action, stdin=stdin, err=err)
        except Exception as exc:
            result = exc
        try:
            loop.call_soon_threadsafe(settle, result)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    threading.Thread(target=read, name="sfops-confirm", daemon=True).start()
    return await answer


async def run_action(
    args: argparse.Namespace,
    config: SfopsConfig,
    build: BuildAction,
    *,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    runner = make_runner(args, config)

    def progress(step: Step) -> None:
        fraction = f"[{step.fraction * 100:3.0f}%] " if step.fraction is not None else ""
        print(safe_text(f"  {fraction}{step.message}", TEXT), file=err, flush=True)

    warn_unfinished(runner.audit, err)
    async with AsyncExitStack() as stack:
        try:
            action = await build(config, runner, stack)
        except ReadOnlyError as exc:
            print(f"sfops: {safe_text(str(exc), TEXT)}", file=err)
            return exitcodes.READ_ONLY
        except ConfigError as exc:
            print(config_error(exc), file=err)
            return exitcodes.USAGE
        except ValueError as exc:  # a target or parameter the backend cannot accept
            print(f"sfops: {safe_text(str(exc), TEXT)}", file=err)
            return exitcodes.USAGE
        try:
            return await _run_built(action, args, runner, stdin, out, err, progress)
        finally:
            await close_quietly(action)  # the runner closes it too; close() is idempotent
    raise AssertionError("unreachable")  # pragma: no cover - the with block always returns


def warn_unfinished(audit: AuditLog, err: TextIO) -> None:
    """Actions that started and have no outcome (interrupted, or running elsewhere): one
    warning line each, with what to check, before anything else happens."""
    from backends.intent import warnings

    try:
        items = audit.unfinished()
    except OSError as exc:
        print(f"sfops: warning: cannot read the audit log {audit.path}: "
              f"{exc.strerror or exc}", file=err)
        return
    for line in warnings(items):
        print(safe_text(f"sfops: warning: {line}", TEXT), file=err)


async def _run_built(action: Action, args: argparse.Namespace, runner: ActionRunner,
                     stdin: TextIO, out: TextIO, err: TextIO,
                     progress: Callable[[Step], None]) -> int:
    want_json = bool(getattr(args, "json", False))
    force = bool(getattr(args, "force", False))
    print(safe_text(action.describe(), TEXT), file=err)
    if getattr(args, "dry_run", False):
        return await _dry_run(action, runner, force, want_json, out, err)
    if getattr(args, "yes", False):
        result = await runner.run(action, force=force, on_step=progress)
        return _report(result, want_json, out, err)
    # Prepare once: the checks shown here are the ones the runner records (it re-reads only
    # the action's named critical conditions right before the change). The target's lock is
    # taken first and held through the confirmation to the end of the run.
    checks = await runner.prepare(action)
    print("Preflight:", file=err)
    for check in checks:
        print(check_line(check), file=err)
    if refusing(checks, force=force):
        result = await runner.run(action, force=force, preflight=checks)  # records the refusal
        return _report(result, want_json, out, err)
    if not await confirm_async(action, stdin=stdin, err=err):
        print("Not confirmed: nothing was changed.", file=err)
        return exitcodes.REFUSED
    result = await runner.run(action, force=force, on_step=progress, preflight=checks)
    return _report(result, want_json, out, err)


async def _dry_run(action: Action, runner: ActionRunner, force: bool, want_json: bool,
                   out: TextIO, err: TextIO) -> int:
    """Preflight plus exactly what would change; nothing mutates and nothing is recorded.
    The target's lock is looked at, not held: a busy target refuses (naming the holder) as
    the real action would, and a dry run never stands in a real action's way."""
    checks = await runner.peek_locks(action)
    if not any(c.status is CheckStatus.FAIL for c in checks):
        checks += await action.preflight()
    refused = bool(refusing(checks, force=force))  # a busy lock even with --force
    plan = [] if refused else await action.would_change()
    if want_json:
        print(json.dumps({"action": action.name, "target": action.target, "dry_run": True,
                          "would_refuse": refused, "preflight": [c.to_json() for c in checks],
                          "plan": plan}), file=out)
    else:
        print("Preflight:", file=err)
        for check in checks:
            print(check_line(check), file=err)
        if refused:
            print("Dry run: the preflight refuses; nothing would change.", file=out)
        else:
            print("Dry run: would change:", file=out)
            for line in plan:
                print(f"  {safe_text(line, None, lines=True)}", file=out)
    return exitcodes.REFUSED if refused else exitcodes.OK


def _report(result: RunResult, want_json: bool, out: TextIO, err: TextIO) -> int:
    from backends.writepath.action import done_but_cannot_write

    cannot_write = done_but_cannot_write(result.write_path) if result.ok else None
    if want_json:
        print(json.dumps(result_json(result)), file=out)
    else:
        if result.outcome is Outcome.REFUSED or not result.ok:
            for check in result.preflight:
                if check.status is not CheckStatus.PASS:
                    print(check_line(check), file=err)
        for check in result.verify:
            print(check_line(check), file=err)
        line = f"{result.action} {result.target}: {result.outcome.value}"
        line += f" in {result.duration_s:.1f} s"
        if result.error:
            line += f" — {result.error}"
        if cannot_write is not None:
            line += f"; {cannot_write}"
        elif result.write_path is not None:
            line += f"; {result.write_path.summary()}"
        print(safe_text(line, TEXT), file=out if result.ok and not cannot_write else err)
    # Done, but users cannot write: a runbook must not carry on as if all were well.
    return exitcodes.DEGRADED if cannot_write else OUTCOME_EXIT[result.outcome]


def run_action_command(
    args: argparse.Namespace, action_cls: type[Action], build: BuildAction
) -> int:
    """Entry point for a CLI action: exit codes per tui/exitcodes.py."""
    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    # Refused before any request is made (not even a preflight read).
    try:
        ActionRunner(AuditLog(config.sfops.audit_log, env=config.env),
                     read_only=read_only(args, config)).check_allowed(action_cls)
    except ReadOnlyError as exc:
        print(f"sfops: {safe_text(str(exc), TEXT)}", file=sys.stderr)
        return exitcodes.READ_ONLY
    try:
        return asyncio.run(run_action(args, config, build))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
