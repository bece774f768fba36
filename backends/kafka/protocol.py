"""Partition reassignment over the Kafka wire protocol (KIP-455), because librdkafka — and so
confluent-kafka — has no reassignment API.

Two requests only: AlterPartitionReassignments (api key 45) and ListPartitionReassignments (46),
both version 0, both "flexible" (compact strings/arrays, tagged fields). Any broker accepts them
and forwards them to the active KRaft controller, so we send to the first broker that accepts
a TCP connection. Why not kafka-python's admin client: it is blocking, bootstraps its own
metadata and version probes on construction (unbounded when brokers are down), and would be a
second Kafka client library in the process for two requests we can encode in ~150 lines on
asyncio streams, every step bounded by a timeout.

A write is never retried: a connection that fails *before* the request is sent moves on to the
next broker (nothing happened); once bytes are written, any failure is reported as is.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends.resilience import with_timeout

ALTER_PARTITION_REASSIGNMENTS = 45
LIST_PARTITION_REASSIGNMENTS = 46
CLIENT_ID = "sfops"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# The error codes we name in messages (the full table is Kafka's Errors.java).
ERROR_NAMES = {
    0: "NONE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    7: "REQUEST_TIMED_OUT",
    29: "CLUSTER_AUTHORIZATION_FAILED",
    39: "INVALID_REPLICA_ASSIGNMENT",
    41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST",
    85: "NO_REASSIGNMENT_IN_PROGRESS",
    -1: "UNKNOWN_SERVER_ERROR",
}

PartitionKey = tuple[str, int]


class KafkaProtocolError(Exception):
    """A malformed or unexpected response, or no broker to talk to."""


class ConnectFailed(KafkaProtocolError):
    """No broker accepted a connection: nothing was sent."""


@dataclass(frozen=True)
class PartitionResult:
    topic: str
    partition: int
    error_code: int
    error_message: str | None

    @property
    def ok(self) -> bool:
        return self.error_code == 0

    def describe(self) -> str:
        name = ERROR_NAMES.get(self.error_code, f"error {self.error_code}")
        detail = f": {self.error_message}" if self.error_message else ""
        return f"{self.topic}-{self.partition}: {name}{detail}"


@dataclass(frozen=True)
class OngoingReassignment:
    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding: tuple[int, ...]
    removing: tuple[int, ...]


# --------------------------------------------------------------------------- encoding


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_string(value: str | None) -> bytes:
    if value is None:
        return _uvarint(0)
    data = value.encode("utf-8")
    return _uvarint(len(data) + 1) + data


def _compact_len(count: int | None) -> bytes:
    return _uvarint(0 if count is None else count + 1)


_NO_TAGS = _uvarint(0)


def _header(api_key: int, version: int, correlation_id: int) -> bytes:
    # Request header v2: client_id is a *non-compact* nullable string, then tagged fields.
    client = CLIENT_ID.encode()
    return (struct.pack(">hhih", api_key, version, correlation_id, len(client)) + client
            + _NO_TAGS)


def encode_alter_request(
    assignments: Mapping[PartitionKey, Sequence[int]], timeout_ms: int, correlation_id: int
) -> bytes:
    by_topic: dict[str, list[tuple[int, Sequence[int]]]] = {}
    for (topic, partition), replicas in sorted(assignments.items()):
        if not replicas:
            raise ValueError(f"{topic}-{partition}: an empty replica list would cancel, refused")
        by_topic.setdefault(topic, []).append((partition, replicas))
    body = bytearray(struct.pack(">i", timeout_ms))
    body += _compact_len(len(by_topic))
    for topic, partitions in by_topic.items():
        body += _compact_string(topic)
        body += _compact_len(len(partitions))
        for partition, replicas in partitions:
            body += struct.pack(">i", partition)
            body += _compact_len(len(replicas))
            body += b"".join(struct.pack(">i", r) for r in replicas)
            body += _NO_TAGS
        body += _NO_TAGS
    body += _NO_TAGS
    return _header(ALTER_PARTITION_REASSIGNMENTS, 0, correlation_id) + bytes(body)


def encode_list_request(
    partitions: Sequence[PartitionKey] | None, timeout_ms: int, correlation_id: int
) -> bytes:
    body = bytearray(struct.pack(">i", timeout_ms))
    if partitions is None:
        body += _compact_len(None)  # null: every ongoing reassignment
    else:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(partitions):
            by_topic.setdefault(topic, []).append(partition)
        body += _compact_len(len(by_topic))
        for topic, indexes in by_topic.items():
            body += _compact_string(topic) + _compact_len(len(indexes))
            body += b"".join(struct.pack(">i", i) for i in indexes)
            body += _NO_TAGS
    body += _NO_TAGS
    return _header(LIST_PARTITION_REASSIGNMENTS, 0, correlation_id) + bytes(body)


# --------------------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise KafkaProtocolError("truncated response")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def int16(self) -> int:
        value: int = struct.unpack(">h", self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack(">i", self.take(4))[0]
        return value

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise KafkaProtocolError("varint too long")

    def compact_string(self) -> str | None:
        length = self.uvarint()
        return None if length == 0 else self.take(length - 1).decode("utf-8", "replace")

    def compact_count(self) -> int:
        return max(self.uvarint() - 1, 0)

    def int32_array(self) -> tuple[int, ...]:
        return tuple(self.int32() for _ in range(self.compact_count()))

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


def _response_header(reader: _Reader, correlation_id: int) -> None:
    got = reader.int32()
    if got != correlation_id:
        raise KafkaProtocolError(f"correlation id {got}, expected {correlation_id}")
    reader.skip_tags()


def _top_level_error(reader: _Reader, what: str) -> None:
    reader.int32()  # throttle_time_ms
    code = reader.int16()
    message = reader.compact_string()
    if code != 0:
        name = ERROR_NAMES.get(code, f"error {code}")
        raise KafkaProtocolError(f"{what}: {name}" + (f": {message}" if message else ""))


def decode_alter_response(data: bytes, correlation_id: int) -> list[PartitionResult]:
    reader = _Reader(data)
    _response_header(reader, correlation_id)
    _top_level_error(reader, "AlterPartitionReassignments")
    results: list[PartitionResult] = []
    for _ in range(reader.compact_count()):
        topic = reader.compact_string() or ""
        for _ in range(reader.compact_count()):
            partition = reader.int32()
            code = reader.int16()
            message = reader.compact_string()
            reader.skip_tags()
            results.append(PartitionResult(topic, partition, code, message))
        reader.skip_tags()
    reader.skip_tags()
    return results


def decode_list_response(data: bytes, correlation_id: int) -> list[OngoingReassignment]:
    reader = _Reader(data)
    _response_header(reader, correlation_id)
    _top_level_error(reader, "ListPartitionReassignments")
    ongoing: list[OngoingReassignment] = []
    for _ in range(reader.compact_count()):
        topic = reader.compact_string() or ""
        for _ in range(reader.compact_count()):
            partition = reader.int32()
            replicas = reader.int32_array()
            adding = reader.int32_array()
            removing = reader.int32_array()
            reader.skip_tags()
            ongoing.append(OngoingReassignment(topic, partition, replicas, adding, removing))
        reader.skip_tags()
    reader.skip_tags()
    return ongoing


# --------------------------------------------------------------------------- transport

_correlation = itertools.count(1)


def parse_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in items:
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    await writer.drain()
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    if not 0 < size <= MAX_RESPONSE_BYTES:
        raise KafkaProtocolError(f"response size {size} out of range")
    return await reader.readexactly(size)


async def _roundtrip(
    servers: Sequence[tuple[str, int]], request: bytes, timeout: float  # noqa: ASYNC109
) -> bytes:
    """Send ``request`` to the first broker that accepts a connection; return the response
    body. Connection failures move on (nothing sent yet); anything after the write raises."""
    failures: list[str] = []
    for host, port in servers:
        try:
            reader, writer = await with_timeout(
                asyncio.open_connection(host, port), min(timeout, 3.0), f"connect {host}:{port}"
            )
        except OSError as exc:  # BackendTimeout is a TimeoutError, an OSError
            failures.append(f"{host}:{port}: {exc}")
            continue
        try:
            writer.write(struct.pack(">i", len(request)) + request)
            return await with_timeout(_exchange(reader, writer), timeout,
                                      f"Kafka request to {host}:{port}")
        except asyncio.IncompleteReadError as exc:
            raise KafkaProtocolError(
                f"{host}:{port} closed the connection mid-response (request sent; "
                "its effect is unknown)") from exc
        finally:
            writer.close()
    raise ConnectFailed("no broker accepted a connection: " + "; ".join(failures))


async def alter_partition_reassignments(
    servers: Sequence[tuple[str, int]],
    assignments: Mapping[PartitionKey, Sequence[int]],
    *,
    timeout: float,  # noqa: ASYNC109
) -> list[PartitionResult]:
    """Ask the controller to set each partition's replica list (in order). Never retried."""
    correlation_id = next(_correlation)
    request = encode_alter_request(assignments, int(timeout * 1000), correlation_id)
    data = await _roundtrip(servers, request, timeout + 1.0)
    return decode_alter_response(data, correlation_id)


