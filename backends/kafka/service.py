"""The Kafka adapter: one poll reads the cluster metadata (brokers, every partition's leader,
replicas and ISR), the cluster description (id, racks, the metadata controller), each topic's
``min.insync.replicas`` (cached), consumer group state and lag, and probes each broker's
listener — concurrently, each bounded by a timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka.admin import ClusterMetadata  # type: ignore[attr-defined]

from backends.config import KafkaConfig, SfopsConfig
from backends.kafka.admin import ClusterInfo, KafkaAdmin, KafkaUnreachable
from backends.kafka.model import (
    BrokerState,
    GroupState,
    KafkaStatus,
    PartitionLag,
    PartitionState,
    TopicState,
    count_partitions,
    summarize_status,
    tally_brokers,
)
from backends.resilience import CircuitBreaker, RetryPolicy, call_read, describe_error
from backends.service import BackendSummary, summary_for_failure
from backends.snapshot import Snapshot

PROBE_TIMEOUT = 1.0
# One retry: a metadata request that lands on a broker that just died is answered by another.
METADATA_POLICY = RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.3, deadline=6.0)


def partitions_from_metadata(metadata: ClusterMetadata,
                             min_isr: dict[str, int | None]) -> tuple[TopicState, ...]:
    topics: list[TopicState] = []
    for name in sorted(metadata.topics):
        topic = metadata.topics[name]
        limit = min_isr.get(name)
        partitions = tuple(
            PartitionState(
                topic=name, partition=pid, leader=p.leader, replicas=tuple(p.replicas),
                isr=tuple(p.isrs), min_isr=limit,
                error=str(p.error) if p.error is not None else None,
            )
            for pid, p in sorted(topic.partitions.items())
        )
        topics.append(TopicState(
            name=name, partitions=partitions, internal=name.startswith("__"), min_isr=limit,
            error=str(topic.error) if topic.error is not None else None,
        ))
    return tuple(topics)


async def _probe(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class KafkaService:
    """:class:`~backends.service.BackendService` for one Kafka cluster."""

    name = "kafka"
    title = "Kafka"

    def __init__(self, config: KafkaConfig, state_dir: Any = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.admin = KafkaAdmin(config.bootstrap_servers, config.request_timeout)
        self.breaker: CircuitBreaker | None = CircuitBreaker(
            "kafka", failure_threshold=3, reset_timeout=10.0)
        # Brokers seen in an earlier poll: a killed broker drops out of the metadata, but the
        # operator must still see it (as down), with the address it had.
        self.known_brokers: dict[int, BrokerState] = {}

    async def metadata(self) -> ClusterMetadata:
        return await call_read(self.admin.metadata, METADATA_POLICY, what="kafka metadata",
                               breaker=self.breaker)

    async def _groups(self) -> tuple[list[GroupState], list[str]]:
        problems: list[str] = []
        group_ids = list(self.config.consumer_groups)
        if not group_ids:
            try:
                group_ids = await self.admin.list_group_ids()
            except Exception as exc:
                return [], [f"consumer groups: {describe_error(exc)}"]
        results = await asyncio.gather(*(self._group(g) for g in group_ids))
        return list(results), problems

    async def _group(self, group_id: str) -> GroupState:
        try:
            (state, members, assigned), committed = await asyncio.gather(
                self.admin.describe_group(group_id), self.admin.committed_offsets(group_id))
            # Assigned but never committed partitions count too (their lag is unknown).
            keys = sorted(set(committed) | assigned)
            latest = await self.admin.latest_offsets(keys)
        except Exception as exc:
            return GroupState(group_id, "UNKNOWN", 0, (), describe_error(exc))
        lags = tuple(PartitionLag(t, p, committed.get((t, p)), latest.get((t, p)))
                     for t, p in keys)
        return GroupState(group_id, state, members, lags)

    async def poll(self) -> KafkaStatus:
        started = time.monotonic()
        cluster_task = asyncio.ensure_future(self.admin.describe_cluster())
        groups_task = asyncio.ensure_future(self._groups())
        try:
            metadata = await self.metadata()  # without it we know nothing: the poll fails
        except BaseException:
            cluster_task.cancel()
            groups_task.cancel()
            await asyncio.gather(cluster_task, groups_task, return_exceptions=True)
            raise
        problems: list[str] = []
        min_isr_task = asyncio.ensure_future(
            self.admin.min_insync_replicas(sorted(metadata.topics)))
        addresses: dict[int, tuple[str, int]] = {
            b.id: (str(b.host), b.port) for b in metadata.brokers.values()}
        for broker_id, known in self.known_brokers.items():
            if broker_id not in addresses and known.host is not None and known.port is not None:
                addresses[broker_id] = (known.host, known.port)
        probe_ids = sorted(addresses)
        probes = await asyncio.gather(*(_probe(*addresses[b]) for b in probe_ids))
        reachable = dict(zip(probe_ids, probes, strict=True))
        cluster: ClusterInfo | None = None
        try:
            cluster = await cluster_task
        except Exception as exc:
            problems.append(f"describe_cluster: {describe_error(exc)}")
        min_isr = await min_isr_task
        if any(v is None for v in min_isr.values()):
            problems.append("topic configs: min.insync.replicas unknown for "
                            f"{sum(v is None for v in min_isr.values())} topic(s)")
        groups, group_problems = await groups_task
        problems += group_problems
        topics = partitions_from_metadata(metadata, min_isr)
        registered = set(metadata.brokers)
        racks = cluster.racks if cluster is not None else {}
        brokers = [
            BrokerState(broker_id, host, port, racks.get(broker_id),
                        registered=broker_id in registered, reachable=reachable.get(broker_id))
            for broker_id, (host, port) in addresses.items()
        ]
        all_partitions = [p for t in topics for p in t.partitions]
        tallied = tally_brokers(brokers, all_partitions)
        for broker in tallied:
            if broker.host is not None:
                self.known_brokers[broker.broker_id] = broker
        controller = cluster.controller_id if cluster is not None else metadata.controller_id
        return KafkaStatus(
            bootstrap=self.config.bootstrap_servers,
            cluster_id=cluster.cluster_id if cluster is not None else metadata.cluster_id,
            controller_id=controller if controller is not None and controller >= 0 else None,
            brokers=tallied,
            topics=topics,
            groups=tuple(groups),
            counts=count_partitions(all_partitions),
            problems=tuple(problems),
            poll_seconds=time.monotonic() - started,
        )

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        status = snapshot.best
        if not isinstance(status, KafkaStatus):
            return summary_for_failure(self.name, self.title, snapshot)
        return summarize_status(status, self.title, snapshot.error)

    async def close(self) -> None:
        # AdminClient has no close(); dropping the reference lets librdkafka shut its threads.
        self.admin.client = None  # type: ignore[assignment]


def build_service(config: SfopsConfig) -> KafkaService | None:
    if config.kafka is None:
        return None
    return KafkaService(config.kafka, config.sfops.state_dir)


__all__ = ["KafkaService", "KafkaUnreachable", "build_service", "partitions_from_metadata"]
