"""How one metadata read crosses from the admin worker process to sfops: a compact form.

Why (issue 18, profiled with py-spy on 3,000 partitions): the worker used to build one frozen
``PartitionState`` dataclass per partition and pickle them all; the sfops process then
unpickled them in its executor thread, holding the GIL. Building, pickling and unpickling
those objects cost about as much as librdkafka's metadata request itself. Now the worker sends
plain tuples — per topic ``(name, error, min_isr, partitions)``, per partition ``(id, leader,
replicas, isr, error)`` — with every replica and ISR list interned: most partitions share one
of a few lists, so pickle writes each distinct list once and refers to it after that (its memo),
and the parent gets shared tuples back. The parent builds the ``PartitionState`` values
itself, without the dataclass ``__init__`` (see :func:`decode_topics`).

This module never imports confluent_kafka: :func:`encode_view` reads the metadata objects by
attribute only, so the sfops process can import it (it decodes) and unit tests can feed it
plain objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.kafka.model import (
    ClusterInfo,
    ClusterRead,
    ClusterView,
    GroupState,
    PartitionState,
    TopicState,
)

# (partition id, leader, replicas, isr, error)
WirePartition = tuple[int, int, tuple[int, ...], tuple[int, ...], str | None]
# (name, error, min.insync.replicas, partitions)
WireTopic = tuple[str, str | None, int | None, tuple[WirePartition, ...]]


@dataclass(frozen=True)
class WireView:
    """A :class:`~backends.kafka.model.ClusterView` as it crosses the pipe."""

    cluster_id: str | None
    controller_id: int | None
    brokers: dict[int, tuple[str, int]]
    topics: tuple[WireTopic, ...]


@dataclass(frozen=True)
class WireRead:
    """A :class:`~backends.kafka.model.ClusterRead` as it crosses the pipe."""

    view: WireView
    cluster: ClusterInfo | None
    groups: tuple[GroupState, ...]
    problems: tuple[str, ...] = ()


def encode_view(metadata: Any, min_isr: Mapping[str, int | None]) -> WireView:
    """The worker side: confluent-kafka's ``ClusterMetadata`` (read by attribute) and each
    topic's ``min.insync.replicas``, topics and partitions sorted."""
    interned: dict[tuple[int, ...], tuple[int, ...]] = {}
    intern = interned.setdefault
    topics: list[WireTopic] = []
    for name in sorted(metadata.topics):
        topic = metadata.topics[name]
        partitions = topic.partitions
        encoded: list[WirePartition] = []
        for pid in sorted(partitions):
            p = partitions[pid]
            replicas = tuple(p.replicas)
            isr = tuple(p.isrs)
            encoded.append((pid, p.leader, intern(replicas, replicas), intern(isr, isr),
                            None if p.error is None else str(p.error)))
        topics.append((name, None if topic.error is None else str(topic.error),
                       min_isr.get(name), tuple(encoded)))
    controller = metadata.controller_id
    return WireView(
        cluster_id=metadata.cluster_id,
        controller_id=controller if controller is not None and controller >= 0 else None,
        brokers={b.id: (str(b.host), int(b.port)) for b in metadata.brokers.values()},
        topics=tuple(topics),
    )


def decode_topics(topics: tuple[WireTopic, ...]) -> tuple[TopicState, ...]:
    """The topics with their PartitionState values.

    Each PartitionState is made without the dataclass's ``__init__``: a frozen dataclass sets
    every field through ``object.__setattr__`` (its own ``__setattr__`` refuses), seven calls
    per partition, which made building the values cost twice what it does here — setting the
    instance dictionary once, as unpickling does. The keys are the dataclass's fields
    (tests/unit/test_kafka_wire.py: equal to what the constructor makes, field by field)."""
    new = object.__new__
    set_dict = object.__setattr__
    decoded: list[TopicState] = []
    for name, topic_error, min_isr, partitions in topics:
        states: list[PartitionState] = []
        for pid, leader, replicas, isr, error in partitions:
            state = new(PartitionState)
            set_dict(state, "__dict__", {
                "topic": name, "partition": pid, "leader": leader, "replicas": replicas,
                "isr": isr, "min_isr": min_isr, "error": error})
            states.append(state)
        decoded.append(TopicState(name=name, partitions=tuple(states),
                                  internal=name.startswith("__"), min_isr=min_isr,
                                  error=topic_error))
    return tuple(decoded)


def decode_view(wire: WireView) -> ClusterView:
    """The sfops side: the ClusterView the rest of sfops uses."""
    return ClusterView(cluster_id=wire.cluster_id, controller_id=wire.controller_id,
                       brokers=dict(wire.brokers), topics=decode_topics(wire.topics))


def decode_read(wire: WireRead) -> ClusterRead:
    return ClusterRead(decode_view(wire.view), wire.cluster, wire.groups, wire.problems)
