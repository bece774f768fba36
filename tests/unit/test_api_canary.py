"""The reference API's write-path canary (deploy/api/canary.py): validation and abuse bounds,
each hop's report, failures named by category and code only (no server text on a public
endpoint), Kafka's delivery report awaited. Fakes for what a real server cannot do on demand
(a read-only primary on one call, a delivery report on cue); the real path is in
tests/integration/test_writepath.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import psycopg.errors
import psycopg_pool
import pytest

from deploy.api.app import Lifecycle, create_app
from deploy.api.breaker import CircuitBreaker, CircuitOpenError
from deploy.api.canary import database_problem
from deploy.api.db import DatabaseUnavailable
from deploy.api.events_out import EventPublisher, NullPublisher
from deploy.api.settings import SettingsError
from tests.unit.test_api_service import FakeClock, FakePool, fake_database, settings

WRITTEN_AT = datetime(2026, 1, 1, tzinfo=UTC)
SERVER_TEXT = "FATAL: password authentication failed for user streamforge at 10.0.0.21"


class CanaryDatabase:
    """Records canary upserts; ``error`` makes the next one fail."""

    def __init__(self) -> None:
        self.upserts: list[tuple[str, str, str, float]] = []
        self.error: BaseException | None = None
        self.rows: dict[str, dict[str, Any]] = {}

    async def upsert_canary(self, key: str, token: str, served_by: str,
                            ttl_seconds: float) -> datetime:
        if self.error is not None:
            raise self.error
        self.upserts.append((key, token, served_by, ttl_seconds))
        self.rows[key] = {"key": key, "token": token, "consumed_at": None}
        return WRITTEN_AT

    async def get_canary(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)


class AcknowledgingProducer:
    """librdkafka stand-in: each produce() reports its delivery at once (``error``: failed),
    or never when ``hold``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.error: Any = None
        self.hold = False
        self.produced: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        self.produced.append((topic, key, value))
        if not self.hold:
            on_delivery(self.error, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class FakeKafkaError:
    def name(self) -> str:
        return "NOT_ENOUGH_REPLICAS"

    def __str__(self) -> str:
        return "Broker: Not enough in-sync replicas (kafka-2.internal:9092)"


def app_with(canary_db: CanaryDatabase, publisher: Any = None, **overrides: Any) -> Any:
    database = fake_database(FakePool())
    database.upsert_canary = canary_db.upsert_canary  # type: ignore[method-assign]
    database.get_canary = canary_db.get_canary  # type: ignore[method-assign]
    return create_app(settings(**overrides), database=database,
                      publisher=publisher or NullPublisher(), lifecycle=Lifecycle())


def publisher_with() -> tuple[EventPublisher, AcknowledgingProducer]:
    made: list[AcknowledgingProducer] = []

    def factory(config: dict[str, Any]) -> AcknowledgingProducer:
        made.append(AcknowledgingProducer(config))
        return made[-1]

    breaker = CircuitBreaker("kafka", failure_threshold=5, clock=FakeClock())
    return EventPublisher("127.0.0.1:1", "events", breaker, producer_factory=factory), made[0]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_canary_upserts_publishes_and_reports_each_hop() -> None:
    db = CanaryDatabase()
    publisher, producer = publisher_with()
    async with client(app_with(db, publisher)) as api:
        response = await api.post("/canary/sfops-b-1?wait=2")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["served_by"] == "api-t"
    assert [(h["hop"], h["status"]) for h in body["hops"]] == [("postgres", "ok"),
                                                               ("kafka", "ok")]
    assert all(isinstance(h["ms"], float) for h in body["hops"])
    key, token, served_by, ttl = db.upserts[0]
    assert (key, token, served_by, ttl) == ("sfops-b-1", body["token"], "api-t", 3600.0)
    topic, record_key, value = producer.produced[0]
    assert topic == "events"
    assert record_key == b"canary:sfops-b-1"
    assert json.loads(value)["token"] == body["token"], "the consumer marks this write only"
    assert response.headers["x-served-by"] == "api-t"


async def test_the_same_key_again_is_the_same_row_with_a_new_token() -> None:
    db = CanaryDatabase()
    async with client(app_with(db)) as api:
        first = (await api.post("/canary/k")).json()["token"]
        second = (await api.post("/canary/k")).json()["token"]
    assert [u[0] for u in db.upserts] == ["k", "k"] and first != second


@pytest.mark.parametrize(("error", "named"), [
    (DatabaseUnavailable("x"), None),  # with a cause, below
    (CircuitOpenError("postgres"), "database circuit breaker open"),
    (psycopg.errors.UndefinedTable(SERVER_TEXT), "table canary missing (SQLSTATE 42P01)"),
])
async def test_a_database_failure_is_named_without_server_text(
        error: BaseException, named: str | None) -> None:
    if named is None:
        try:
            raise DatabaseUnavailable(SERVER_TEXT) from psycopg.errors.ReadOnlySqlTransaction(
                SERVER_TEXT)
        except DatabaseUnavailable as exc:
            error = exc
        named = "database is read-only (SQLSTATE 25006)"
    db = CanaryDatabase()
    db.error = error
    async with client(app_with(db)) as api:
        response = await api.post("/canary/k1")
    # 200 with the report: a 5xx would count against this worker in nginx (max_fails).
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert [(h["hop"], h["status"]) for h in body["hops"]] == [("postgres", "failed")]
    assert body["hops"][0]["error"].startswith(named)
    assert "10.0.0.21" not in response.text and "password" not in response.text


def test_database_problems_by_kind() -> None:
    def wrapped(cause: BaseException) -> DatabaseUnavailable:
        exc = DatabaseUnavailable(SERVER_TEXT)
        exc.__cause__ = cause
        return exc

    assert database_problem(wrapped(psycopg_pool.PoolTimeout(SERVER_TEXT)), 3.0) == \
        "no read-write database connection within 3 s"
    assert database_problem(wrapped(TimeoutError()), 3.0) == "database statement timed out"
    assert database_problem(wrapped(psycopg.OperationalError(SERVER_TEXT)), 3.0) == \
        "database unreachable (no read-write primary answered)"


async def test_kafka_failures_are_named_by_code_only() -> None:
    db = CanaryDatabase()
    publisher, producer = publisher_with()
    producer.error = FakeKafkaError()
    async with client(app_with(db, publisher)) as api:
        body = (await api.post("/canary/k2")).json()
    kafka = body["hops"][1]
    assert (kafka["hop"], kafka["status"]) == ("kafka", "failed")
    assert kafka["error"] == "delivery failed: NOT_ENOUGH_REPLICAS"
    assert "kafka-2.internal" not in json.dumps(body)
    assert publisher.counts["failed"] == 1, "canary deliveries count like any other"


async def test_an_unacknowledged_record_fails_the_kafka_hop_after_the_wait() -> None:
    publisher, producer = publisher_with()
    producer.hold = True
    async with client(app_with(CanaryDatabase(), publisher)) as api:
        body = (await api.post("/canary/k3?wait=0.2")).json()
    assert body["hops"][1]["error"] == "not acknowledged within 0.2 s"


async def test_without_kafka_the_hop_is_skipped() -> None:
    async with client(app_with(CanaryDatabase())) as api:
        body = (await api.post("/canary/k4")).json()
    assert body["ok"] is True
    assert body["hops"][1]["status"] == "skipped"


@pytest.mark.parametrize(("path", "content", "status"), [
    ("/canary/bad%20key", b"", 422),
    ("/canary/" + "k" * 101, b"", 422),
    ("/canary/k?wait=abc", b"", 400),
    ("/canary/k?wait=31", b"", 400),
    ("/canary/k", b'{"x": 1}', 422),
    ("/canary/k", b"x" * 2048, 413),
])
async def test_bad_canary_requests_never_touch_the_database(path: str, content: bytes,
                                                            status: int) -> None:
    db = CanaryDatabase()
    async with client(app_with(db)) as api:
        response = await api.post(path, content=content)
    assert response.status_code == status, response.text
    assert db.upserts == []


async def test_canaries_waiting_for_kafka_are_bounded() -> None:
    publisher, producer = publisher_with()
    producer.hold = True  # every canary waits for its delivery report
    db = CanaryDatabase()
    async with client(app_with(db, publisher, canary_concurrency=1)) as api:
        waiting = asyncio.create_task(api.post("/canary/a?wait=5"))
        while not db.upserts:  # the first holds the only slot
            await asyncio.sleep(0.01)
        refused = await api.post("/canary/b")
        waiting.cancel()
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert [u[0] for u in db.upserts] == ["a"]


async def test_get_canary_reads_the_row_back() -> None:
    db = CanaryDatabase()
    async with client(app_with(db)) as api:
        token = (await api.post("/canary/k5")).json()["token"]
        row = (await api.get("/canary/k5")).json()
        missing = await api.get("/canary/nope")
        bad = await api.get("/canary/bad%20key")
    assert row["token"] == token
    assert missing.status_code == 404 and bad.status_code == 422


def test_canary_settings_are_validated() -> None:
    from deploy.api.settings import Settings

    base = {"SFAPI_DATABASE_URL": "host=h dbname=d user=u"}
    assert Settings.from_env({**base, "SFAPI_CANARY_TTL": "120"}).canary_ttl == 120
    with pytest.raises(SettingsError, match="SFAPI_CANARY_TTL"):
        Settings.from_env({**base, "SFAPI_CANARY_TTL": "5"})
    with pytest.raises(SettingsError, match="SFAPI_CANARY_CONCURRENCY"):
        Settings.from_env({**base, "SFAPI_CANARY_CONCURRENCY": "0"})
