"""Load and validate the sfops TOML configuration (format: docs/config-spec.md).

Every problem is reported as ``<file>: <dotted.key>: <what is wrong>`` and all problems in a
file are collected before raising, so a user fixes a broken file in one pass. Unknown keys are
errors: a typo such as ``refresh_intreval`` must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "ExecutorConfig",
    "KafkaConfig",
    "KubernetesConfig",
    "LocalExecutorConfig",
    "NginxConfig",
    "NginxMember",
    "PostgresConfig",
    "PostgresMember",
    "Secret",
    "SfopsConfig",
    "SfopsSettings",
    "SshExecutorConfig",
    "default_config_path",
    "load",
    "parse",
    "redact_text",
    "redacted",
]

REDACTED = "***"


class ConfigError(Exception):
    """One or more configuration problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class Secret:
    """A string that never shows itself: ``str``/``repr``/f-strings give ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"'{REDACTED}'"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:  # pickling/copying would otherwise be the only leak path
        return (Secret, (self._value,))


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
    type: Literal["ssh"] = "ssh"


ExecutorConfig = LocalExecutorConfig | SshExecutorConfig


@dataclass(frozen=True)
class NginxMember:
    name: str
    address: str  # "host:port", exactly as written in the upstream's `server` line
    health_url: str | None = None


@dataclass(frozen=True)
class NginxConfig:
    executor: str
    config_file: Path
    upstream_name: str
    upstream_file: Path
    members: Mapping[str, NginxMember]
    nginx_binary: Path = Path("/usr/sbin/nginx")
    prefix: Path | None = None
    pid_file: Path | None = None
    access_log: Path | None = None
    stub_status_url: str | None = None
    url: str | None = None  # where clients reach nginx (liveness check after a reload)


@dataclass(frozen=True)
class PostgresMember:
    name: str
    host: str
    port: int = 5432
    executor: str = "local"
    data_dir: Path | None = None
    bin_dir: Path | None = None
    os_user: str | None = None


@dataclass(frozen=True)
class PostgresConfig:
    dbname: str
    user: str
    members: Mapping[str, PostgresMember]
    password: Secret | None = None
    connect_timeout: float = 3.0
    statement_timeout: float = 5.0
    max_lag_on_failover: int = 1048576


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    consumer_groups: tuple[str, ...] = ()
    request_timeout: float = 5.0
    # Leadership imbalance that a preferred election would fix is a warning above these
    # (backends.kafka.model.LeaderBalanceLimits says why both default to 0).
    max_not_preferred_leaders: int = 0
    max_leader_skew: int = 0


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: Path | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ("default",)
    # Credentials of the read-only and operator ServiceAccounts (deploy/k8s/rbac-sfops.yaml);
    # the lab writes both, for read-only-mode tests and least-privilege actions.
    readonly_kubeconfig: Path | None = None
    operator_kubeconfig: Path | None = None


@dataclass(frozen=True)
class SfopsConfig:
    path: Path
    sfops: SfopsSettings
    executors: Mapping[str, ExecutorConfig]
    nginx: NginxConfig | None = None
    postgres: PostgresConfig | None = None
    kafka: KafkaConfig | None = None
    kubernetes: KubernetesConfig | None = None

    def secrets(self) -> list[Secret]:
        """Every secret value in the configuration, for :func:`redact_text`."""
        found: list[Secret] = []
        if self.postgres is not None and self.postgres.password is not None:
            found.append(self.postgres.password)
        return found


# --------------------------------------------------------------------------- reading


class _Missing:
    pass


_MISSING: Any = _Missing()


def _type_name(value: object) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


class _Reader:
    """A view of one TOML table that records problems and rejects unknown keys."""

    def __init__(self, file: Path, prefix: str, data: Mapping[str, Any], problems: list[str]):
        self.file = file
        self.prefix = prefix
        self.data = data
        self.problems = problems
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

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
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.file.parent / path  # relative to the config file, per the spec
        return path

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
        resolved = (Path(v).expanduser() for v in values)
        return tuple(p if p.is_absolute() else self.file.parent / p for p in resolved)

    def table(self, name: str, *, required: bool = False) -> _Reader | None:
        self.seen.add(name)
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if required:
                self.fail(name, "required table is missing")
            return None
        if not isinstance(value, dict):
            self.fail(name, f"expected a table, got {_type_name(value)}")
            return None
        return _Reader(self.file, self.key(name), value, self.problems)

    def subtables(self, name: str, *, required: bool = False) -> list[_Reader]:
        """The named sub-tables of ``name`` (e.g. ``[nginx.members.api-1]``), in file order."""
        outer = self.table(name, required=required)
        if outer is None:
            return []
        readers: list[_Reader] = []
        for child in outer.data:
            reader = outer.table(child)
            if reader is not None:
                readers.append(reader)
        if required and not outer.data:
            self.fail(name, "must define at least one entry")
        return readers

    @property
    def name(self) -> str:
        return self.prefix.rsplit(".", 1)[-1]

    def finish(self) -> None:
        for unknown in sorted(set(self.data) - self.seen):
            self.fail(unknown, "unknown key")


_HOST_PORT = re.compile(
    r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d+)$"
)


def _check_host_port(reader: _Reader, name: str, value: str) -> None:
    match = _HOST_PORT.match(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        reader.fail(name, f'expected "host:port", got "{value}"')


def _check_url(reader: _Reader, name: str, value: str | None) -> None:
    if value is not None and not re.match(r"^https?://[^/\s]+", value):
        reader.fail(name, f'expected an http:// or https:// URL, got "{value}"')


# --------------------------------------------------------------------------- sections


def _settings(root: _Reader) -> SfopsSettings:
    table = root.table("sfops")
    if table is None:
        return SfopsSettings()
    defaults = SfopsSettings()
    settings = SfopsSettings(
        refresh_interval=table.number("refresh_interval", defaults.refresh_interval),
        audit_log=table.path("audit_log", defaults.audit_log),
        state_dir=table.path("state_dir", defaults.state_dir),
        read_only=table.boolean("read_only", defaults.read_only),
    )
    table.finish()
    return settings


def _executors(root: _Reader) -> dict[str, ExecutorConfig]:
    executors: dict[str, ExecutorConfig] = {}
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
            )
        else:
            if isinstance(kind, str) and kind:
                table.fail("type", f'expected "local" or "ssh", got "{kind}"')
            table.seen.update(table.data)  # don't pile unknown-key errors on a bad type
            continue
        table.finish()
        executors[table.name] = executor
    # "local" always exists: running on this host needs no configuration.
    executors.setdefault("local", LocalExecutorConfig(name="local"))
    return executors


def _check_executor_ref(reader: _Reader, name: str, value: str, known: Mapping[str, Any]) -> None:
    if value and value not in known:
        reader.fail(name, f'unknown executor "{value}" (configured: {", ".join(sorted(known))})')


def _nginx(root: _Reader, executors: Mapping[str, ExecutorConfig]) -> NginxConfig | None:
    table = root.table("nginx")
    if table is None:
        return None
    executor = table.string("executor", "local")
    _check_executor_ref(table, "executor", executor, executors)
    members: dict[str, NginxMember] = {}
    for member in table.subtables("members", required=True):
        address = member.string("address")
        if address:
            _check_host_port(member, "address", address)
        health_url = member.string("health_url", None)
        _check_url(member, "health_url", health_url)
        member.finish()
        members[member.name] = NginxMember(member.name, address, health_url)
    stub_status_url = table.string("stub_status_url", None)
    _check_url(table, "stub_status_url", stub_status_url)
    url = table.string("url", None)
    _check_url(table, "url", url)
    config = NginxConfig(
        executor=executor,
        nginx_binary=table.path("nginx_binary", Path("/usr/sbin/nginx")),
        prefix=table.path("prefix", None),
        config_file=table.path("config_file"),
        pid_file=table.path("pid_file", None),
        upstream_name=table.string("upstream_name"),
        upstream_file=table.path("upstream_file"),
        access_log=table.path("access_log", None),
        stub_status_url=stub_status_url,
        url=url,
        members=MappingProxyType(members),
    )
    table.finish()
    return config


def _password(table: _Reader) -> Secret | None:
    sources = [k for k in ("password_file", "password_env", "password") if k in table.data]
    if len(sources) > 1:
        table.fail(sources[1], f"conflicts with {sources[0]}: give only one password source")
    password_file = table.path("password_file", None)
    password_env = table.string("password_env", None)
    inline = table.string("password", None)
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as exc:
            # The path and the OS reason only: never the content.
            table.fail("password_file", f"cannot read {password_file}: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError:
            table.fail("password_file", f"{password_file} is not UTF-8 text")
            return None
        value = text.splitlines()[0] if text else ""
        if not value:
            table.fail("password_file", f"{password_file} is empty")
            return None
        return Secret(value)
    if password_env is not None:
        env_value = os.environ.get(password_env)
        if env_value is None:
            table.fail("password_env", f"environment variable {password_env} is not set")
            return None
        return Secret(env_value)
    if inline is not None:
        return Secret(inline)
    return None


def _postgres(root: _Reader, executors: Mapping[str, ExecutorConfig]) -> PostgresConfig | None:
    table = root.table("postgres")
    if table is None:
        return None
    members: dict[str, PostgresMember] = {}
    for member in table.subtables("members", required=True):
        executor = member.string("executor", "local")
        _check_executor_ref(member, "executor", executor, executors)
        members[member.name] = PostgresMember(
            name=member.name,
            host=member.string("host"),
            port=member.port("port", 5432),
            executor=executor,
            data_dir=member.path("data_dir", None),
            bin_dir=member.path("bin_dir", None),
            os_user=member.string("os_user", None),
        )
        member.finish()
    config = PostgresConfig(
        dbname=table.string("dbname"),
        user=table.string("user"),
        password=_password(table),
        connect_timeout=table.number("connect_timeout", 3.0),
        statement_timeout=table.number("statement_timeout", 5.0),
        max_lag_on_failover=table.integer("max_lag_on_failover", 1048576),
        members=MappingProxyType(members),
    )
    table.finish()
    return config


def _kafka(root: _Reader) -> KafkaConfig | None:
    table = root.table("kafka")
    if table is None:
        return None
    servers = table.string("bootstrap_servers")
    if servers:
        for server in servers.split(","):
            if _HOST_PORT.match(server.strip()) is None:
                table.fail("bootstrap_servers", f'expected "host:port[,host:port...]", '
                                                f'got "{server.strip()}"')
                break
    config = KafkaConfig(
        bootstrap_servers=servers,
        consumer_groups=table.strings("consumer_groups", ()),
        request_timeout=table.number("request_timeout", 5.0),
        max_not_preferred_leaders=table.integer("max_not_preferred_leaders", 0),
        max_leader_skew=table.integer("max_leader_skew", 0),
    )
    table.finish()
    return config


def _kubernetes(root: _Reader) -> KubernetesConfig | None:
    table = root.table("kubernetes")
    if table is None:
        return None
    namespaces = table.strings("namespaces", ("default",))
    if not namespaces:
        table.fail("namespaces", "must list at least one namespace")
    config = KubernetesConfig(
        kubeconfig=table.path("kubeconfig", None),
        context=table.string("context", None),
        namespaces=namespaces,
        readonly_kubeconfig=table.path("readonly_kubeconfig", None),
        operator_kubeconfig=table.path("operator_kubeconfig", None),
    )
    table.finish()
    return config


# --------------------------------------------------------------------------- public API


def default_config_path() -> Path:
    """``$SFOPS_CONFIG`` or ``$XDG_CONFIG_HOME/sfops/sfops.toml``."""
    if env := os.environ.get("SFOPS_CONFIG"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "sfops" / "sfops.toml"


def parse(text: str, path: Path) -> SfopsConfig:
    """Validate TOML ``text`` as if read from ``path`` (used for messages and relative paths)."""
    path = path.expanduser().absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line N, column M)".
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    problems: list[str] = []
    root = _Reader(path, "", data, problems)
    settings = _settings(root)
    executors = _executors(root)
    config = SfopsConfig(
        path=path,
        sfops=settings,
        executors=MappingProxyType(executors),
        nginx=_nginx(root, executors),
        postgres=_postgres(root, executors),
        kafka=_kafka(root),
        kubernetes=_kubernetes(root),
    )
    root.finish()
    if problems:
        raise ConfigError(problems)
    return config


def load(path: str | os.PathLike[str] | None = None) -> SfopsConfig:
    """Read and validate the configuration file; raises :class:`ConfigError`."""
    file = Path(path) if path is not None else default_config_path()
    file = file.expanduser().absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    return parse(text, file)


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def redacted(config: Any) -> Any:
    """A JSON-ready plain copy of a config (or any dataclass) with every Secret as ``***``."""
    return _plain(config)


# key=value conninfo (password=x, password='a b'), URLs (scheme://user:pw@host), env style.
_CONNINFO_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pgpassword)(\s*[=:]\s*)('(?:[^'\\]|\\.)*'|\S+)"
)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):([^@\s]*)@")


def redact_text(text: str, secrets: Iterable[Secret | str] = ()) -> str:
    """Scrub secret values and any ``password=...`` / ``user:pw@`` from a message."""
    values = sorted(
        {s.reveal() if isinstance(s, Secret) else s for s in secrets} - {""},
        key=len,
        reverse=True,  # longest first so a secret containing another is fully replaced
    )
    for value in values:
        text = text.replace(value, REDACTED)
    text = _CONNINFO_PASSWORD.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m[1]}:{REDACTED}@", text)
