"""The Kafka adapter: one poll reads, through the AdminClient, the cluster metadata (brokers,
every partition's leader, replicas and ISR), the cluster description (id, racks, the metadata
controller), each topic's ``min.insync.replicas`` (cached) and consumer group state and lag —
concurrently, each bounded by a timeout — and probes each broker's listener.

The AdminClient reads run in an admin worker process (:mod:`backends.kafka.worker`): a
librdkafka crash kills that process, the poll fails with "Kafka admin worker crashed
(librdkafka; …); restarted", and the next poll uses a fresh worker. The service is long-lived
in the TUI (one for its whole life, polled every couple of seconds), so the UI never dies with
librdkafka. The probes are plain asyncio sockets (TLS when the cluster is secured) and run
here.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import Any

from backends.config import SfopsConfig
from backends.kafka.config import KafkaConfig
from backends.kafka.model import (
    BrokerState,
    ClusterRead,
    KafkaSecurityError,
    KafkaStatus,
    KafkaUnreachable,
    LeaderBalanceLimits,
    count_partitions,
    summarize_status,
    tally_brokers,
)
from backends.kafka.probe import answers, parse_servers
from backends.kafka.security import explain
from backends.kafka.worker import METADATA_POLICY, IsolatedAdmin
from backends.resilience import CircuitBreaker
from backends.service import (
    CONTACT_TIMEOUT,
    BackendSummary,
    BackendUnreachable,
    summary_for_failure,
)
from backends.snapshot import Snapshot

# Each broker's own probe: a hung broker must read as down within one refresh.
PROBE_TIMEOUT = 1.5




class KafkaService:
    """:class:`~backends.service.BackendService` for one Kafka cluster."""

    name = "kafka"
    title = "Kafka"
    contact_timeout = CONTACT_TIMEOUT

    def __init__(self, config: KafkaConfig, state_dir: Any = None) -> None:
        self.config = config
        self.state_dir = state_dir
        # The poll's worker; started on the first poll, restarted after a crash or a hang.
        self.admin = IsolatedAdmin(config.bootstrap_servers, config.request_timeout,
                                   label="Kafka admin worker", security=config.security)
        self.breaker: CircuitBreaker | None = CircuitBreaker(
            "kafka", failure_threshold=3, reset_timeout=10.0)
        # Brokers seen in an earlier poll: a killed broker drops out of the metadata, but the
        # operator must still see it (as down), with the address it had.
        self.known_brokers: dict[int, BrokerState] = {}
        self._tls: ssl.SSLContext | None = None
        self._probes: dict[tuple[str, int], asyncio.Future[str | None]] = {}  # in flight

    def action_admin(self) -> IsolatedAdmin:
        """A new worker, so a new AdminClient, for one action (see backends.kafka.actions)."""
        return IsolatedAdmin(self.config.bootstrap_servers, self.config.request_timeout,
                             label="Kafka action admin worker", security=self.config.security)

    def tls(self) -> ssl.SSLContext | None:
        """The probes' TLS context (made once; a CA or client key that cannot be loaded
        raises :class:`KafkaSecurityError` naming its key)."""
        if self.config.security.uses_tls and self._tls is None:
            self._tls = self.config.security.ssl_context()
        return self._tls

    async def _answers(self, host: str, port: int) -> str | None:
        """One broker's probe. A refresh runs :meth:`contact` and :meth:`poll` together and
        both probe every broker: a probe of an address that is still in flight is shared
        rather than sent twice (each is a TLS handshake on the event loop when the cluster is
        secured). A finished probe is never reused: the next caller sends a new one."""
        key = (host, port)
        task = self._probes.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(
                answers(host, port, timeout=PROBE_TIMEOUT, tls=self.tls()))
            self._probes[key] = task
            task.add_done_callback(functools.partial(self._probe_done, key))
        # Shielded: one caller giving up (an abandoned poll) must not cancel the other's.
        return await asyncio.shield(task)

    def _probe_done(self, key: tuple[str, int], task: asyncio.Future[str | None]) -> None:
        if self._probes.get(key) is task:
            del self._probes[key]
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up must not leave it unread

    async def _probe(self, host: str, port: int) -> bool:
        return await self._answers(host, port) is None

    async def contact(self) -> None:
        """At least one broker processes requests now (every known broker and the bootstrap
        servers are asked at once; the admin worker's metadata read is not the probe: it
        lives in another process and may be waiting on a slow earlier call)."""
        addresses = {(k.host, k.port) for k in self.known_brokers.values()
                     if k.host is not None and k.port is not None}
        addresses.update(parse_servers(self.config.bootstrap_servers))
        ordered = sorted(addresses)
        results = await asyncio.gather(*(self._answers(host, port) for host, port in ordered))
        if any(result is None for result in results):
            return
        for result in results:
            # A refused handshake is a configuration problem, not a cluster down: say which key.
            if result is not None and (keyed := explain(result, self.config.security)):
                raise KafkaSecurityError(f"{keyed} (no broker of "
                                         f"{self.config.bootstrap_servers} accepted it)")
        reasons = "; ".join(f"{h}:{p}: {why}" for (h, p), why in zip(ordered, results, strict=True))
        raise BackendUnreachable(
            f"no broker of {self.config.bootstrap_servers} answered: {reasons}")

    async def _read(self) -> ClusterRead:
        groups = tuple(self.config.consumer_groups)
        if self.breaker is None:
            return await self.admin.read(groups)
        return await self.breaker.call(lambda: self.admin.read(groups))

    async def poll(self) -> KafkaStatus:
        started = time.monotonic()
        # Probe the brokers we already know while the worker reads (a killed one among them).
        known: dict[int, tuple[str, int]] = {
            b: (k.host, k.port) for b, k in self.known_brokers.items()
            if k.host is not None and k.port is not None}
        early = {b: asyncio.ensure_future(self._probe(h, p)) for b, (h, p) in known.items()}
        try:
            read = await self._read()  # no metadata, no snapshot: the poll fails
        except BaseException:
            for task in early.values():
                task.cancel()
            await asyncio.gather(*early.values(), return_exceptions=True)
            raise
        view = read.view
        problems = list(read.problems)
        if (note := self.admin.worker.take_idle_crash()) is not None:
            problems.append(note)
        addresses: dict[int, tuple[str, int]] = dict(view.brokers)
        for broker_id, address in known.items():
            addresses.setdefault(broker_id, address)
        late = {b: asyncio.ensure_future(self._probe(*a)) for b, a in addresses.items()
                if known.get(b) != a}
        for broker_id in [b for b in early if b in late]:
            early.pop(broker_id).cancel()  # its address changed: only the new one counts
        probes = {**early, **late}
        await asyncio.gather(*probes.values(), return_exceptions=True)
        reachable = {b: (not t.cancelled() and t.exception() is None and bool(t.result()))
                     for b, t in probes.items()}
        cluster = read.cluster
        racks = cluster.racks if cluster is not None else {}
        brokers = [
            BrokerState(broker_id, host, port, racks.get(broker_id),
                        registered=broker_id in view.brokers,
                        reachable=reachable.get(broker_id))
            for broker_id, (host, port) in addresses.items()
        ]
        all_partitions = view.partitions()
        tallied = tally_brokers(brokers, all_partitions)
        for broker in tallied:
            if broker.host is not None:
                self.known_brokers[broker.broker_id] = broker
        controller = cluster.controller_id if cluster is not None else view.controller_id
        return KafkaStatus(
            bootstrap=self.config.bootstrap_servers,
            cluster_id=cluster.cluster_id if cluster is not None else view.cluster_id,
            controller_id=controller if controller is not None and controller >= 0 else None,
            brokers=tallied,
            topics=view.topics,
            groups=read.groups,
            counts=count_partitions(all_partitions),
            problems=tuple(problems),
            poll_seconds=time.monotonic() - started,
        )

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        status = snapshot.best
        if not isinstance(status, KafkaStatus):
            return summary_for_failure(self.name, self.title, snapshot)
        return summarize_status(status, self.title, LeaderBalanceLimits.of(self.config))

    async def close(self) -> None:
        for task in list(self._probes.values()):
            task.cancel()
        await self.admin.close()


def build_service(config: SfopsConfig) -> KafkaService | None:
    if config.kafka is None:
        return None
    return KafkaService(config.kafka, config.sfops.state_dir)


__all__ = ["METADATA_POLICY", "KafkaService", "KafkaUnreachable", "build_service"]
