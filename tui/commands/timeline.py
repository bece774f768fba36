"""`sfops timeline [--since 30m] [--source S]… [--grep TEXT] [-o table|json|yaml]`: every
state change sfops observed and every action from the audit log, oldest first, with each
source's data age and the gaps when no sfops was watching.

It first takes one fresh reading of every configured backend (``--no-refresh``: not), so the
list is current; that reading is recorded like any observer's (backends.timeline.observer).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from backends.safetext import TEXT, safe_text
from tui import exitcodes

if TYPE_CHECKING:
    from backends.config import SfopsConfig
    from backends.timeline.observer import TimelineWriter
    from backends.timeline.store import TimelineStore
    from backends.timeline.view import Timeline
    from tui.commands.status import Result

T = TypeVar("T")

DEFAULT_SINCE = "30m"
READ_TIMEOUT = 10.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "timeline", help="what changed and who did what, in time order",
        description="Every state change sfops observed (nginx, PostgreSQL, Kafka, Kubernetes) "
        "and every action from the audit log, oldest first; each source's data age; the "
        "gaps when no sfops was watching. Takes one fresh reading first.")
    add_window(parser, DEFAULT_SINCE)
    parser.add_argument("--source", action="append", metavar="S", type=source_name,
                        help="only this source (repeatable): nginx, postgres (pg), kafka, "
                        "kubernetes (k8s), actions")
    parser.add_argument("--grep", default="", metavar="TEXT",
                        help="only entries containing TEXT (case-insensitive)")
    from tui.commands.backend import add_output

    add_output(parser)
    parser.set_defaults(func=run)


def add_window(parser: argparse.ArgumentParser, since: str) -> None:
    parser.add_argument("--since", default=since, type=since_type, metavar="WHEN",
                        help="how far back: a duration (90s, 30m, 2h, 1d) or an ISO 8601 time "
                        "(default %(default)s)")
    parser.add_argument("--no-refresh", action="store_true",
                        help="do not read the backends first: only what is recorded")
    parser.add_argument("--timeout", type=float, default=READ_TIMEOUT, metavar="S",
                        help="time budget of the fresh reading per backend (default "
                        "%(default)g)")


def since_type(text: str) -> str:
    """Checked now (argparse names the option on error), turned into a time when run."""
    since_epoch(text, time.time())
    return text


def since_epoch(text: str, now: float) -> float:
    match = _DURATION.match(text)
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 30m, 2h, 1d) nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give the time zone (e.g. Z or +02:00)")
    return moment.timestamp()


def source_name(text: str) -> str:
    from backends.registry import backend, backends
    from backends.timeline.view import ACTIONS

    if text == ACTIONS:
        return text
    found = backend(text)
    if found is None:
        known = ", ".join([*(b.name for b in backends()), ACTIONS])
        raise argparse.ArgumentTypeError(f"unknown source {text!r} (one of {known})")
    return found.name


@dataclass(frozen=True)
class Gathered(Generic[T]):
    config: SfopsConfig
    since: float
    found: T
    writer: TimelineWriter
    results: list[Result] | None


def gather_cli(args: argparse.Namespace,
               work_of: Callable[[SfopsConfig, float], Callable[[TimelineStore], T]], *,
               role: str, only: list[str] | None = None) -> Gathered[T] | int:
    """For a command: the configuration, one fresh reading (not with ``--no-refresh``) and
    ``work_of(config, since)`` run on the store — or, after printing why not, the exit
    code."""
    from tui.commands._action import load_config

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    since = since_epoch(args.since, time.time())
    found, writer, results = asyncio.run(gather(
        config, work_of(config, since), refresh=not args.no_refresh, timeout=args.timeout,
        role=role, only=only))
    if found is None:
        print(safe_text(f"sfops: {writer.last_error or 'the timeline store cannot be read'}",
                        TEXT), file=sys.stderr)
        return exitcodes.USAGE
    return Gathered(config, since, found, writer, results)


def run(args: argparse.Namespace) -> int:
    from backends.timeline.view import ACTIONS

    got = gather_cli(
        args, lambda config, since: lambda store: read_timeline(
            store, config, since, args.source, args.grep),
        role="timeline",
        only=None if args.source is None else [s for s in args.source if s != ACTIONS])
    if isinstance(got, int):
        return got
    config, since, writer = got.config, got.since, got.writer
    timeline = got.found[0]
    if args.output == "table":
        from tui.render.timeline import timeline_text

        if config.has_environments:
            print(f"environment: {config.env}")
        print(timeline_text(timeline.entries, timeline.ages, timeline.until))
        for problem in [*timeline.problems, *([writer.last_error] if writer.last_error else [])]:
            print(safe_text(f"sfops: warning: {problem}", TEXT), file=sys.stderr)
        return exitcodes.OK
    from backends.timeline.view import document
    from tui.commands.backend import print_document

    print_document(document(timeline.entries, timeline.ages, timeline.gaps, since=since,
                            until=timeline.until, env=config.env, store=str(writer.store.path),
                            error=writer.last_error, problems=timeline.problems),
                   args.output, sys.stdout)
    return exitcodes.OK


async def gather(config: SfopsConfig, work: Callable[[TimelineStore], T], *,
                 refresh: bool = True, timeout: float = READ_TIMEOUT,  # noqa: ASYNC109
                 role: str = "timeline", only: list[str] | None = None,
                 ) -> tuple[T | None, TimelineWriter, list[Result] | None]:
    """One fresh reading of the backends (``only`` these; none without ``refresh``),
    recorded as an observer's, then ``work`` on the store in the writer's thread (None when
    the store cannot be read: ``writer.last_error`` says why)."""
    from backends.timeline.observer import TimelineWriter

    writer = TimelineWriter.for_config(config, role=role)
    results = None
    try:
        if refresh:
            results = await read_all(config, writer, timeout=timeout, only=only)
        found = await writer.call(work)
    finally:
        await writer.stop()
    return found, writer, results


def watch_actions(context: Any, stack: AsyncExitStack) -> None:
    """Keep the status of a CLI action's backend before and after it (and record those
    readings on the timeline): backends.timeline.capture, through the action's own services.
    No span: a command that reads twice is not watching in between."""
    from backends.timeline.capture import ActionSnapshots
    from backends.timeline.observer import TimelineWriter

    writer = TimelineWriter.for_config(context.config, role="action")
    stack.push_async_callback(writer.stop)
    context.runner.observers.append(ActionSnapshots(writer, context, context.config))


async def read_all(config: SfopsConfig, writer: TimelineWriter, *, timeout: float,  # noqa: ASYNC109
                   only: list[str] | None = None) -> list[Result]:
    """Every configured backend (``only`` these) once, as `sfops status`, each reading
    recorded; the span covers the reading."""
    from backends.registry import backends
    from tui.commands.status import poll_all

    writer.start([b.name for b in backends() if getattr(config, b.name, None) is not None
                  and (only is None or b.name in only)])
    results = await poll_all(config, timeout=timeout, only=only)
    for backend, _, snapshot, summary in results:
        writer.record(backend.name, backend.title, snapshot, summary,
                      getattr(config, backend.name, None))
    return results


def read_timeline(store: TimelineStore, config: SfopsConfig, since: float,
                  sources: list[str] | None = None, text: str = "",
                  ) -> tuple[Timeline, list[dict[str, Any]]]:
    """In the writer's thread: the timeline from the store and this environment's audit
    log, and the log's raw records."""
    from backends.audit import AuditLog
    from backends.timeline.view import read_with_audit

    return read_with_audit(store, AuditLog(config.sfops.audit_log, env=config.env),
                           since=since, sources=sources, text=text)
