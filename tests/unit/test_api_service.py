"""Unit tests of the streamforge-api service (deploy/api).

The database and Kafka are faked only for what a real server cannot produce on demand:
N failures in a row (breaker), a shutting-down flag, a read that fails twice then succeeds,
a producer whose local queue is full. Everything else is covered against the lab in
tests/integration/test_api_service.py.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest
import uvicorn
from starlette.testclient import TestClient

from deploy.api.app import Lifecycle, create_app
from deploy.api.breaker import CircuitBreaker, CircuitOpenError
from deploy.api.db import Database, ReservedConnection
from deploy.api.events_out import EventPublisher, NullPublisher, producer_config
from deploy.api.server import DrainingServer
from deploy.api.settings import Settings, SettingsError

CONNINFO = (
    "host=127.0.0.1,127.0.0.1 port=1,2 dbname=streamforge user=sf target_session_attrs=read-write"
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class FakeConnection:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool
        self.closed = False

    async def execute(self, sql: str, params: Any = None) -> FakeCursor:
        self.pool.statements.append(sql)
        if self.pool.statement_error is not None:
            raise self.pool.statement_error
        if sql.startswith("SELECT pg_sleep") and self.pool.sleep_gate is not None:
            await self.pool.sleep_gate.wait()  # held until the test releases it
        if sql.startswith("SELECT 1"):
            if self.pool.ping_error is not None:
                error, self.pool.ping_error = self.pool.ping_error, None
                raise error
            return FakeCursor([(1, self.pool.in_recovery)])
        if sql.startswith("INSERT"):
            self.pool.next_id += 1
            return FakeCursor([(self.pool.next_id, params[0].obj, params[1], NOW)])
        if "WHERE id = %s" in sql:
            found = params[0] <= self.pool.next_id
            return FakeCursor([(params[0], {"n": 1}, "api-x", NOW)] if found else [])
        if "WHERE id > %s" in sql:
            return FakeCursor([(i, {}, "api-x", NOW) for i in range(params[0] + 1, 3)])
        return FakeCursor([])

    async def close(self) -> None:
        self.closed = True


class FakePool:
    """Stands in for AsyncConnectionPool: ``failures`` getconn calls fail first. Its
    ``connect`` stands in for the readiness connection's connect (same failures)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.getconn_calls = 0
        self.connects = 0
        self.connections: list[FakeConnection] = []  # made by connect()
        self.exhausted = False  # every getconn times out (the pool is busy)
        self.ping_error: BaseException | None = None  # the next SELECT 1 fails once
        self.sleep_gate: asyncio.Event | None = None
        self.statements: list[str] = []
        self.statement_error: BaseException | None = None
        self.in_recovery = False
        self.next_id = 0
        self.opened = False
        self.closed = False

    async def open(self, wait: bool = True) -> None:
        self.opened = True

    async def close(self, timeout: float = 5.0) -> None:
        self.closed = True

    async def connect(self) -> FakeConnection:
        self.connects += 1
        if self.failures > 0:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused (fake)")
        self.connections.append(FakeConnection(self))
        return self.connections[-1]

    @asynccontextmanager
    async def connection(self, timeout: float | None = None):  # type: ignore[no-untyped-def]
        self.getconn_calls += 1
        if self.exhausted:
            raise psycopg_pool.PoolTimeout("couldn't get a connection after 1.00 sec (fake)")
        if self.failures > 0:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused (fake)")
        yield FakeConnection(self)

    def get_stats(self) -> dict[str, int]:
        return {"pool_min": 1, "pool_max": 5, "pool_size": 1}


class RecordingPublisher(NullPublisher):
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def publish(self, key: str, value: dict[str, Any]) -> str:
        self.published.append((key, value))
        return "queued"

    def close(self, timeout: float) -> None:
        self.closed = True


def settings(**overrides: Any) -> Settings:
    return Settings(worker_name="api-t", database_url=CONNINFO, **overrides)


def fake_database(pool: FakePool, breaker: CircuitBreaker | None = None) -> Database:
    breaker = breaker or CircuitBreaker("postgres")
    return Database(pool, breaker, reserved=ReservedConnection(pool.connect), timeout=1.0)


def make(
    pool: FakePool | None = None,
    *,
    failures_to_open: int = 3,
    clock: FakeClock | None = None,
    publisher: Any = None,
    **setting_overrides: Any,
) -> tuple[TestClient, FakePool, Database, Lifecycle]:
    pool = pool or FakePool()
    breaker = CircuitBreaker(
        "postgres",
        failure_threshold=failures_to_open,
        reset_timeout=5.0,
        clock=clock or FakeClock(),
    )
    database = fake_database(pool, breaker)
    lifecycle = Lifecycle()
    app = create_app(
        settings(**setting_overrides),
        database=database,
        publisher=publisher or NullPublisher(),
        lifecycle=lifecycle,
    )
    return TestClient(app, raise_server_exceptions=False), pool, database, lifecycle


