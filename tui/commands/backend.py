"""`sfops <backend> status|<action> …`, generated from each backend's contract
(:mod:`backends.contract`): nothing here names a backend.

Every backend has ``status`` (``-o table|json|yaml``); every action has its target, its
parameters and ``--yes``, ``--json``, ``--force``, ``--dry-run``, and runs through the shared
runner (tui/commands/_action.py), as the TUI's keys and palette entries do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

from backends.safetext import LINE, TEXT, safe_text
from tui import exitcodes
from tui.commands._action import add_action_flags, config_error, load_config, run_action_command

if TYPE_CHECKING:
    from backends.actions import Action, ActionRunner
    from backends.config import SfopsConfig
    from backends.contract import ActionSpec, Backend, Param
    from backends.service import BackendService, BackendSummary
    from backends.snapshot import Snapshot

CLOSE_TIMEOUT = 3.0
OUTPUTS = ("table", "json", "yaml")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             backend: Backend) -> None:
    parser = subparsers.add_parser(backend.command, help=backend.help,
                                   description=backend.help)
    commands = parser.add_subparsers(dest=f"{backend.command}_command", required=True,
                                     metavar="COMMAND")
    status = commands.add_parser(
        "status", help=f"poll {backend.title} once and print its state",
        description=f"Poll {backend.title} once (the TUI's liveness rule). Exit 0 healthy, "
        "1 degraded, 2 configuration error, 5 unreachable.")
    add_output(status)
    status.add_argument("--timeout", type=float, default=backend.status_timeout, metavar="S",
                        help="time budget (default %(default)g)")
    for param in (*backend.options, *backend.status_params):
        add_param(status, param)
    status.set_defaults(func=partial(run_status, backend))
    for spec in backend.actions:
        action = commands.add_parser(spec.command, help=spec.help,
                                     description=spec.description or spec.help)
        if spec.target is not None:
            target = spec.target
            if target.option:
                action.add_argument(target.option, dest="target", required=True,
                                    type=target.type, metavar=target.metavar, help=target.help)
            else:
                action.add_argument("target", type=target.type, metavar=target.metavar,
                                    help=target.help)
        for param in (*backend.options, *spec.params):
            add_param(action, param)
        add_action_flags(action)
        action.set_defaults(func=partial(run_spec, backend, spec))


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help="output format (default %(default)s)")
    parser.add_argument("--json", dest="output", action="store_const", const="json",
                        help="the same as -o json")


def add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    if param.positional:
        parser.add_argument(param.name, type=param.type, metavar=param.metavar,
                            help=param.help)
        return
    flags = [param.flag] + ([param.short] if param.short else [])
    if param.type is bool:  # a flag (Kafka's `status --partitions`): no value
        parser.add_argument(*flags, dest=param.name, action="store_true", help=param.help)
        return
    parser.add_argument(*flags, dest=param.name, type=param.type, default=param.default,
                        required=param.required, metavar=param.metavar, help=param.help)


def _values(args: argparse.Namespace, params: Sequence[Param]) -> dict[str, Any]:
    return {p.name: getattr(args, p.name, p.default) for p in params}


# --------------------------------------------------------------------------- actions


class CliContext:
    """The ActionContext of one CLI run: services are built on demand and closed on exit."""

    def __init__(self, config: SfopsConfig, runner: ActionRunner, stack: AsyncExitStack,
                 configure: Callable[[SfopsConfig], SfopsConfig] = lambda c: c) -> None:
        self.config = configure(config)
        self.runner = runner
        self._stack = stack
        self._services: dict[str, BackendService] = {}

    def service(self, backend: str) -> BackendService:
        from backends.config import ConfigError
        from backends.registry import backend as find

        if backend not in self._services:
            declared = find(backend)
            if declared is None:
                raise ConfigError(f"{self.config.path}: no backend {backend!r}")
            service = declared.service_for(self.config)
            self._stack.push_async_callback(_close, service)
            self._services[backend] = service
        return self._services[backend]

    def status(self, backend: str) -> Any:
        return None

    async def fresh_status(self, backend: str) -> Any:
        """One refresh of ``backend`` under the liveness rule, for an action's blast-radius
        check (the CLI has no last status): the service the action uses, kept open. What an
        unreachable backend could still say (PostgreSQL: every member down) is its value."""
        from backends.service import BackendUnreachable, observe

        try:
            return await observe(self.service(backend))
        except BackendUnreachable as exc:
            if exc.value is not None:
                return exc.value
            raise


def run_spec(backend: Backend, spec: ActionSpec, args: argparse.Namespace) -> int:
    options = _values(args, backend.options)
    params = {**options, **_values(args, spec.params)}
    target = getattr(args, "target", None)

    async def build(config: SfopsConfig, runner: ActionRunner, stack: AsyncExitStack) -> Action:
        runner.check_allowed(spec.action_class())
        context = CliContext(config, runner, stack,
                             lambda c: backend.configured(c, options))
        from tui.commands.timeline import watch_actions

        watch_actions(context, stack)  # the status before and after, for the timeline
        return spec.make(context, target, params)

    return run_action_command(args, spec.action_class(), build)


# --------------------------------------------------------------------------- status


def run_status(backend: Backend, args: argparse.Namespace) -> int:
    from backends.config import ConfigError

    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    options = _values(args, (*backend.options, *backend.status_params))
    try:
        service = backend.service_for(backend.configured(config, options))
    except ConfigError as exc:
        print(config_error(exc), file=sys.stderr)
        return exitcodes.USAGE
    snapshot, summary = asyncio.run(observe_once(
        service, timeout=args.timeout, secrets=config.secrets()))
    from backends.snapshot import Health

    value, error, taken_at = snapshot.value, snapshot.error, snapshot.taken_at.isoformat()
    if error is not None:
        code = exitcodes.UNREACHABLE
    else:
        code = exitcodes.OK if summary.health is Health.OK else exitcodes.DEGRADED
    if args.output == "table":
        print_status(backend, value, summary, options, sys.stdout)
        return code
    print_document(status_document(backend, value, error, summary, taken_at, code),
                   args.output, sys.stdout)
    return code


def print_document(data: Any, output: str, out: TextIO) -> None:
    """JSON on one line, or YAML (the same data: what JSON can carry).

    JSON keeps every string as the server sent it, escaped by JSON itself: ``ensure_ascii``
    (the default) writes every control, C1, format and bidi character as ``\\uXXXX``
    (without it, C1 controls such as CSI U+009B and bidi overrides would reach the terminal
    raw). YAML is for people: its strings go through :func:`safe_text` (no length cap), as
    PyYAML with ``allow_unicode`` writes format and bidi characters raw."""
    if output == "json":
        print(json.dumps(data, default=str), file=out)
        return
    import yaml

    print(yaml.safe_dump(safe_document(json.loads(json.dumps(data, default=str))),
                         sort_keys=False, allow_unicode=True), end="", file=out)


def safe_document(data: Any) -> Any:
    """Every string of a JSON-like document (keys too) through :func:`safe_text`."""
    if isinstance(data, str):
        return safe_text(data, None, lines=True)
    if isinstance(data, dict):
        return {safe_document(k): safe_document(v) for k, v in data.items()}
    if isinstance(data, list):
        return [safe_document(v) for v in data]
    return data


async def observe_once(service: BackendService, *, timeout: float,  # noqa: ASYNC109
                       secrets: Sequence[Any]) -> tuple[Snapshot[Any], BackendSummary]:
    """One refresh under the liveness rule, as the TUI does, then the service is closed. A
    failed snapshot keeps what the backend could still say (PostgreSQL: every member marked
    down) as its value, for a one-shot status to print."""
    from backends.resilience import describe_error, with_timeout
    from backends.secrets import redact_known
    from backends.service import BackendUnreachable, observe, summary_of
    from backends.snapshot import Snapshot

    snapshot: Snapshot[Any]
    try:
        value = await with_timeout(observe(service), timeout, f"{service.title} status")
        snapshot = Snapshot.success(value)
    except BackendUnreachable as exc:
        snapshot = Snapshot.failure(redact_known(describe_error(exc), secrets), previous=None)
        if exc.value is not None:
            snapshot = replace(snapshot, value=exc.value)
    except Exception as exc:
        snapshot = Snapshot.failure(redact_known(describe_error(exc), secrets), previous=None)
    finally:
        await _close(service)
    return snapshot, summary_of(service, snapshot)


async def _close(service: BackendService) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await service.close()
    except Exception:  # noqa: S110 - closing a broken client must not change the verdict
        pass


def status_document(backend: Backend, value: Any, error: str | None, summary: BackendSummary,
                    taken_at: str, code: int) -> dict[str, Any]:
    """One shape for every backend; ``status`` is the backend's own, redacted by its
    contract."""
    return {
        "backend": backend.name,
        "title": backend.title,
        "health": summary.health.value,
        "exit_code": code,
        "reachable": error is None,
        "error": error,
        "taken_at": taken_at,
        "figures": [{"label": f.label, "value": f.value, "health": f.health.value}
                    for f in summary.figures],
        "alerts": [{"key": a.key, "severity": a.severity.name.lower(),
                    "unreachable": a.unreachable, "message": a.message}
                   for a in summary.alerts],
        "status": backend.status_json(value) if value is not None else None,
    }


def print_status(backend: Backend, value: Any, summary: BackendSummary,
                 options: Mapping[str, Any], out: TextIO) -> None:
    figures = "  ".join(f"{f.label} {f.value}" for f in summary.figures)
    print(safe_text(f"{backend.title}: {summary.health.value.upper()}  {figures}".rstrip(),
                    TEXT), file=out)
    if value is not None:
        text = _status_text(backend, value, summary, options)
        if text:
            print(text.rstrip("\n"), file=out)
    print("", file=out)
    print("What is wrong now", file=out)
    from backends.service import wrong_now

    alerts = wrong_now([summary])
    if not alerts:
        print("ok        nothing is wrong right now", file=out)
    for alert in alerts:
        label = "DOWN" if alert.unreachable else alert.severity.name.lower()
        print(f"{label:<8}  {safe_text(alert.message, LINE)}", file=out)


def _status_text(backend: Backend, value: Any, summary: BackendSummary,
                 options: Mapping[str, Any]) -> str:
    """A backend's own text (its render module's ``status_text``), else its contract's plain
    table, else nothing beyond the figures."""
    from backends.registry import optional_module

    render = optional_module(f"tui.render.{backend.name}")
    custom = getattr(render, "status_text", None)
    if custom is not None:  # each status_text makes its outside text safe; this is the net
        return safe_text(str(custom(value, summary, options)), None, lines=True)
    if backend.rows is None:
        return ""
    from tui.render.cells import text_table

    return text_table(backend.columns, [row.cells for row in backend.rows(value)],
                      max_width=48)


