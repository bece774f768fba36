"""The reference API under hostile or careless input (deploy/api): slow requests, invalid
bodies, readiness under load, what the public endpoints reveal.

Fakes only for what a real server cannot do on demand (a pool that is exhausted, a statement
held until the test releases it); the same behaviour against the lab is in
tests/integration/test_api_abuse.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import psycopg.errors
import pytest

from deploy.api.app import create_app
from deploy.api.breaker import CircuitBreaker
from deploy.api.events_out import EventPublisher
from deploy.api.payload import MAX_DEPTH, InvalidInput, check_storable, parse_event_payload
from deploy.api.settings import Settings, SettingsError
from tests.unit.test_api_service import (
    CONNINFO,
    FakeClock,
    FakePool,
    FakeProducer,
    fake_database,
    make,
    settings,
)

LIMIT = 1024

# Each is refused before the database is touched: (body, headers, expected status).
INVALID_BODIES: list[tuple[str, bytes, int]] = [
    ("NUL in a value", b'{"k": "a\\u0000b"}', 422),
    ("NUL in a key", b'{"a\\u0000": 1}', 422),
    ("NUL nested", b'{"k": [{"x": ["\\u0000"]}]}', 422),
    ("lone surrogate", b'{"k": "\\ud800"}', 422),
    ("NaN", b'{"k": NaN}', 400),
    ("Infinity", b'{"k": -Infinity}', 400),
    ("overflowing number", b'{"k": 1e999}', 422),
    ("array, not an object", b"[1, 2]", 422),
    ("string, not an object", b'"x"', 422),
    ("null", b"null", 422),
    ("too deep", b'{"k": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}", 422),
    ("not JSON", b"{not json", 400),
    ("not UTF-8", b'{"k": "\xff\xfe"}', 400),
    ("empty", b"", 400),
    ("oversized", b'{"k": "' + b"x" * LIMIT + b'"}', 413),
]


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


# -- request bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("what", "body", "status"), INVALID_BODIES, ids=[b[0] for b in INVALID_BODIES]
)
def test_invalid_bodies_get_4xx_and_never_reach_the_database(
    what: str, body: bytes, status: int
) -> None:
    client, pool, _database, _ = make(max_body_bytes=LIMIT)
    with client:
        response = client.post("/events", content=body)
        health = client.get("/health").json()
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert pool.getconn_calls == 0, "refused before any database call"
    assert health["database"]["breaker"] == {
        "state": "closed",
        "consecutive_failures": 0,
        "times_opened": 0,
    }


def test_a_chunked_body_is_cut_at_the_limit() -> None:
    client, pool, _, _ = make(max_body_bytes=LIMIT)

    def chunks() -> Iterator[bytes]:
        yield b'{"k": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    with client:
        response = client.post("/events", content=chunks())
    assert response.status_code == 413
    assert pool.getconn_calls == 0


def test_a_body_at_the_limit_is_accepted() -> None:
    client, _, _, _ = make(max_body_bytes=LIMIT)
    body = b'{"k": "' + b"x" * (LIMIT - 10) + b'"}'
    assert len(body) <= LIMIT
    with client:
        assert client.post("/events", content=body).status_code == 201


def test_invalid_input_neither_closes_nor_feeds_a_half_open_breaker() -> None:
    """Garbage must not count as the probe that proves the database is back."""
    clock = FakeClock()
    client, _pool, database, _ = make(FakePool(failures=3), failures_to_open=3, clock=clock)
    with client:
        for _ in range(3):
            assert client.post("/events", json={"a": 1}).status_code == 503
        clock.now += 5.0
        assert database.breaker.state == "half-open"
        for body, _status in ((b'{"k": "\\u0000"}', 422), (b"[]", 422), (b"{", 400)):
            assert client.post("/events", content=body).status_code == _status
        assert database.breaker.state == "half-open"
        assert database.breaker.snapshot()["consecutive_failures"] == 3
        assert client.post("/events", json={"a": 2}).status_code == 201  # the real probe
        assert database.breaker.state == "closed"


def test_a_value_the_database_refuses_is_422_and_neutral_for_the_breaker() -> None:
    """Defence in depth: if validation ever lets a bad value through, the server's DataError
    is the client's fault — 422, not a 500, and not a success that closes a half-open breaker."""
    clock = FakeClock()
    client, pool, database, _ = make(FakePool(failures=1), failures_to_open=1, clock=clock)
    with client:
        assert client.post("/events", json={"a": 1}).status_code == 503
        clock.now += 5.0
        pool.statement_error = psycopg.errors.UntranslatableCharacter("\\u0000 (fake)")
        response = client.post("/events", json={"a": 1})
        assert response.status_code == 422
        assert response.json() == {"error": "invalid input"}
        assert database.breaker.state == "half-open"
        pool.statement_error = None
        assert client.post("/events", json={"a": 1}).status_code == 201
        assert database.breaker.state == "closed"


