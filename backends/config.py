"""Load and validate the sfops TOML configuration (format: docs/config-spec.md).

Every problem is reported as ``<file>: <dotted.key>: <what is wrong>`` and all problems in a
file are collected before raising, so a user fixes a broken file in one pass. Unknown keys are
errors: a typo such as ``refresh_intreval`` must not silently fall back to a default.

Several environments (production, staging) may share one file: :mod:`backends.environments`
says how they are written, merged and chosen; :func:`parse` parses the chosen one.

Names a section gives (members, executors: the sub-tables of :meth:`Reader.subtables`) are
identifiers — they become table keys, audit targets, lock names, palette titles, file names —
so they must match :data:`IDENTIFIER_RULE`: ``[postgres.members."pg 1"]: name must match
[A-Za-z0-9._-]{1,63}``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from backends.environments import (
    DEFAULT_ENV,
    ENV_KEYS,
    Environment,
    choose,
    declared,
    environment_settings,
    merge,
)
from backends.secrets import (
    REDACTED,
    Secret,
    redact_text,
    redact_url,
    redacted,
    remember,
    secrets_in,
    take_env,
)

if TYPE_CHECKING:
    from backends.writepath.config import VerifySettings

__all__ = [
    "DEFAULT_ENV",
    "REDACTED",
    "ConfigError",
    "Environment",
    "ExecutorConfig",
    "LocalExecutorConfig",
    "Reader",
    "Secret",
    "SfopsConfig",
    "SfopsSettings",
    "SshExecutorConfig",
    "default_config_path",
    "default_env",
    "load",
    "parse",
    "redact_text",
    "redact_url",
    "redacted",
]

IDENTIFIER_RULE = "[A-Za-z0-9._-]{1,63}"
IDENTIFIER = re.compile(IDENTIFIER_RULE)
# A Kubernetes namespace (or other object name that is a DNS-1123 label).
DNS_LABEL_RULE = "a DNS-1123 label ([a-z0-9-]{1,63}, starting and ending alphanumeric)"
DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(part: str) -> str:
    """One part of a dotted key as TOML writes it: bare, or quoted with escapes (so a key
    holding a control character is shown escaped, never raw)."""
    return part if _BARE_KEY.fullmatch(part) else json.dumps(part)


class ConfigError(Exception):
    """One or more configuration problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- dataclasses


def _state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "sfops"


@dataclass(frozen=True)
class SfopsSettings:
    refresh_interval: float = 2.0
    audit_log: Path = field(default_factory=lambda: _state_home() / "audit.jsonl")
    state_dir: Path = field(default_factory=lambda: _state_home())
    read_only: bool = False
    # The timeline store (<state_dir>/timeline.sqlite3, backends.timeline.store) keeps
    # changes this long and at most this many (the oldest go first).
    timeline_retention_hours: float = 168.0
    timeline_max_events: int = 100_000
    # Where the last-fallback lock files live (backends.locks.LocalFlockLocks): the state_dir
    # shared by every environment of the file, so two environments naming one target still
    # exclude each other. None: state_dir.
    lock_dir: Path | None = None


@dataclass(frozen=True)
class LocalExecutorConfig:
    name: str
    type: Literal["local"] = "local"


@dataclass(frozen=True)
class SshExecutorConfig:
    name: str
    host: str
    user: str
    known_hosts: Path
    port: int = 22
    client_keys: tuple[Path, ...] = ()
    connect_timeout: float = 5.0
    # ``jump``: the executors named in the file, in order; ``route``: the hops actually
    # connected through, first to last (the first hop's own route comes first), resolved when
    # the file is read, so an executor built from this value alone reaches its host.
    jump: tuple[str, ...] = ()
    route: tuple[SshExecutorConfig, ...] = ()
    type: Literal["ssh"] = "ssh"

    @property
    def connect_bound(self) -> float:
        """The longest connecting can take: each hop's ``connect_timeout``, then this one's."""
        return sum(hop.connect_timeout for hop in self.route) + self.connect_timeout


ExecutorConfig = LocalExecutorConfig | SshExecutorConfig


