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
class PostgresConfig:
    dbname: str
    user: str
    members: Mapping[str, PostgresMember]
    password: Secret | None = None
    connect_timeout: float = 3.0
    statement_timeout: float = 5.0
    max_lag_on_failover: int = 1048576


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
    )
    table.finish()
    return config
