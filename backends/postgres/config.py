"""The ``[postgres]`` configuration section, parsed by the backend that uses it (the generic
reader and ``[sfops]``/``[executors]`` live in :mod:`backends.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from backends.config import ExecutorConfig, Reader, check_executor_ref
from backends.secrets import Secret


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
class PgIdentity:
    """A role sfops connects as, and its password (None: libpq finds one, or none needed)."""

    user: str
    password: Secret | None = None


@dataclass(frozen=True)
class PostgresConfig:
    dbname: str
    user: str
    members: Mapping[str, PostgresMember]
    password: Secret | None = None
    connect_timeout: float = 3.0
    statement_timeout: float = 5.0
    max_lag_on_failover: int = 1048576
    # Least privilege, as [kubernetes] readonly_kubeconfig / operator_kubeconfig: polls (every
    # mode) connect as the read-only role, e.g. one granted pg_monitor; actions (promote,
    # CHECKPOINT, slots, pg_rewind's source) as the operator role. Either falls back to
    # ``user``/``password``.
    readonly_user: str | None = None
    readonly_password: Secret | None = None
    operator_user: str | None = None
    operator_password: Secret | None = None

    @property
    def readonly_identity(self) -> PgIdentity:
        """Who the polls connect as (in a read-only session, whoever it is)."""
        if self.readonly_user is None:
            return PgIdentity(self.user, self.password)
        return PgIdentity(self.readonly_user, self.readonly_password)

    @property
    def operator_identity(self) -> PgIdentity:
        """Who the actions connect as. Read-only mode never builds an action, so never uses
        it."""
        if self.operator_user is None:
            return PgIdentity(self.user, self.password)
        return PgIdentity(self.operator_user, self.operator_password)


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]) -> PostgresConfig | None:
    table = root.table("postgres")
    if table is None:
        return None
    members: dict[str, PostgresMember] = {}
    for member in table.subtables("members", required=True):
        executor = member.string("executor", "local")
        check_executor_ref(member, "executor", executor, executors)
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
        password=table.secret("password"),
        connect_timeout=table.number("connect_timeout", 3.0),
        statement_timeout=table.number("statement_timeout", 5.0),
        max_lag_on_failover=table.integer("max_lag_on_failover", 1048576),
        members=MappingProxyType(members),
        readonly_user=table.string("readonly_user", None),
        readonly_password=_role_secret(table, "readonly"),
        operator_user=table.string("operator_user", None),
        operator_password=_role_secret(table, "operator"),
    )
    table.finish()
    return config


def _role_secret(table: Reader, role: str) -> Secret | None:
    """``<role>_password[_file|_env]``, which only means something with ``<role>_user``."""
    secret = table.secret(f"{role}_password")
    if secret is not None and f"{role}_user" not in table.data:
        given = next(k for k in (f"{role}_password_file", f"{role}_password_env",
                                 f"{role}_password") if k in table.data)
        table.fail(given, f"needs {role}_user (whose password it is)")
    return secret