def test_nesting_deeper_than_the_json_parser_is_400_not_a_crash() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_event_payload(b"[" * 100_000 + b"]" * 100_000)
    assert refused.value.status == 400


def test_valid_payloads_pass_the_checks() -> None:
    nested: Any = {"leaf": "x"}
    for _ in range(MAX_DEPTH - 1):
        nested = {"n": nested}
    check_storable(nested)
    payload = parse_event_payload(
        json.dumps({"text": "tab\t, esc \x1b, emoji \U0001f600", "n": [1, 2.5, -3e10, None]})
        .encode()
    )
    assert payload["n"] == [1, 2.5, -3e10, None]
    with pytest.raises(InvalidInput):
        check_storable({"n": nested})


# -- what the public endpoints reveal ------------------------------------------------------------
SECRET_DETAIL = 'connection to server at "10.9.8.7", port 5432 failed: FATAL: role "app_owner"'


def test_503_bodies_carry_no_database_detail(caplog: pytest.LogCaptureFixture) -> None:
    client, pool, _, _ = make(failures_to_open=100)
    pool.statement_error = psycopg.OperationalError(SECRET_DETAIL)
    with client:
        responses = [client.post("/events", json={"a": 1}), client.get("/events/1")]
        pool.statement_error = None
        pool.ping_error = psycopg.OperationalError(SECRET_DETAIL)
        responses.append(client.get("/health/ready"))
    for response in responses:
        assert response.status_code == 503
        assert "10.9.8.7" not in response.text and "app_owner" not in response.text
        assert response.json().get("error", "") in ("database unavailable", "")
    assert responses[-1].json()["reason"] == "database unavailable"
    assert "10.9.8.7" in caplog.text, "the detail is in the server log"


def test_health_shows_no_host_user_or_broker_addresses() -> None:
    publisher = EventPublisher(
        "kafka-secret-host:9092",
        "t",
        CircuitBreaker("kafka", clock=FakeClock()),
        producer_factory=FakeProducer,
    )
    publisher._on_error("kafka-secret-host:9092/1: Connect failed")
    pool = FakePool()
    pool.statement_error = psycopg.OperationalError(SECRET_DETAIL)
    client, _, _, _ = make(pool, publisher=publisher)
    with client:
        client.post("/events", json={"a": 1})
        pool.statement_error = None
        text = client.get("/health").text
    for secret in ("127.0.0.1", "user=", "kafka-secret-host", "10.9.8.7", "app_owner"):
        assert secret not in text, secret


# -- readiness does not depend on the request pool -----------------------------------------------
def test_readiness_uses_its_reserved_connection_not_the_pool() -> None:
    client, pool, _, _ = make()
    pool.exhausted = True  # every pooled connection is busy
    with client:
        assert client.post("/events", json={"a": 1}).status_code == 503
        calls = pool.getconn_calls
        ready = client.get("/health/ready")
        again = client.get("/health/ready")
    assert ready.status_code == 200 and again.status_code == 200
    assert pool.getconn_calls == calls, "readiness never waits for the pool"
    assert pool.connects == 1, "one reserved connection, reused"


