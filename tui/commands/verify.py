"""`sfops verify [-o table|json|yaml] [--timeout S]`: send the write-path canary through nginx
→ API → PostgreSQL → Kafka → consumer and print each hop with its time (backends.writepath).

A write (canary data only), so read-only mode refuses it (exit 4) before any request. No
confirmation: it changes nothing but its own canary row and record. One audit record per run
(action ``verify``). Exit 0 every hop passed, 1 a hop failed (named, with the server's
reason), 2 ``[verify]`` missing or disabled, 4 read-only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from backends.safetext import CELL, LINE, TEXT, safe_text
from tui import exitcodes

if TYPE_CHECKING:
    from backends.actions import RunResult, Step
    from backends.config import SfopsConfig
    from backends.writepath.canary import WritePathReport


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify", help="send a canary write through nginx, the API, PostgreSQL, Kafka and a "
        "consumer; print each hop's time",
        description="Send the write-path canary (an idempotent upsert of its own key, then a "
        "Kafka record with acks=all, then a consumer's record of it) through [verify] url and "
        "print each hop with its time; the first failing hop is named with the server's "
        "reason. Refused in read-only mode (it writes canary data). Exit 0 ok, 1 a hop "
        "failed, 2 [verify] missing or disabled, 4 read-only.",
    )
    from tui.commands.backend import add_output

    add_output(parser)
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="the whole canary, every attempt and hop (default: [verify] "
                        "timeout)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tui.commands._action import load_config, read_only

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    if read_only(args, config):
        from backends.writepath.action import READ_ONLY_REASON

        print(f"sfops: verify: refused, sfops is in read-only mode: {READ_ONLY_REASON}",
              file=sys.stderr)
        return exitcodes.READ_ONLY
    if (problem := _unusable(config)) is not None:
        print(f"sfops: {safe_text(config.path, None)}: {problem}", file=sys.stderr)
        return exitcodes.USAGE
    if args.timeout is not None and not 0 < args.timeout <= 300:
        print("sfops: verify: --timeout must be more than 0 and at most 300 seconds",
              file=sys.stderr)
        return exitcodes.USAGE
    try:
        result = asyncio.run(verify(args, config))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    report = result.write_path
    if args.output == "table":
        print_report(result, sys.stdout)
    else:
        from tui.commands._action import result_json
        from tui.commands.backend import print_document

        print_document({**result_json(result),
                        "write_path": None if report is None else report.to_json()},
                       args.output, sys.stdout)
    return exitcodes.OK if result.ok else exitcodes.DEGRADED


def _unusable(config: SfopsConfig) -> str | None:
    if config.verify is None:
        return ("[verify]: not configured: add [verify] with url = the address users write "
                "through (nginx's listen), e.g. url = \"http://127.0.0.1:15400\"")
    if not config.verify.enabled:
        return "[verify] enabled = false: the write-path canary is turned off"
    return None


async def verify(args: argparse.Namespace, config: SfopsConfig) -> RunResult:
    from backends.writepath.action import VerifyWritePath, write_path_check
    from tui.commands._action import make_runner

    runner = make_runner(args, config)
    check = write_path_check(config)
    assert check is not None  # configured, enabled and not read-only: checked above
    action = runner.build(VerifyWritePath, check.canary(args.timeout))
    print(safe_text(action.describe(), TEXT), file=sys.stderr)
    return await runner.run(action, on_step=_progress)


def _progress(step: Step) -> None:
    print(safe_text(f"  {step.message}", TEXT), file=sys.stderr, flush=True)


def report_rows(report: WritePathReport) -> list[tuple[str, str, str, str]]:
    """(hop, status, time, detail) per hop: pure, for the table."""
    return [(hop.label, hop.status.value, "" if hop.ms is None else f"{hop.ms:.1f} ms",
             hop.detail) for hop in report.hops]


def print_report(result: RunResult, out: TextIO) -> None:
    report = result.write_path
    if report is not None and report.hops:
        for hop, status, ms, detail in report_rows(report):
            line = f"{safe_text(hop, CELL):<22}{status:<12}{ms:>10}"
            if detail:
                line += f"  {safe_text(detail, LINE)}"
            print(line.rstrip(), file=out)
    line = f"verify: {'ok' if result.ok else result.outcome.value} in {result.duration_s:.1f} s"
    if report is not None:
        line += f" (canary {report.key}, {_attempts(report.attempts)})"
    if result.error:
        line += f" — {result.error}"
    print(safe_text(line, TEXT), file=out)


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


__all__ = ["register", "report_rows"]
