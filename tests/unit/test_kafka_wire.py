"""The admin worker's compact metadata form (backends/kafka/wire.py): the same values as the
dataclasses' own constructors make."""

from __future__ import annotations

import dataclasses
import pickle
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.kafka.model import (
    ClusterRead,
    ClusterView,
    GroupState,
    PartitionLag,
    PartitionState,
    TopicState,
)
from backends.kafka.wire import WireRead, decode_read, decode_view, encode_view


class FakeKafkaError:
    """What confluent-kafka puts in ``.error``: an object whose str() is the message."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


BROKERS = st.sampled_from([1, 2, 3, 4])
REPLICAS = st.lists(BROKERS, min_size=0, max_size=4, unique=True)


@st.composite
def partition_metadata(draw: st.DrawFn) -> SimpleNamespace:
    replicas = draw(REPLICAS)
    isr = draw(st.lists(st.sampled_from(replicas), unique=True)) if replicas else []
    leader = draw(st.sampled_from([-1, *replicas])) if replicas else -1
    error = draw(st.none() | st.just(FakeKafkaError("Broker: Leader not available")))
    return SimpleNamespace(leader=leader, replicas=replicas, isrs=isr, error=error)


@st.composite
def cluster_metadata(draw: st.DrawFn) -> tuple[SimpleNamespace, dict[str, int | None]]:
    names = draw(st.lists(st.sampled_from(["a", "b<x>", "__consumer_offsets", "t.1", "z"]),
                          unique=True, max_size=5))
    topics = {}
    for name in names:
        parts = draw(st.lists(partition_metadata(), max_size=6))
        ids = draw(st.permutations(list(range(len(parts)))))  # the client's dict order varies
        topics[name] = SimpleNamespace(
            partitions=dict(zip(ids, parts, strict=True)),
            error=draw(st.none() | st.just(FakeKafkaError("Broker: Unknown topic"))))
    min_isr = {name: draw(st.none() | st.integers(1, 3)) for name in names}
    brokers = {b: SimpleNamespace(id=b, host=f"h{b}", port=9090 + b) for b in (1, 2, 3)}
    metadata = SimpleNamespace(topics=topics, brokers=brokers, cluster_id="cid",
                               controller_id=draw(st.sampled_from([-1, 2])))
    return metadata, min_isr


def plain_view(metadata: SimpleNamespace, min_isr: dict[str, int | None]) -> ClusterView:
    """The view built the obvious way, with the dataclasses' own constructors."""
    topics = []
    for name in sorted(metadata.topics):
        topic = metadata.topics[name]
        partitions = tuple(
            PartitionState(name, pid, p.leader, tuple(p.replicas), tuple(p.isrs),
                           min_isr.get(name), None if p.error is None else str(p.error))
            for pid, p in sorted(topic.partitions.items()))
        topics.append(TopicState(name, partitions, name.startswith("__"), min_isr.get(name),
                                 None if topic.error is None else str(topic.error)))
    controller = metadata.controller_id
    return ClusterView(metadata.cluster_id, controller if controller >= 0 else None,
                       {b.id: (b.host, b.port) for b in metadata.brokers.values()}, tuple(topics))


@settings(max_examples=100, deadline=None)
@given(cluster_metadata())
def test_the_wire_form_decodes_to_what_the_constructors_make(case):
    metadata, min_isr = case
    wire = encode_view(metadata, min_isr)
    decoded = decode_view(pickle.loads(pickle.dumps(wire)))  # as it crosses the pipe
    expected = plain_view(metadata, min_isr)
    assert decoded == expected
    for got, want in zip(decoded.partitions(), expected.partitions(), strict=True):
        assert vars(got) == vars(want)  # field by field, nothing more, nothing less
        assert hash(got) == hash(want)
        assert got.under_replicated == want.under_replicated
        assert got.electable == want.electable


def test_decoded_partitions_are_frozen_like_constructed_ones():
    metadata = SimpleNamespace(
        topics={"t": SimpleNamespace(error=None, partitions={
            0: SimpleNamespace(leader=1, replicas=[1, 2], isrs=[1], error=None)})},
        brokers={}, cluster_id=None, controller_id=None)
    (partition,) = decode_view(encode_view(metadata, {"t": 2})).partitions()
    assert partition == PartitionState("t", 0, 1, (1, 2), (1,), 2)
    assert list(vars(partition)) == [f.name for f in dataclasses.fields(PartitionState)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        partition.leader = 2  # type: ignore[misc]
    assert partition.under_replicated and partition.at_min_isr is False


def test_equal_replica_lists_cross_the_pipe_once():
    """3,000 partitions over three brokers: a handful of distinct lists, each sent once."""
    lists = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    metadata = SimpleNamespace(
        topics={f"t{t:03d}": SimpleNamespace(error=None, partitions={
            i: SimpleNamespace(leader=lists[i % 3][0], replicas=list(lists[i % 3]),
                               isrs=list(lists[i % 3]), error=None)
            for i in range(30)}) for t in range(100)},
        brokers={}, cluster_id=None, controller_id=None)
    view = decode_view(pickle.loads(pickle.dumps(encode_view(metadata, {}))))
    partitions = view.partitions()
    assert len(partitions) == 3000
    assert len({id(p.replicas) for p in partitions}) == 3
    assert len({id(p.isr) for p in partitions}) == 3


def test_a_read_keeps_its_cluster_groups_and_problems():
    metadata = SimpleNamespace(topics={}, brokers={}, cluster_id="c", controller_id=1)
    group = GroupState("g", "STABLE", 1, (PartitionLag("t", 0, 1, 3),))
    wire = WireRead(encode_view(metadata, {}), None, (group,), ("topic configs: slow",))
    read = decode_read(pickle.loads(pickle.dumps(wire)))
    assert read == ClusterRead(ClusterView("c", 1, {}, ()), None, (group,),
                               ("topic configs: slow",))
