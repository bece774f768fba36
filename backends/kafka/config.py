"""The ``[kafka]`` configuration section, parsed by the backend that uses it (the generic
reader and ``[sfops]``/``[executors]`` live in :mod:`backends.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backends.config import HOST_PORT, ExecutorConfig, Reader
from backends.kafka.security import PLAINTEXT, KafkaSecurity, parse_security


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    consumer_groups: tuple[str, ...] = ()
    request_timeout: float = 5.0
    # Leadership imbalance that a preferred election would fix is a warning above these
    # (backends.kafka.model.LeaderBalanceLimits says why both default to 0).
    max_not_preferred_leaders: int = 0
    max_leader_skew: int = 0
    # TLS and SASL (security_protocol, sasl_*, ssl_* keys): every connection sfops makes to
    # this cluster uses them — polls, probes, elections and reassignments.
    security: KafkaSecurity = PLAINTEXT


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]) -> KafkaConfig | None:
    table = root.table("kafka")
    if table is None:
        return None
    servers = table.string("bootstrap_servers")
    if servers:
        for server in servers.split(","):
            if HOST_PORT.match(server.strip()) is None:
                table.fail("bootstrap_servers", f'expected "host:port[,host:port...]", '
                                                f'got "{server.strip()}"')
                break
    config = KafkaConfig(
        bootstrap_servers=servers,
        consumer_groups=table.strings("consumer_groups", ()),
        request_timeout=table.number("request_timeout", 5.0),
        max_not_preferred_leaders=table.integer("max_not_preferred_leaders", 0),
        max_leader_skew=table.integer("max_leader_skew", 0),
        security=parse_security(table),
    )
    table.finish()
    return config
