"""The backend contract: what one system (nginx, PostgreSQL, Kafka, Kubernetes, or a fifth)
declares once, and what the CLI and the TUI are generated from.

Each backend package has the same file roles — ``contract.py`` (this declaration, cheap to
import: it names everything lazily), ``service.py`` (the poller, the liveness rule,
``summarize``), ``model.py`` (the immutable status), ``actions.py`` — and one line in
:mod:`backends.registry`. Nothing under ``tui/`` names a backend: the ``sfops <command>``
sub-commands, the drill-down keys, the command palette and the help lines all come from the
:class:`ActionSpec` list here, and the same ``build`` is used by the CLI and the TUI, so the two
cannot drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from backends.actions import Action, ActionRunner
    from backends.config import SfopsConfig
    from backends.service import BackendService, BackendSummary


def lazy(path: str) -> Callable[..., Any]:
    """``"package.module:attribute"`` as a callable that imports on first call: declaring a
    backend must not load its client library (the kubernetes client alone takes a second)."""
    module_name, _, attribute = path.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attribute)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attribute
    return call


def service_factory(section: str, path: str) -> Callable[[SfopsConfig], BackendService | None]:
    """``build_service`` for a backend configured by ``[section]``: None when the section is
    absent — without importing the service module (nor its client library)."""
    build = lazy(path)

    def factory(config: SfopsConfig) -> BackendService | None:
        if getattr(config, section, None) is None:
            return None
        service: BackendService | None = build(config)
        return service

    return factory


def load(path: str) -> Any:
    """``"package.module:attribute"`` imported now."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Param:
    """One parameter of an action (a CLI option ``--name``; the TUI uses the default)."""

    name: str  # the keyword the build function receives; the flag is --name-with-dashes
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None
    required: bool = False  # required parameters make the action CLI-only (no TUI key)
    short: str | None = None  # e.g. "-n"
    # A CLI positional after the target (`scale DEPLOYMENT N`) instead of --name; set it
    # with required=True (a positional is always given, so the action is CLI-only).
    positional: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Target:
    """What an action acts on. The TUI passes the selected row's key, the CLI the operator's
    argument; the spec's ``build`` accepts both forms."""

    kind: str  # "member", "broker", "deployment", "node"
    metavar: str  # "MEMBER"
    help: str
    option: str | None = None  # given as this option (e.g. "--to") instead of positionally
    type: Callable[[str], Any] = str
    # Targets the command palette offers: (configuration, last status or None) → row keys.
    choices: Callable[[SfopsConfig, Any], Sequence[str]] = field(
        default=lambda config, status: ())


class ActionContext(Protocol):
    """What a spec's ``build`` may use. The TUI hands out its live services (their breakers
    and the last LSN seen are shared); the CLI builds them and closes them on exit."""

    @property
    def config(self) -> SfopsConfig: ...

    @property
    def runner(self) -> ActionRunner: ...

    def service(self, backend: str) -> BackendService:
        """The backend's service (raises ConfigError naming the missing section)."""
        ...

    def status(self, backend: str) -> Any:
        """The backend's last known status value, or None (the CLI has none)."""
        ...


BuildAction = Callable[["ActionContext", Any, Mapping[str, Any]], "Action"]


@dataclass(frozen=True)
class ActionSpec:
    """An action, declared once: ``sfops <backend> <command>``, a key on the drill-down screen
    (unless ``key`` is None or a parameter is required), palette entries and a help line."""

    name: str  # the audit name, e.g. "nginx.drain" (= the Action class's ``name``)
    command: str  # the CLI word, e.g. "drain"
    label: str  # "Drain member"
    help: str  # one line: what it does
    action: str  # "backends.nginx.actions:DrainMember" — imported only to run
    build: BuildAction  # (context, target, params) → Action, built through context.runner
    key: str | None = None
    target: Target | None = None
    params: tuple[Param, ...] = ()
    destructive: bool = False  # confirmation asks for the target's name (= the class's flag)
    mutating: bool = True
    description: str = ""  # the CLI's longer description (defaults to help)
    # What to check when a run stopped without an outcome (SIGKILL, power cut): shown by
    # `sfops audit`, the TUI and the start-up warning. "{target}" is replaced by the target.
    if_interrupted: str = ""

    @property
    def in_tui(self) -> bool:
        return self.key is not None and not any(p.required for p in self.params)

    def make(self, context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
        """``build``, then hand a mutating action the other layers' view for its
        blast-radius checks (backends.topology): the TUI's last statuses, or the CLI's
        one-shot polls. Every front end builds actions through this."""
        action = self.build(context, target, params)
        if getattr(action, "mutating", False):
            from backends.topology.view import LayerView

            action.layers = LayerView.of(context)
        return action

    def action_class(self) -> type[Action]:
        cls: type[Action] = load(self.action)
        return cls

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


@dataclass(frozen=True)
class Row:
    """One row of a generic table: a stable key (the action target) and plain cells.

    Cells are outside text: the TUI shows them as ``Text`` with control characters removed,
    never as markup."""

    key: str
    cells: tuple[str, ...]
    health: str = "ok"  # a :class:`~backends.snapshot.Health` value, for the row's style


@dataclass(frozen=True)
class Backend:
    """One system sfops watches and operates."""

    name: str  # the configuration section and the service name, e.g. "postgres"
    title: str  # "PostgreSQL"
    command: str  # the CLI word: "pg"
    help: str  # one line for `sfops --help`
    # configuration → its service, or None when the section is absent.
    build_service: Callable[[SfopsConfig], BackendService | None]
    # status value → JSON-ready data, secrets already redacted (callers never redact).
    status_json: Callable[[Any], Any]
    actions: tuple[ActionSpec, ...] = ()
    # The generic drill-down (a backend without a screen of its own) and the `status` table:
    # column titles, and status value → rows.
    columns: tuple[str, ...] = ()
    rows: Callable[[Any], Sequence[Row]] | None = None
    # (status value, summary) → the plain text of `sfops <command> status` (None: the table).
    status_text: Callable[[Any, BackendSummary], str] | None = None
    # Extra `status` options (e.g. Kafka's --partitions), passed to status_text as params.
    status_params: tuple[Param, ...] = ()
    status_timeout: float = 15.0
    # Options every `sfops <command> …` takes (Kubernetes: -n, --context) and how they adjust
    # the configuration before the service is built; actions also receive them as params.
    options: tuple[Param, ...] = ()
    configure: Callable[[SfopsConfig, Mapping[str, Any]], SfopsConfig] | None = None
    # The section parser of a backend registered at run time; a backend package's own is
    # ``backends/<name>/config.py:parse_section`` (found by the registry).
    parse_config: Callable[[Any, Mapping[str, Any]], Any] | None = None

    def spec(self, command: str) -> ActionSpec:
        for spec in self.actions:
            if spec.command == command:
                return spec
        raise KeyError(f"{self.name}: no action {command!r}")

    def service_for(self, config: SfopsConfig) -> BackendService:
        """The service, or ConfigError naming the missing section."""
        from backends.config import ConfigError

        service = self.build_service(config)
        if service is None:
            raise ConfigError(f"{config.path}: [{self.name}] section is missing")
        return service


    def configured(self, config: SfopsConfig, options: Mapping[str, Any]) -> SfopsConfig:
        return config if self.configure is None else self.configure(config, options)