# -- health ----------------------------------------------------------------------------------
def test_live_and_ready_when_database_answers() -> None:
    client, pool, _, _ = make()
    with client:
        assert pool.opened
        live = client.get("/health/live")
        ready = client.get("/health/ready")
    assert pool.closed, "lifespan shutdown closes the pool"
    assert live.status_code == 200 and live.headers["X-Served-By"] == "api-t"
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.headers["X-Served-By"] == "api-t"


def test_live_stays_200_while_database_is_down_but_ready_is_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _, _, _ = make(FakePool(failures=100))
    with client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
    assert ready.status_code == 503
    # Generic for the public endpoint; the detail is in the log.
    assert ready.json()["reason"] == "database unavailable"
    assert "OperationalError: connection refused (fake)" in caplog.text


def test_ready_is_503_when_shutting_down_and_asks_clients_to_close() -> None:
    client, pool, _, lifecycle = make()
    with client:
        lifecycle.begin_shutdown()
        ready = client.get("/health/ready")
        live = client.get("/health/live")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "shutting down"
    assert ready.headers["connection"] == "close"
    assert live.status_code == 200
    assert not any(s.startswith("SELECT 1") for s in pool.statements), "no DB call needed"


def test_ready_is_503_when_connected_to_a_server_in_recovery() -> None:
    client, pool, _, _ = make()
    pool.in_recovery = True
    with client:
        ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "database unavailable"


def test_health_summary() -> None:
    client, _, _, _ = make()
    with client:
        body = client.get("/health").json()
    assert body["worker"] == "api-t"
    assert body["ready"] is True
    assert body["in_flight"] == 0
    assert body["database"]["breaker"]["state"] == "closed"
    assert body["kafka"] == {"state": "disabled"}
    assert body["slow"] == {"enabled": False, "limit": 0, "in_flight": 0, "served": 0,
                            "refused": 0}


# -- circuit breaker around the database --------------------------------------------------------
def test_breaker_opens_after_n_failures_then_fails_fast_and_recovers_with_one_probe() -> None:
    clock = FakeClock()
    client, pool, database, _ = make(FakePool(failures=3), failures_to_open=3, clock=clock)
    with client:
        for _ in range(3):
            assert client.post("/events", json={"a": 1}).status_code == 503
        assert database.breaker.state == "open"
        calls = pool.getconn_calls
        refused = client.post("/events", json={"a": 1})
        assert refused.status_code == 503
        assert refused.json()["breaker"] == "open"
        assert "Retry-After" in refused.headers
        assert pool.getconn_calls == calls, "an open breaker does not touch the pool"
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "breaker open" in ready.json()["reason"]

        clock.now += 5.0  # reset timeout over: half-open, the next call is the probe
        assert database.breaker.state == "half-open"
        assert client.post("/events", json={"a": 2}).status_code == 201
        assert database.breaker.state == "closed"


def test_breaker_allows_exactly_one_probe_in_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=2, reset_timeout=1.0, clock=clock)
    breaker.record_failure()
    breaker.allow()  # one failure: still closed
    breaker.record_failure()
    with pytest.raises(CircuitOpenError):
        breaker.allow()
    clock.now += 1.0
    breaker.allow()  # the probe
    with pytest.raises(CircuitOpenError):
        breaker.allow()  # a second caller while the probe is out
    breaker.record_failure()  # probe failed: open again, for a full reset timeout
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.allow()
    clock.now += 1.0
    breaker.allow()
    breaker.release()  # probe cancelled: the slot is free again
    breaker.allow()
    breaker.record_success()
    assert breaker.snapshot() == {"state": "closed", "consecutive_failures": 0, "times_opened": 2}


def test_a_database_error_that_is_not_an_outage_does_not_count_against_the_breaker() -> None:
    client, pool, database, _ = make(failures_to_open=1)
    pool.statement_error = psycopg.errors.UniqueViolation("duplicate (fake)")
    with client:
        response = client.post("/events", json={"a": 1})
    assert response.status_code == 500
    assert response.headers["X-Served-By"] == "api-t", "even a 500 names the worker"
    assert database.breaker.state == "closed"


