"""One refresh runs the Kafka contact probe and the poll's broker probes together: a probe of a
broker still in flight is shared, never reused once finished, and one caller giving up does not
cancel it for the other (backends/kafka/service.py)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from backends.kafka.config import KafkaConfig
from backends.kafka.service import KafkaService


class GatedBroker:
    """Answers ApiVersions only when the test opens the gate; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.gate = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        correlation_id = struct.unpack(">hhi", (await reader.readexactly(size))[:8])[2]
        await self.gate.wait()
        body = struct.pack(">ihi", correlation_id, 0, 0)
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_concurrent_probes_of_one_broker_share_one_request_and_the_next_sends_anew():
    broker = GatedBroker()
    port = await broker.start()
    service = KafkaService(KafkaConfig(f"127.0.0.1:{port}", request_timeout=2.0))
    try:
        contact = asyncio.ensure_future(service.contact())
        polled = asyncio.ensure_future(service._probe("127.0.0.1", port))
        await until(lambda: broker.connections == 1, "the first probe connected")
        broker.gate.set()
        assert await polled is True
        await contact  # answered: no BackendUnreachable
        assert broker.connections == 1
        # Finished probes are not reused: a later caller asks the broker again.
        assert await service._probe("127.0.0.1", port) is True
        assert broker.connections == 2
    finally:
        await service.close()
        assert broker.server is not None
        broker.server.close()


async def test_one_caller_giving_up_leaves_the_shared_probe_to_the_other():
    broker = GatedBroker()
    port = await broker.start()
    service = KafkaService(KafkaConfig(f"127.0.0.1:{port}", request_timeout=2.0))
    try:
        abandoned = asyncio.ensure_future(service._probe("127.0.0.1", port))
        kept = asyncio.ensure_future(service._probe("127.0.0.1", port))
        await until(lambda: broker.connections == 1, "the probe connected")
        abandoned.cancel()  # e.g. the poll, abandoned after a failed contact
        await asyncio.sleep(0)
        broker.gate.set()
        assert await kept is True
        assert abandoned.cancelled()
        assert broker.connections == 1
    finally:
        await service.close()
        assert broker.server is not None
        broker.server.close()
