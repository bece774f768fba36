"""Publishing accepted events to Kafka, after the database commit.

Semantics (see README): the database is the source of truth. Publishing is best effort and
never fails or delays the HTTP write: ``produce()`` only appends to librdkafka's local queue
(non-blocking), delivery reports arrive on a background poll thread, and every failure is
counted (and feeds the Kafka circuit breaker) for /health. While the breaker is open, events
are not even queued (``skipped:breaker-open``). An outbox table would close the gap between
commit and produce; that is a known limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from deploy.api.breaker import CircuitBreaker, CircuitOpenError

log = logging.getLogger("sfapi.kafka")


class DeliveryFailed(RuntimeError):
    """A record the caller waited for was not acknowledged; the message is safe to send to a
    client: a state or librdkafka's error code name, never a broker address or error text."""


class KafkaDisabled(DeliveryFailed):
    """The service publishes nothing (SFAPI_KAFKA_BOOTSTRAP empty)."""


class Publisher(Protocol):
    def start(self) -> None: ...
    def publish(self, key: str, value: dict[str, Any]) -> str: ...
    async def deliver(self, key: str, value: dict[str, Any], wait_seconds: float) -> None: ...
    def close(self, timeout: float) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...


class NullPublisher:
    """Kafka not configured (SFAPI_KAFKA_BOOTSTRAP empty)."""

    def start(self) -> None:
        pass

    def publish(self, key: str, value: dict[str, Any]) -> str:
        return "disabled"

    async def deliver(self, key: str, value: dict[str, Any], wait_seconds: float) -> None:
        raise KafkaDisabled("the API publishes no events (SFAPI_KAFKA_BOOTSTRAP is empty)")

    def close(self, timeout: float) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {"state": "disabled"}


def producer_config(bootstrap: str, client_id: str, delivery_timeout: float,
                    security: Mapping[str, str] | None = None) -> dict[str, Any]:
    delivery_ms = int(delivery_timeout * 1000)
    return {
        **(security or {}),  # TLS / SASL (Settings.kafka_security)
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        # Bounded: a message either reaches all in-sync replicas or reports failure in time.
        "delivery.timeout.ms": delivery_ms,
        "request.timeout.ms": min(5000, delivery_ms),
        "linger.ms": 5,
        "queue.buffering.max.messages": 100_000,
        "socket.connection.setup.timeout.ms": 3000,
    }


class EventPublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        breaker: CircuitBreaker,
        *,
        client_id: str = "streamforge-api",
        delivery_timeout: float = 10.0,
        security: Mapping[str, str] | None = None,
        producer_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.topic = topic
        self.breaker = breaker
        self.bootstrap = bootstrap
        config = producer_config(bootstrap, client_id, delivery_timeout, security)
        config["error_cb"] = self._on_error
        if producer_factory is None:
            from confluent_kafka import Producer  # imported lazily: optional at run time

            producer_factory = Producer
        self._producer = producer_factory(config)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.counts = {
            "queued": 0,
            "delivered": 0,
            "failed": 0,
            "skipped_breaker_open": 0,
            "produce_errors": 0,
        }
        self.last_error: str | None = None

    def start(self) -> None:
        # poll() serves delivery callbacks; it blocks, so it gets its own thread and the
        # event loop never waits on librdkafka.
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def _count(self, key: str, error: str | None = None) -> None:
        with self._lock:
            self.counts[key] += 1
            if error is not None:
                self.last_error = error[:300]

    def publish(self, key: str, value: dict[str, Any]) -> str:
        try:
            self.breaker.allow()
        except CircuitOpenError:
            self._count("skipped_breaker_open")
            return "skipped:breaker-open"
        try:
            self._producer.produce(
                self.topic,
                key=key.encode(),
                value=json.dumps(value, separators=(",", ":"), default=str).encode(),
                on_delivery=self._on_delivery,
            )
        except Exception as exc:  # BufferError: local queue full; KafkaException: unusable
            self.breaker.record_failure()
            self._count("produce_errors", f"{type(exc).__name__}: {exc}")
            log.warning("kafka produce failed: %s", exc)
            return "skipped:produce-error"
        self._count("queued")
        return "queued"

    async def deliver(self, key: str, value: dict[str, Any], wait_seconds: float) -> None:
        """Produce one record and wait, at most ``wait_seconds``, for its delivery report
        (acks=all): the write-path canary's Kafka hop. Raises DeliveryFailed. The wait is on
        the event loop (a future the poll thread resolves), never a blocking flush; a record
        not acknowledged in time stays queued and may still be delivered later."""
        try:
            self.breaker.allow()
        except CircuitOpenError:
            self._count("skipped_breaker_open")
            raise DeliveryFailed("kafka circuit breaker open") from None
        loop = asyncio.get_running_loop()
        reported: asyncio.Future[Any] = loop.create_future()

        def settle(err: Any) -> None:
            if not reported.done():
                reported.set_result(err)

        def on_delivery(err: Any, msg: Any) -> None:  # runs on the poll thread
            self._on_delivery(err, msg)
            try:
                loop.call_soon_threadsafe(settle, err)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        try:
            self._producer.produce(
                self.topic,
                key=key.encode(),
                value=json.dumps(value, separators=(",", ":"), default=str).encode(),
                on_delivery=on_delivery,
            )
        except Exception as exc:  # BufferError: local queue full; KafkaException: unusable
            self.breaker.record_failure()
            self._count("produce_errors", f"{type(exc).__name__}: {exc}")
            log.warning("kafka produce failed: %s", exc)
            raise DeliveryFailed(f"produce refused ({type(exc).__name__})") from None
        self._count("queued")
        try:
            async with asyncio.timeout(wait_seconds):
                err = await reported
        except TimeoutError:
            raise DeliveryFailed(f"not acknowledged within {wait_seconds:g} s") from None
        if err is not None:
            raise DeliveryFailed(f"delivery failed: {error_code(err)}")

    def _on_delivery(self, err: Any, msg: Any) -> None:  # runs on the poll thread
        if err is None:
            self.breaker.record_success()
            self._count("delivered")
        else:
            self.breaker.record_failure()
            self._count("failed", str(err))
            log.warning("kafka delivery failed: %s", err)

    def _on_error(self, err: Any) -> None:
        # Client-level errors (all brokers down, ...). librdkafka keeps retrying by itself;
        # the per-message delivery reports drive the breaker. Logged once per new message.
        text = str(err)[:300]
        with self._lock:
            changed, self.last_error = text != self.last_error, text
        if changed:
            log.warning("kafka client error: %s", text)

    def close(self, timeout: float) -> None:
        """Blocking: flush what is queued (bounded), then stop the poll thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("kafka: %d event(s) not delivered at shutdown", remaining)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        # No broker addresses or error text (the /health endpoint is public): those are in
        # the log; a failure is visible here as a count and a breaker state.
        return {
            "state": "enabled",
            "breaker": self.breaker.snapshot(),
            "counts": counts,
            "in_queue": len(self._producer),
        }


def error_code(err: Any) -> str:
    """librdkafka's error code name (``NOT_ENOUGH_REPLICAS``, ``_MSG_TIMED_OUT``): what a
    client may be told. The error's text can name brokers, so it is only logged."""
    name = getattr(err, "name", None)
    if callable(name):
        with contextlib.suppress(Exception):  # a KafkaError that cannot say: fall through
            return str(name())
    return "unknown error"