def test_a_read_only_server_closes_the_connection_and_counts_as_failure() -> None:
    client, pool, database, _ = make(failures_to_open=1)
    pool.statement_error = psycopg.errors.ReadOnlySqlTransaction("read-only (fake)")
    with client:
        response = client.post("/events", json={"a": 1})
    assert response.status_code == 503
    assert database.breaker.state == "open"


# -- retries: reads only -------------------------------------------------------------------------
def test_get_event_is_retried_with_backoff_on_a_transient_failure() -> None:
    client, pool, _, _ = make(FakePool(failures=2), failures_to_open=10)
    pool.next_id = 5
    with client:
        response = client.get("/events/5")
    assert response.status_code == 200
    assert response.json()["id"] == 5
    assert pool.getconn_calls == 3


def test_get_event_gives_up_after_three_attempts() -> None:
    client, pool, _, _ = make(FakePool(failures=10), failures_to_open=10)
    with client:
        response = client.get("/events/5")
    assert response.status_code == 503
    assert pool.getconn_calls == 3


def test_insert_is_never_retried() -> None:
    client, pool, _, _ = make(FakePool(failures=1), failures_to_open=10)
    with client:
        response = client.post("/events", json={"a": 1})
    assert response.status_code == 503
    assert pool.getconn_calls == 1


def test_events_crud_and_validation() -> None:
    publisher = RecordingPublisher()
    client, _, _, _ = make(publisher=publisher)
    with client:
        created = client.post("/events", json={"k": "v"})
        assert created.status_code == 201
        assert created.json()["id"] == 1
        assert created.json()["event_published"] == "queued"
        assert client.get("/events/1").json()["payload"] == {"n": 1}
        assert client.get("/events/2").status_code == 404
        listed = client.get("/events", params={"after_id": 0, "limit": 10}).json()
        assert [e["id"] for e in listed["events"]] == [1, 2]
        assert client.post("/events", content=b"{not json").status_code == 400
        assert client.get("/events", params={"limit": 0}).status_code == 400
        assert client.get("/events", params={"after_id": "x"}).status_code == 400
    assert publisher.started and publisher.closed
    # Published after the INSERT returned, with the committed row.
    assert publisher.published == [
        ("1", {"id": 1, "payload": {"k": "v"}, "served_by": "api-t", "created_at": NOW.isoformat()})
    ]


def test_without_kafka_the_write_says_disabled() -> None:
    client, _, _, _ = make()
    with client:
        assert client.post("/events", json={}).json()["event_published"] == "disabled"


