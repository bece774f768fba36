"""The ``[nginx]`` configuration section, parsed by the backend that uses it (the generic
reader and ``[sfops]``/``[executors]`` live in :mod:`backends.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from backends.config import ExecutorConfig, Reader, check_executor_ref, check_host_port, check_url


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


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]) -> NginxConfig | None:
    table = root.table("nginx")
    if table is None:
        return None
    executor = table.string("executor", "local")
    check_executor_ref(table, "executor", executor, executors)
    members: dict[str, NginxMember] = {}
    for member in table.subtables("members", required=True):
        address = member.string("address")
        if address:
            check_host_port(member, "address", address)
        health_url = member.string("health_url", None)
        check_url(member, "health_url", health_url)
        member.finish()
        members[member.name] = NginxMember(member.name, address, health_url)
    upstream_name = table.string("upstream_name")
    table.identifier("upstream_name", upstream_name)
    stub_status_url = table.string("stub_status_url", None)
    check_url(table, "stub_status_url", stub_status_url)
    url = table.string("url", None)
    check_url(table, "url", url)
    config = NginxConfig(
        executor=executor,
        nginx_binary=table.path("nginx_binary", Path("/usr/sbin/nginx")),
        prefix=table.path("prefix", None),
        config_file=table.path("config_file"),
        pid_file=table.path("pid_file", None),
        upstream_name=upstream_name,
        upstream_file=table.path("upstream_file"),
        access_log=table.path("access_log", None),
        stub_status_url=stub_status_url,
        url=url,
        members=MappingProxyType(members),
    )
    table.finish()
    return config