def test_a_stale_reserved_connection_is_replaced_within_the_same_check() -> None:
    client, pool, _, _ = make()
    with client:
        assert client.get("/health/ready").status_code == 200
        pool.ping_error = psycopg.OperationalError("server closed the connection (fake)")
        assert client.get("/health/ready").status_code == 200, "reconnected, no false 503"
        pool.in_recovery = True  # an old primary back as a standby, on every connection
        assert client.get("/health/ready").status_code == 503
    assert pool.connects == 3


def test_the_reserved_connection_is_closed_at_shutdown() -> None:
    client, pool, _, _ = make()
    with client:
        assert client.get("/health/ready").status_code == 200
    assert [c.closed for c in pool.connections] == [True] and pool.closed


# -- /slow: off by default, bounded when on ------------------------------------------------------
def test_slow_is_404_unless_enabled() -> None:
    client, pool, _, _ = make()
    with client:
        assert client.get("/slow", params={"seconds": "0"}).status_code == 404
    assert pool.getconn_calls == 0


async def test_slow_requests_beyond_the_limit_are_refused_at_once() -> None:
    gate = asyncio.Event()
    pool = FakePool()
    pool.sleep_gate = gate
    database = fake_database(pool)
    app = create_app(settings(slow_enabled=True, slow_concurrency=2), database=database)
    async with asgi_client(app) as client:
        held = [asyncio.create_task(client.get("/slow", params={"seconds": "1"})) for _ in range(2)]
        while (await client.get("/health")).json()["slow"]["in_flight"] < 2:
            await asyncio.sleep(0.01)
        refused = await asyncio.gather(
            *(client.get("/slow", params={"seconds": "1"}) for _ in range(20))
        )
        # Other requests still get a pooled connection, and readiness answers.
        created = await client.post("/events", json={"during": "slow load"})
        ready = await client.get("/health/ready")
        gate.set()
        served = await asyncio.gather(*held)
        slow = (await client.get("/health")).json()["slow"]
    assert [r.status_code for r in refused] == [429] * 20
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    assert created.status_code == 201 and ready.status_code == 200
    assert [r.status_code for r in served] == [200, 200]
    assert slow == {"enabled": True, "limit": 2, "in_flight": 0, "served": 2, "refused": 20}
    assert database.breaker.state == "closed"


def test_slow_still_validates_its_argument() -> None:
    client, _, _, _ = make(slow_enabled=True)
    with client:
        assert client.get("/slow", params={"seconds": "-1"}).status_code == 400
        assert client.get("/slow", params={"seconds": "x"}).status_code == 400
        assert client.get("/slow", params={"seconds": "0.01"}).json()["slept"] == 0.01


# -- settings ------------------------------------------------------------------------------------
def test_slow_and_body_settings_from_env() -> None:
    loaded = Settings.from_env(
        {
            "SFAPI_DATABASE_URL": CONNINFO,
            "SFAPI_SLOW_ENABLED": "true",
            "SFAPI_SLOW_CONCURRENCY": "3",
            "SFAPI_MAX_BODY_BYTES": "2048",
        }
    )
    assert (loaded.slow_enabled, loaded.slow_concurrency, loaded.max_body_bytes) == (
        True,
        3,
        2048,
    )
    default = Settings.from_env({"SFAPI_DATABASE_URL": CONNINFO})
    assert default.slow_enabled is False and default.max_body_bytes == 64 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SFAPI_SLOW_ENABLED": "maybe"}, "SFAPI_SLOW_ENABLED"),
        ({"SFAPI_SLOW_ENABLED": "1", "SFAPI_SLOW_CONCURRENCY": "5"}, "SFAPI_SLOW_CONCURRENCY=5"),
        ({"SFAPI_SLOW_ENABLED": "1", "SFAPI_POOL_MAX": "1"}, "SFAPI_SLOW_CONCURRENCY"),
        ({"SFAPI_MAX_BODY_BYTES": "0"}, "SFAPI_MAX_BODY_BYTES"),
    ],
)
def test_slow_and_body_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"SFAPI_DATABASE_URL": CONNINFO, **env})