async def list_partition_reassignments(
    servers: Sequence[tuple[str, int]],
    partitions: Sequence[PartitionKey] | None = None,
    *,
    timeout: float,  # noqa: ASYNC109
) -> list[OngoingReassignment]:
    """Reassignments still in progress (all of them when ``partitions`` is None)."""
    correlation_id = next(_correlation)
    request = encode_list_request(partitions, int(timeout * 1000), correlation_id)
    data = await _roundtrip(servers, request, timeout + 1.0)
    return decode_list_response(data, correlation_id)


# --------------------------------------------------------------------------- liveness

API_VERSIONS = 18


async def answers(host: str, port: int, *, timeout: float) -> str | None:  # noqa: ASYNC109
    """Does this broker *process requests* now? None when it answered an ApiVersions (v0)
    request within ``timeout``, else why not.

    A TCP connect is not enough: the kernel completes the handshake for a SIGSTOPped or
    wedged JVM from the listen backlog. ApiVersions is the first request every client sends,
    needs no authorisation and no metadata, and is answered by the broker's request threads.
    """
    correlation_id = next(_correlation)
    client = CLIENT_ID.encode()
    # Request header v1 (ApiVersions v0 is not "flexible"): key, version, correlation, client.
    request = struct.pack(">hhih", API_VERSIONS, 0, correlation_id, len(client)) + client
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack(">i", len(request)) + request)
                data = await _exchange(reader, writer)
            finally:
                writer.close()
    except TimeoutError:
        return f"no answer to ApiVersions within {timeout:g} s"
    except (OSError, asyncio.IncompleteReadError, KafkaProtocolError) as exc:
        return str(exc) or type(exc).__name__
    if len(data) < 6:
        return "short ApiVersions response"
    got_id, error_code = struct.unpack(">ih", data[:6])
    if got_id != correlation_id:
        return f"ApiVersions answer for another request ({got_id} != {correlation_id})"
    if error_code != 0:
        return f"ApiVersions error {ERROR_NAMES.get(error_code, error_code)}"
    return None
