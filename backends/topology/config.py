"""The optional ``[topology]`` section: the links between layers that the servers' data cannot
show (docs/config-spec.md). Everything is optional; without the section sfops links what it can
by address (an nginx member's ``host:port`` against a pod's IP and ports)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from backends.config import DNS_LABEL, DNS_LABEL_RULE, ExecutorConfig, Reader

# Where a PostgreSQL member or a Kafka broker runs: "pg-1" (a [postgres.members] name) or
# "broker-N" (a Kafka node id).
BROKER_KEY = re.compile(r"broker-([0-9]{1,9})")
# Kubernetes object names (DNS-1123 subdomains).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SUBDOMAIN_RULE = "a Kubernetes object name (lowercase letters, digits, '-' and '.')"


@dataclass(frozen=True)
class TopologyConfig:
    # The Deployment that runs the API, "NAMESPACE/NAME" (None: the Deployments of the pods
    # that serve nginx members).
    api_deployment: tuple[str, str] | None = None
    # The PostgreSQL members the API's connection string lists (None: every configured one).
    api_databases: tuple[str, ...] | None = None
    # The Kafka topics the API writes (None: every topic that is not internal).
    api_topics: tuple[str, ...] | None = None
    # nginx member → the pod that serves it, (namespace or None, name), where addresses
    # cannot show it (a lab, hostNetwork, a NAT between nginx and the pods).
    member_pods: Mapping[str, tuple[str | None, str]] = field(
        default_factory=lambda: MappingProxyType({}))
    # "pg-1" / "broker-2" → the Kubernetes node it runs on.
    placement: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def broker_node(self, broker_id: int) -> str | None:
        return self.placement.get(f"broker-{broker_id}")


def topology_of(config: Any) -> TopologyConfig:
    """The configuration's ``[topology]``, or the defaults when the section is absent."""
    section = getattr(config, "topology", None) if config is not None else None
    return section if isinstance(section, TopologyConfig) else TopologyConfig()


def _raw_names(root: Reader, section: str, table: str) -> set[str] | None:
    """The names under ``[section.table]`` as written (None: no such section)."""
    data = root.data.get(section)
    if not isinstance(data, Mapping):
        return None
    inner = data.get(table)
    return set(inner) if isinstance(inner, Mapping) else set()


def _pod_name(table: Reader, key: str, value: str) -> tuple[str | None, str] | None:
    namespace, sep, name = value.rpartition("/")
    if not sep:
        namespace, name = "", value
    if namespace and DNS_LABEL.fullmatch(namespace) is None:
        table.fail(key, f"{json.dumps(value)}: the namespace must be {DNS_LABEL_RULE}")
        return None
    if not name or len(name) > 253 or _SUBDOMAIN.fullmatch(name) is None:
        table.fail(key, f"{json.dumps(value)}: expected POD or NAMESPACE/POD, "
                   f"{SUBDOMAIN_RULE}")
        return None
    return (namespace or None, name)


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]
                  ) -> TopologyConfig | None:
    table = root.table("topology")
    if table is None:
        return None
    deployment: tuple[str, str] | None = None
    text = table.string("api_deployment", None)
    if text is not None:
        parsed = _pod_name(table, "api_deployment", text)
        if parsed is not None and parsed[0] is None:
            table.fail("api_deployment", f"{json.dumps(text)}: expected NAMESPACE/DEPLOYMENT")
        elif parsed is not None:
            deployment = (str(parsed[0]), parsed[1])
    pg_members = _raw_names(root, "postgres", "members")
    databases = table.strings("api_databases", None)
    if databases is not None:
        if not databases:
            table.fail("api_databases", "must list at least one [postgres.members] name")
        for name in databases:
            if pg_members is None or name not in pg_members:
                known = ", ".join(sorted(pg_members or ())) or "none: no [postgres] section"
                table.fail("api_databases", f"{json.dumps(name)} is not a [postgres.members] "
                           f"name (configured: {known})")
    topics = table.strings("api_topics", None)
    member_pods: dict[str, tuple[str | None, str]] = {}
    nginx_members = _raw_names(root, "nginx", "members")
    for member in table.subtables("members"):
        if nginx_members is None or member.name not in nginx_members:
            known = ", ".join(sorted(nginx_members or ())) or "none: no [nginx] section"
            member.problems.append(f"{member.file}: [{member.prefix}]: not an "
                                   f"[nginx.members] name (configured: {known})")
        pod = member.string("pod")
        if pod:
            parsed_pod = _pod_name(member, "pod", pod)
            if parsed_pod is not None:
                member_pods[member.name] = parsed_pod
        member.finish()
    placement: dict[str, str] = {}
    placed = table.table("placement")
    if placed is not None:
        for key in placed.data:
            node = placed.string(key)
            if not BROKER_KEY.fullmatch(key) and (pg_members is None or key not in pg_members):
                known = ", ".join(sorted(pg_members or ())) or "none"
                placed.fail(key, f"expected a [postgres.members] name (configured: {known}) "
                            "or broker-N (a Kafka node id)")
            elif node and (len(node) > 253 or _SUBDOMAIN.fullmatch(node) is None):
                placed.fail(key, f"{json.dumps(node)} is not a node name ({SUBDOMAIN_RULE})")
            elif node:
                placement[key] = node
        placed.finish()
    config = TopologyConfig(
        api_deployment=deployment,
        api_databases=databases,
        api_topics=topics,
        member_pods=MappingProxyType(member_pods),
        placement=MappingProxyType(placement),
    )
    table.finish()
    return config