@dataclass(frozen=True)
class SfopsConfig:
    """The whole file: ``[sfops]``, ``[executors]`` and one section per configured backend,
    parsed by that backend (``config.nginx`` is ``sections["nginx"]``, None when absent)."""

    path: Path
    sfops: SfopsSettings
    executors: Mapping[str, ExecutorConfig]
    sections: Mapping[str, Any] = field(default_factory=dict)
    # The environment this configuration is (backends.environments), and every environment
    # the file declares, in file order (empty for a file without [environments]).
    env: str = DEFAULT_ENV
    environments: Mapping[str, Environment] = field(default_factory=dict)
    colour: str = "neutral"
    # ``[verify]``: the write-path canary, None when the file has no such section.
    verify: VerifySettings | None = None

    def __getattr__(self, name: str) -> Any:
        # Only for names that are not fields: a backend's section by its name.
        if name.startswith("_"):
            raise AttributeError(name)
        from backends.registry import section_names

        if name in self.sections or name in section_names():
            return self.sections.get(name)
        raise AttributeError(f"{type(self).__name__} has no section or attribute {name!r}")

    def as_read_only(self) -> SfopsConfig:
        """A copy in read-only mode (``sfops --read-only``): every service built from it uses
        the read-only identities, and no action or operator identity is ever loaded."""
        return replace(self, sfops=replace(self.sfops, read_only=True))

    def with_section(self, name: str, value: Any) -> SfopsConfig:
        """A copy with one section replaced (e.g. a CLI option adjusting it)."""
        return replace(self, sections=MappingProxyType({**self.sections, name: value}))

    def secrets(self) -> list[Secret]:
        """Every secret value in the configuration, for :func:`redact_text`."""
        return secrets_in(dict(self.sections))

    @property
    def has_environments(self) -> bool:
        """Whether the file declares named environments (else it is the implicit
        ``default``, and the TUI shows no environment badge)."""
        return bool(self.environments)


# --------------------------------------------------------------------------- reading


class _Missing:
    pass


_MISSING: Any = _Missing()


