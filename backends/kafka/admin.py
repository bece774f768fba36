"""confluent-kafka's AdminClient, made safe for an event loop.

Every call carries an explicit timeout (``list_topics()`` without one blocks forever when no
broker answers) and runs off the loop: blocking calls in a thread, futures through
``asyncio.wrap_future``, each also bounded by :func:`with_timeout` a little beyond the
client's own timeout, so a stuck librdkafka call can never stall the UI.

This module runs only inside an admin worker process (:mod:`backends.kafka.worker`): the sfops
process itself never loads librdkafka's client, so a crash in it (we have seen a segfault and
an ``eonce->refcnt > 0`` assertion abort) kills the worker, never the UI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    ElectionType,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, no __all__
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)

from backends.kafka.model import (
    ClusterInfo,
    ClusterView,
    ElectionOutcome,
    KafkaSecurityError,
    KafkaUnreachable,
)
from backends.kafka.security import PLAINTEXT, KafkaSecurity, explain
from backends.resilience import with_timeout

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["ClusterInfo", "ClusterView", "ElectionOutcome", "KafkaAdmin", "KafkaUnreachable"]

MIN_ISR_TTL = 300.0  # topic configs change rarely; re-read every five minutes
GRACE = 1.0  # our outer bound beyond the client's own timeout


class KafkaAdmin:
    """One AdminClient for one cluster; all methods are coroutines with bounded time."""

    def __init__(self, bootstrap: str, request_timeout: float = 5.0,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.timeout = request_timeout
        self.security = security
        # The last TLS/SASL refusal librdkafka reported, as a message naming the key: a
        # refused login makes every request time out, and this says why.
        self.refusal: str | None = None
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": int(request_timeout * 1000),
            "socket.connection.setup.timeout.ms": int(request_timeout * 1000),
            "reconnect.backoff.max.ms": 1000,
            "log_level": 0,
            "error_cb": self._error_cb,
            **security.librdkafka(),
        }
        self.client = AdminClient(settings)
        self._min_isr: dict[str, tuple[int | None, float]] = {}

    def _error_cb(self, error: KafkaError) -> None:
        # "All brokers are down" and friends: the poll reports them; librdkafka must not
        # print to the terminal the TUI owns. A TLS or SASL refusal is kept to name its key.
        log.debug("librdkafka: %s", error)
        keyed = explain(error.str(), self.security)
        if keyed is not None:
            self.refusal = keyed

    def refused(self, exc: BaseException | None = None) -> KafkaSecurityError | None:
        """The refusal behind a failed call (from the error itself or the error callback)."""
        try:
            self.client.poll(0)  # serves queued error callbacks: they are not run otherwise
        except Exception as poll_error:
            log.debug("AdminClient.poll: %s", poll_error)
        keyed = explain(str(exc), self.security) if exc is not None else None
        keyed = keyed or self.refusal
        return KafkaSecurityError(keyed) if keyed else None

    async def _future(self, future: Future[T], what: str,
                      timeout: float | None = None) -> T:  # noqa: ASYNC109
        budget = (timeout or self.timeout) + GRACE
        try:
            return await with_timeout(asyncio.wrap_future(future), budget, what)
        except Exception as exc:
            if (refused := self.refused(exc)) is not None:
                raise refused from None
            raise

    # ------------------------------------------------------------------ reads

    async def metadata(self, topic: str | None = None) -> ClusterMetadata:
        def call() -> ClusterMetadata:
            try:
                return self.client.list_topics(topic=topic, timeout=self.timeout)
            except KafkaException as exc:
                if (refused := self.refused(exc)) is not None:
                    raise refused from None
                raise KafkaUnreachable(
                    f"no broker of {self.bootstrap} answered a metadata request within "
                    f"{self.timeout:g} s ({exc.args[0].str() if exc.args else exc})"
                ) from None

        return await with_timeout(asyncio.to_thread(call), self.timeout + GRACE, "metadata")

    async def describe_cluster(self) -> ClusterInfo:
        result = await self._future(
            self.client.describe_cluster(request_timeout=self.timeout), "describe_cluster")
        return ClusterInfo(
            cluster_id=result.cluster_id,
            controller_id=result.controller.id if result.controller is not None else None,
            racks={n.id: n.rack for n in result.nodes},
            nodes={n.id: (n.host, n.port) for n in result.nodes},
        )

    async def min_insync_replicas(self, topics: Sequence[str]) -> dict[str, int | None]:
        """``min.insync.replicas`` per topic, cached for MIN_ISR_TTL; unreadable → None."""
        now = time.monotonic()
        stale = [t for t in topics
                 if t not in self._min_isr or now - self._min_isr[t][1] > MIN_ISR_TTL]
        if stale:
            resources = [ConfigResource(ResourceType.TOPIC, t) for t in stale]
            futures = self.client.describe_configs(resources, request_timeout=self.timeout)
            results = await asyncio.gather(
                *(self._future(futures[r], f"describe_configs {r.name}") for r in futures),
                return_exceptions=True,
            )
            for resource, entries in zip(futures, results, strict=True):
                if isinstance(entries, BaseException):
                    log.debug("min.insync.replicas of %s: %s", resource.name, entries)
                    continue  # stays unknown; retried on the next poll
                entry = entries.get("min.insync.replicas")
                value = int(entry.value) if entry is not None and entry.value else None
                self._min_isr[resource.name] = (value, now)
        return {t: self._min_isr[t][0] if t in self._min_isr else None for t in topics}

    async def list_group_ids(self) -> list[str]:
        result = await self._future(
            self.client.list_consumer_groups(request_timeout=self.timeout),
            "list_consumer_groups")
        return sorted(g.group_id for g in result.valid)

    async def describe_group(self, group_id: str) -> tuple[str, int, set[tuple[str, int]]]:
        """(state, member count, partitions assigned to its members)."""
        futures = self.client.describe_consumer_groups([group_id],
                                                       request_timeout=self.timeout)
        description = await self._future(futures[group_id], f"describe group {group_id}")
        state = getattr(description.state, "name", str(description.state))
        assigned = {
            (tp.topic, tp.partition)
            for member in description.members
            if member.assignment is not None
            for tp in member.assignment.topic_partitions
        }
        return state.upper(), len(description.members), assigned

    async def committed_offsets(self, group_id: str) -> dict[tuple[str, int], int | None]:
        futures = self.client.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id)], request_timeout=self.timeout)
        result = await self._future(futures[group_id], f"committed offsets of {group_id}")
        return {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
            for tp in result.topic_partitions or []
        }

    async def latest_offsets(self, partitions: Sequence[tuple[str, int]]
                             ) -> dict[tuple[str, int], int | None]:
        if not partitions:
            return {}
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        request = {TopicPartition(t, p): latest for t, p in partitions}
        futures = self.client.list_offsets(request, request_timeout=self.timeout)
        out: dict[tuple[str, int], int | None] = {}
        results = await asyncio.gather(
            *(self._future(f, f"list_offsets {tp.topic}-{tp.partition}")
              for tp, f in futures.items()),
            return_exceptions=True,
        )
        for tp, result in zip(futures, results, strict=True):
            out[(tp.topic, tp.partition)] = (
                None if isinstance(result, BaseException) else int(result.offset))
        return out

    # ------------------------------------------------------------------ writes (never retried)

    async def elect_preferred(
        self, partitions: Sequence[tuple[str, int]] | None
    ) -> list[ElectionOutcome]:
        """A preferred-leader election for ``partitions`` (None: every partition)."""
        tps = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
        # No request_timeout/operation_timeout here: confluent-kafka 2.16.1's C binding
        # rejects any keyword argument to elect_leaders (SystemError, "more argument
        # specifiers than keyword list entries"), so the client's socket.timeout.ms bounds it
        # and with_timeout bounds our wait.
        future = self.client.elect_leaders(ElectionType.PREFERRED, tps)
        result: dict[Any, Any] = await self._future(future, "elect_leaders",
                                                    timeout=2 * self.timeout)
        outcomes: list[ElectionOutcome] = []
        for tp, error in result.items():
            if error is None:
                outcomes.append(ElectionOutcome(tp.topic, tp.partition, 0, None))
                continue
            kafka_error = error.args[0] if isinstance(error, KafkaException) else error
            code = kafka_error.code() if isinstance(kafka_error, KafkaError) else -1
            text = kafka_error.str() if isinstance(kafka_error, KafkaError) else str(error)
            outcomes.append(ElectionOutcome(tp.topic, tp.partition, code, text))
        return sorted(outcomes, key=lambda o: (o.topic, o.partition))