# -- Kafka publishing ----------------------------------------------------------------------------
class FakeProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[Any] = []
        self.raise_on_produce: BaseException | None = None

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        if self.raise_on_produce is not None:
            raise self.raise_on_produce
        self.produced.append((topic, key, value, on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.produced)


def make_publisher(clock: FakeClock) -> tuple[EventPublisher, FakeProducer]:
    producers: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        producers.append(FakeProducer(config))
        return producers[-1]

    breaker = CircuitBreaker("kafka", failure_threshold=2, reset_timeout=5.0, clock=clock)
    publisher = EventPublisher("127.0.0.1:1", "t", breaker, producer_factory=factory)
    return publisher, producers[0]


def test_producer_is_configured_for_durability_and_bounded_delivery() -> None:
    _, producer = make_publisher(FakeClock())
    assert producer.config["acks"] == "all"
    assert producer.config["enable.idempotence"] is True
    assert producer.config["delivery.timeout.ms"] == 10_000


def test_delivery_failures_open_the_kafka_breaker_but_writes_still_succeed() -> None:
    clock = FakeClock()
    publisher, producer = make_publisher(clock)
    client, _, _, _ = make(publisher=publisher)
    with client:
        first = client.post("/events", json={"n": 1})
        assert first.status_code == 201 and first.json()["event_published"] == "queued"
        for _, _, _, on_delivery in list(producer.produced):
            on_delivery("Local: Message timed out", None)
        second = client.post("/events", json={"n": 2})
        assert second.json()["event_published"] == "queued"
        producer.produced[-1][3]("Local: Message timed out", None)
        assert publisher.breaker.state == "open"
        third = client.post("/events", json={"n": 3})
        assert third.status_code == 201
        assert third.json()["event_published"] == "skipped:breaker-open"
        kafka = client.get("/health").json()["kafka"]
    assert kafka["breaker"]["state"] == "open"
    assert kafka["counts"]["failed"] == 2
    assert kafka["counts"]["skipped_breaker_open"] == 1
    assert "last_error" not in kafka and "bootstrap" not in kafka, "error text is logged only"


def test_a_full_local_queue_never_fails_the_write() -> None:
    publisher, producer = make_publisher(FakeClock())
    producer.raise_on_produce = BufferError("Local: Queue full")
    client, _, _, _ = make(publisher=publisher)
    with client:
        response = client.post("/events", json={"n": 1})
    assert response.status_code == 201
    assert response.json()["event_published"] == "skipped:produce-error"
    assert publisher.counts["produce_errors"] == 1


# -- settings ------------------------------------------------------------------------------------
def test_settings_from_env_read_the_password_file_and_never_show_it(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    loaded = Settings.from_env(
        {
            "SFAPI_WORKER_NAME": "api-9",
            "SFAPI_DATABASE_URL": CONNINFO,
            "SFAPI_DATABASE_PASSWORD_FILE": str(secret),
            "SFAPI_SHUTDOWN_GRACE": "7",
            "SFAPI_POOL_MAX": "3",
        }
    )
    assert loaded.database_password == "s3cret-value"
    assert loaded.shutdown_grace == 7.0 and loaded.pool_min == 1 and loaded.pool_max == 3
    assert loaded.kafka_bootstrap == "" and loaded.kafka_topic == "streamforge.events"
    assert "s3cret" not in loaded.redacted_database()
    assert "s3cret" not in repr(create_app(loaded).state.database.snapshot())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SFAPI_DATABASE_URL is not set"),
        ({"SFAPI_DATABASE_URL": CONNINFO + " password=x"}, "must not contain a password"),
        ({"SFAPI_DATABASE_URL": CONNINFO, "SFAPI_SHUTDOWN_GRACE": "soon"}, "not a number"),
        ({"SFAPI_DATABASE_URL": CONNINFO, "SFAPI_POOL_MIN": "6"}, "SFAPI_POOL_MIN=6"),
        (
            {"SFAPI_DATABASE_URL": CONNINFO, "SFAPI_DATABASE_PASSWORD_FILE": "/nonexistent/pw"},
            "SFAPI_DATABASE_PASSWORD_FILE",
        ),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_kafka_sasl_ssl_from_env_password_by_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-pw"
    secret.write_text("k4fka-value\n")
    loaded = Settings.from_env({
        "SFAPI_DATABASE_URL": CONNINFO, "SFAPI_KAFKA_BOOTSTRAP": "k1:9093",
        "SFAPI_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "SFAPI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SFAPI_KAFKA_SASL_USERNAME": "streamforge",
        "SFAPI_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "SFAPI_KAFKA_SSL_CA_LOCATION": "/etc/ca.crt"})
    assert dict(loaded.kafka_security) == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "streamforge", "sasl.password": "k4fka-value",
        "ssl.ca.location": "/etc/ca.crt"}
    assert "k4fka-value" not in repr(loaded)
    config = producer_config("k1:9093", "c", 10.0, loaded.kafka_security)
    assert config["security.protocol"] == "sasl_ssl" and config["acks"] == "all"
    assert Settings.from_env({"SFAPI_DATABASE_URL": CONNINFO}).kafka_security == {
        "security.protocol": "plaintext"}


@pytest.mark.parametrize(("env", "message"), [
    ({"SFAPI_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SFAPI_KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({"SFAPI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SFAPI_KAFKA_SASL_MECHANISM is required"),
    ({"SFAPI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SFAPI_KAFKA_SASL_MECHANISM": "PLAIN",
      "SFAPI_KAFKA_SASL_USERNAME": "u", "SFAPI_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "SFAPI_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw"),
])
def test_kafka_security_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"SFAPI_DATABASE_URL": CONNINFO, **env})


# -- SIGTERM handling ----------------------------------------------------------------------------
def test_sigterm_flips_readiness_at_once_and_closes_listeners_after_the_drain_delay() -> None:
    lifecycle = Lifecycle()
    app = create_app(settings(), database=fake_database(FakePool()), lifecycle=lifecycle)
    server = DrainingServer(uvicorn.Config(app), lifecycle, drain_delay=0.2)
    server.handle_exit(signal.SIGTERM, None)
    assert lifecycle.shutting_down, "readiness turns 503 in the signal handler itself"
    assert not server.should_exit, "still accepting during the drain delay"

    async def ticks() -> bool:
        assert await server.on_tick(1) is False
        await asyncio.sleep(0.25)
        return await server.on_tick(2)

    assert asyncio.run(ticks()) is True
    assert server.should_exit


def test_a_second_signal_skips_the_drain_delay() -> None:
    lifecycle = Lifecycle()
    server = DrainingServer(uvicorn.Config(create_app(settings())), lifecycle, drain_delay=60)
    server.handle_exit(signal.SIGTERM, None)
    assert not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