def _type_name(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


class Reader:
    """A view of one TOML table that records problems and rejects unknown keys."""

    def __init__(self, file: Path, prefix: str, data: Mapping[str, Any], problems: list[str],
                 *, name: str = ""):
        self.file = file
        self.prefix = prefix
        self.data = data
        self.problems = problems
        self.seen: set[str] = set()
        self._name = name  # this table's own key (the last part of ``prefix``, unquoted)

    def key(self, name: str) -> str:
        # A table merged from shared defaults and an environment knows where each key was
        # written (backends.environments.MergedTable): the message names that line.
        origins: Mapping[str, str] | None = getattr(self.data, "origins", None)
        prefix = origins.get(name, self.prefix) if origins is not None else self.prefix
        return f"{prefix}.{toml_key(name)}" if prefix else toml_key(name)

    def fail(self, name: str, what: str) -> None:
        self.problems.append(f"{self.file}: {self.key(name)}: {what}")

    def _get(self, name: str, default: Any, expected: str) -> Any:
        self.seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            self.fail(name, f"required key is missing (expected {expected})")
        return _MISSING

    def string(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default, "a string")
        if value is _MISSING:
            return default if default is not _MISSING else ""
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {_type_name(value)}")
            return ""
        if not value.strip():
            self.fail(name, "must not be empty")
        return value

    def number(self, name: str, default: Any = _MISSING, *, positive: bool = True) -> Any:
        value = self._get(name, default, "a number")
        if value is _MISSING:
            return default if default is not _MISSING else 1.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"expected a number, got {_type_name(value)}")
            return 1.0
        if positive and value <= 0:
            self.fail(name, f"must be > 0, got {value}")
        return float(value)

    def integer(self, name: str, default: Any = _MISSING, *, low: int = 0,
                high: int | None = None) -> Any:
        value = self._get(name, default, "an integer")
        if value is _MISSING:
            return default if default is not _MISSING else low
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"expected an integer, got {_type_name(value)}")
            return low
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            self.fail(name, f"must be {bound}, got {value}")
        return value

    def port(self, name: str, default: Any = _MISSING) -> Any:
        return self.integer(name, default, low=1, high=65535)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default, "a boolean")
        if value is _MISSING:
            return default if default is not _MISSING else False
        if not isinstance(value, bool):
            self.fail(name, f"expected a boolean (true/false), got {_type_name(value)}")
            return False
        return value

    def path(self, name: str, default: Any = _MISSING) -> Any:
        value = self.string(name, default)
        if not isinstance(value, str):
            return value  # the default (None or a Path)
        path = self._expand(name, value)
        if path is None:  # reported; the configuration is refused at the end
            return default if default is not _MISSING else Path()
        if not path.is_absolute():
            path = self.file.parent / path  # relative to the config file, per the spec
        return path

    def _expand(self, name: str, value: str) -> Path | None:
        """``value`` as a path with ``~`` expanded; None (and a problem) when it cannot be one:
        a NUL byte (no system call takes it) or ``~user`` with no such user."""
        if "\x00" in value:
            self.fail(name, "a path must not contain a NUL character")
            return None
        try:
            return Path(value).expanduser()
        except RuntimeError:  # Path.expanduser: "Could not determine home directory"
            self.fail(name, f'cannot expand "~" in "{value}": no such user or home directory')
            return None

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default, "an array of strings")
        if value is _MISSING:
            return default if default is not _MISSING else ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"expected an array of strings, got {_type_name(value)}")
            return ()
        return tuple(value)

    def paths(self, name: str) -> tuple[Path, ...]:
        values: tuple[str, ...] = self.strings(name, ())
        expanded = (self._expand(name, v) for v in values)
        resolved = [p for p in expanded if p is not None]
        return tuple(p if p.is_absolute() else self.file.parent / p for p in resolved)

    def table(self, name: str, *, required: bool = False) -> Reader | None:
        self.seen.add(name)
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(name, "required table is missing")
            return None
        if not isinstance(value, dict):
            self.fail(name, f"expected a table, got {_type_name(value)}")
            return None
        return Reader(self.file, self.key(name), value, self.problems, name=name)

    def subtables(self, name: str, *, required: bool = False) -> list[Reader]:
        """The named sub-tables of ``name`` (e.g. ``[nginx.members.api-1]``), in file order.
        Their names are identifiers (:meth:`check_name`)."""
        outer = self.table(name, required=required)
        if outer is None:
            return []
        readers: list[Reader] = []
        for child in outer.data:
            reader = outer.table(child)
            if reader is not None:
                reader.check_name()
                readers.append(reader)
        if required and not outer.data:
            self.fail(name, "must define at least one entry")
        return readers

    def secret(self, base: str) -> Secret | None:
        """A secret given as ``<base>_file`` (first line), ``<base>_env`` or ``<base>``
        (inline); at most one source. Problems name the path or variable, never the value."""
        table = self
        sources = [k for k in (f"{base}_file", f"{base}_env", base) if k in table.data]
        if len(sources) > 1:
            table.fail(sources[1], f"conflicts with {sources[0]}: give only one {base} source")
        password_file = table.path(f"{base}_file", None)
        password_env = table.string(f"{base}_env", None)
        inline = table.string(base, None)
        if password_file is not None:
            try:
                text = password_file.read_text(encoding="utf-8")
            except OSError as exc:
                # The path and the OS reason only: never the content.
                table.fail(f"{base}_file", f"cannot read {password_file}: {exc.strerror or exc}")
                return None
            except UnicodeDecodeError:
                table.fail(f"{base}_file", f"{password_file} is not UTF-8 text")
                return None
            value = text.splitlines()[0] if text else ""
            if not value:
                table.fail(f"{base}_file", f"{password_file} is empty")
                return None
            remember(value)
            return Secret(value)
        if password_env is not None:
            env_value = take_env(password_env)  # out of the environment children inherit
            if env_value is None:
                table.fail(f"{base}_env", f"environment variable {password_env} is not set")
                return None
            return Secret(env_value)
        if inline is not None:
            remember(inline)
            return Secret(inline)
        return None

    @property
    def name(self) -> str:
        return self._name

    def check_name(self) -> None:
        """This table's own name must be an identifier (:data:`IDENTIFIER_RULE`)."""
        if IDENTIFIER.fullmatch(self._name) is None:
            self.problems.append(f"{self.file}: [{self.prefix}]: name must match "
                                 f"{IDENTIFIER_RULE}")

    def identifier(self, name: str, value: str | None, *,
                   pattern: re.Pattern[str] = IDENTIFIER, rule: str = IDENTIFIER_RULE) -> None:
        """A string value that names something (a namespace, an upstream) must match
        ``pattern``; the error quotes the value escaped (json), never raw."""
        if value and pattern.fullmatch(value) is None:
            self.fail(name, f"{json.dumps(value)} must match {rule}")

    def finish(self) -> None:
        for unknown in sorted(set(self.data) - self.seen):
            self.fail(unknown, "unknown key")


# ASCII digits, at most five: \d would take other scripts' digits and any length (int() of
# 5,000 digits raises ValueError).
HOST_PORT = re.compile(
    r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})$"
)


def check_host_port(reader: Reader, name: str, value: str) -> None:
    match = HOST_PORT.match(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        reader.fail(name, f'expected "host:port", got "{value}"')


def check_url(reader: Reader, name: str, value: str | None) -> None:
    """An http(s) URL. A password in its userinfo is a secret like any other: remembered, so
    it is redacted wherever it might show up (messages name the URL with ``***``)."""
    if value is None:
        return
    from urllib.parse import urlsplit

    try:
        remember(urlsplit(value).password)
    except ValueError:
        pass
    if not re.match(r"^https?://[^/\s]+", value):
        reader.fail(name, f'expected an http:// or https:// URL, got "{redact_url(value)}"')


# --------------------------------------------------------------------------- sections


def _settings(root: Reader) -> SfopsSettings:
    table = root.table("sfops")
    if table is None:
        return SfopsSettings()
    defaults = SfopsSettings()
    settings = SfopsSettings(
        refresh_interval=table.number("refresh_interval", defaults.refresh_interval),
        audit_log=table.path("audit_log", defaults.audit_log),
        state_dir=table.path("state_dir", defaults.state_dir),
        read_only=table.boolean("read_only", defaults.read_only),
        timeline_retention_hours=table.number("timeline_retention_hours",
                                              defaults.timeline_retention_hours),
        timeline_max_events=table.integer("timeline_max_events", defaults.timeline_max_events,
                                          low=100),
    )
    table.finish()
    return settings


def _executors(root: Reader) -> dict[str, ExecutorConfig]:
    executors: dict[str, ExecutorConfig] = {}
    readers: dict[str, Reader] = {}
    for table in root.subtables("executors"):
        kind = table.string("type")
        executor: ExecutorConfig
        if kind == "local":
            executor = LocalExecutorConfig(name=table.name)
        elif kind == "ssh":
            executor = SshExecutorConfig(
                name=table.name,
                host=table.string("host"),
                port=table.port("port", 22),
                user=table.string("user"),
                client_keys=table.paths("client_keys"),
                known_hosts=table.path("known_hosts", Path("~/.ssh/known_hosts").expanduser()),
                connect_timeout=table.number("connect_timeout", 5.0),
                jump=table.strings("jump", ()),
            )
            readers[table.name] = table
        else:
            if isinstance(kind, str) and kind:
                table.fail("type", f'expected "local" or "ssh", got "{kind}"')
            table.seen.update(table.data)  # don't pile unknown-key errors on a bad type
            continue
        table.finish()
        executors[table.name] = executor
    # "local" always exists: running on this host needs no configuration.
    executors.setdefault("local", LocalExecutorConfig(name="local"))
    routes: dict[str, tuple[SshExecutorConfig, ...] | None] = {}
    for name in readers:
        route = _route(name, executors, readers, routes, ())
        if route is not None:
            executors[name] = replace(executors[name], route=route)  # type: ignore[arg-type]
    return executors


def _route(name: str, executors: Mapping[str, ExecutorConfig], readers: Mapping[str, Reader],
           done: dict[str, tuple[SshExecutorConfig, ...] | None], stack: tuple[str, ...]
           ) -> tuple[SshExecutorConfig, ...] | None:
    """The hops to ``name``'s host (ProxyJump semantics: ``jump = ["a", "b"]`` reaches a, then
    b through a, then the host through b). The first hop is reached as its own entry says
    (its own ``jump``, recursively); a later hop is reached through the one before it, so it
    must have no ``jump`` of its own. None (and a problem, reported once) for a cycle or a bad
    name."""
    if name in done:
        return done[name]
    done[name] = None  # until resolved: a problem below is reported once
    table = readers[name]
    config = executors[name]
    assert isinstance(config, SshExecutorConfig)
    hops: list[SshExecutorConfig] = []
    for index, hop_name in enumerate(config.jump):
        hop = executors.get(hop_name)
        if hop_name == name or hop_name in stack or hop_name in config.jump[:index]:
            cycle = " → ".join([*stack, name, hop_name])
            table.fail("jump", f"cycle in the jump-host chain: {cycle}")
            return None
        if not isinstance(hop, SshExecutorConfig):
            what = ("is local: a jump host must be an ssh executor" if hop is not None
                    else f"unknown executor (configured: {', '.join(sorted(executors))})")
            table.fail("jump", f'"{hop_name}" {what}')
            return None
        if index == 0:
            before = _route(hop_name, executors, readers, done, (*stack, name))
            if before is None:
                return None  # reported on the hop's own entry
            hops.extend(before)
        elif hop.jump:
            table.fail("jump", f'"{hop_name}" is reached through "{config.jump[index - 1]}" '
                       "here but has a jump of its own: list the whole chain in one place")
            return None
        hops.append(hop)
    done[name] = tuple(hops)
    return done[name]


def check_executor_ref(reader: Reader, name: str, value: str, known: Mapping[str, Any]) -> None:
    if value and value not in known:
        reader.fail(name, f'unknown executor "{value}" (configured: {", ".join(sorted(known))})')


# --------------------------------------------------------------------------- public API


def default_config_path() -> Path:
    """``$SFOPS_CONFIG`` or ``$XDG_CONFIG_HOME/sfops/sfops.toml``."""
    if env := os.environ.get("SFOPS_CONFIG"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "sfops" / "sfops.toml"


def parse(text: str, path: Path, env: str | None = None) -> SfopsConfig:
    """Validate TOML ``text`` as if read from ``path`` (used for messages and relative paths).

    ``env`` chooses one of the file's ``[environments]`` (None: its ``default_env``, else its
    only one); a file without ``[environments]`` is the one environment ``default``."""
    path = path.expanduser().absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line N, column M)".
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    problems: list[str] = []
    if "environments" not in data:
        if "default_env" in data:
            problems.append(f"{path}: default_env: only with [environments]")
        if env is not None and env != DEFAULT_ENV:
            raise ConfigError(f"{path}: unknown environment {json.dumps(env)}: the file "
                              f"declares no [environments] (its one environment is "
                              f'"{DEFAULT_ENV}")')
        return _parse_root(path, data, problems)
    environments, tables, default_name = declared(Reader(path, "", data, problems))
    if problems:
        raise ConfigError(problems)
    try:
        name = choose(env, default_name, environments)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    own = tables[name]
    shared = {k: v for k, v in data.items() if k not in ("environments", "default_env")}
    prefix = f"environments.{toml_key(name)}"
    merged = merge(shared, {k: v for k, v in own.items() if k not in ENV_KEYS}, "", prefix)
    config = _parse_root(path, merged, problems, env=name, environments=environments,
                         own=own)
    return config


def _parse_root(path: Path, data: Mapping[str, Any], problems: list[str], *,
                env: str = DEFAULT_ENV, environments: Mapping[str, Environment] | None = None,
                own: Mapping[str, Any] | None = None) -> SfopsConfig:
    """One environment's data (a whole file, or shared defaults with the environment's own
    table merged over them) → the configuration; raises when anything is wrong."""
    root = Reader(path, "", data, problems)
    settings = _settings(root)
    if own is not None:
        settings = environment_settings(settings, env, own,
                                        lambda what: problems.append(f"{path}: {what}"))
    executors = _executors(root)
    from backends.registry import section_parsers

    sections: dict[str, Any] = {}
    for name, parse_section in section_parsers():
        section = parse_section(root, executors)
        if section is not None:
            sections[name] = section
    from backends.writepath.config import parse_section as parse_verify

    verify = parse_verify(root, sections)
    described = (environments or {}).get(env)
    config = SfopsConfig(path=path, sfops=settings, executors=MappingProxyType(executors),
                         sections=MappingProxyType(sections), env=env,
                         environments=MappingProxyType(dict(environments or {})),
                         colour=described.colour if described else "neutral", verify=verify)
    root.finish()
    if problems:
        if own is not None:
            problems.append(f"{path}: (environment {json.dumps(env)}: its table "
                            f"[environments.{toml_key(env)}] merged over the shared sections)")
        raise ConfigError(problems)
    return config


def default_env() -> str | None:
    """``$SFOPS_ENV`` (None when unset or empty)."""
    return os.environ.get("SFOPS_ENV") or None


def load(path: str | os.PathLike[str] | None = None, env: str | None = None) -> SfopsConfig:
    """Read and validate the configuration file; raises :class:`ConfigError`. ``env``: the
    environment (None: ``$SFOPS_ENV``, else the file's default, see :func:`parse`)."""
    file = Path(path) if path is not None else default_config_path()
    file = file.expanduser().absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    return parse(text, file, env if env is not None else default_env())


