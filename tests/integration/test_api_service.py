"""The streamforge-api service against the real lab: PostgreSQL primary + replica, the three
API workers and nginx in front (deploy/lab). Nothing is faked here.

Tests that take members away put the lab back as they found it (the session lab is shared):
the failover test runs last and re-initialises pg-1 as primary / pg-2 as replica afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from deploy.lab import api as lab_api
from deploy.lab import nginx as lab_nginx
from deploy.lab import postgres as lab_postgres
from deploy.lab.core import LabError, pid_alive

pytestmark = pytest.mark.integration

WORKERS = tuple(lab_api.WORKERS)  # api-1, api-2, api-3
DRAIN_DELAY = 2.0  # deploy/api Settings default (SFAPI_DRAIN_DELAY)
GRACE = lab_api.SHUTDOWN_GRACE_SECONDS


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (httpx.HTTPError, psycopg.Error) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"{what}: not true after {timeout:.0f}s (last: {last!r})")


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    # Idempotent: also restarts a member or worker a previous test left stopped.
    try:
        lab.ensure("pg", "api", "nginx")
    except LabError:  # pg-1 is a standby (another file's switchover): its init step refuses
        lab.ensure("api", "nginx")
    # These tests start from pg-1 primary / pg-2 standby; a test file run before this one on
    # the same lab (any order: two xdist workers take files as they come) may have switched.
    if in_recovery(lab, "pg-1") or not in_recovery(lab, "pg-2"):
        _restore_topology(lab)
    for name in WORKERS:
        wait_for(lambda n=name: ready(lab, n).status_code == 200, 30, f"{name} ready")
    return lab


def worker_url(lab: Any, name: str) -> str:
    return f"http://127.0.0.1:{lab.port(lab_api.WORKERS[name])}"


def nginx_url(lab: Any) -> str:
    return f"http://127.0.0.1:{lab.port(lab_nginx.PORT_OFFSET)}"


def ready(lab: Any, name: str) -> httpx.Response:
    return httpx.get(f"{worker_url(lab, name)}/health/ready", timeout=5.0)


def superuser(lab: Any, member: str) -> psycopg.Connection[Any]:
    component = lab.component(member)
    return psycopg.connect(**component.superuser_conninfo(lab.lab), autocommit=True)


def in_recovery(lab: Any, member: str) -> bool:
    with superuser(lab, member) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return bool(row[0])


# -- live vs ready ---------------------------------------------------------------------------------
def test_every_worker_is_live_and_ready_and_names_itself(stack: Any) -> None:
    for name in WORKERS:
        live = httpx.get(f"{worker_url(stack, name)}/health/live", timeout=5.0)
        assert live.status_code == 200
        assert live.headers["X-Served-By"] == name
        response = ready(stack, name)
        assert response.status_code == 200, response.text
        assert response.headers["X-Served-By"] == name
        health = httpx.get(f"{worker_url(stack, name)}/health", timeout=5.0).json()
        assert health["worker"] == name and health["ready"] is True
        assert health["database"]["breaker"]["state"] == "closed"
        assert "password" not in str(health)


def test_write_and_read_back_through_nginx(stack: Any) -> None:
    marker = uuid.uuid4().hex
    with httpx.Client(base_url=nginx_url(stack), timeout=10.0) as client:
        created = client.post("/events", json={"marker": marker})
        assert created.status_code == 201, created.text
        assert created.headers["X-Served-By"] in WORKERS
        event_id = created.json()["id"]
        assert created.json()["served_by"] == created.headers["X-Served-By"]
        # Every worker reads the same row from the primary.
        for name in WORKERS:
            got = httpx.get(f"{worker_url(stack, name)}/events/{event_id}", timeout=10.0)
            assert got.status_code == 200
            assert got.json()["payload"] == {"marker": marker}
        listed = client.get("/events", params={"after_id": event_id - 1, "limit": 5}).json()
        assert listed["events"][0]["id"] == event_id
        assert client.get("/events/999999999").status_code == 404


def test_a_primary_outage_makes_ready_503_while_live_stays_200(stack: Any) -> None:
    """Only the replica left: read-write sessions are impossible, so no worker is ready."""
    assert not in_recovery(stack, "pg-1"), "the lab's initial primary is pg-1"
    stack.stop("pg-1")
    try:
        for name in WORKERS:
            response = wait_for(
                lambda n=name: (r := ready(stack, n)).status_code == 503 and r,
                15,
                f"{name} not ready without a primary",
            )
            assert response.json()["reason"].startswith("database"), response.text
            assert httpx.get(f"{worker_url(stack, name)}/health/live", timeout=5).status_code == 200
        refused = httpx.post(f"{worker_url(stack, 'api-1')}/events", json={}, timeout=15.0)
        assert refused.status_code == 503
        assert refused.json()["error"] == "database unavailable"
    finally:
        stack.start("pg-1")
    # The same processes recover by themselves (pool reconnect + breaker half-open probe).
    # Readiness uses a connection of its own: the pool is checked apart, by a pooled query.
    pids = {name: stack.pid(name) for name in WORKERS}
    for name in WORKERS:
        wait_for(lambda n=name: ready(stack, n).status_code == 200, 30, f"{name} ready again")
        _wait_pool_serves(stack, name)
    assert {name: stack.pid(name) for name in WORKERS} == pids


def _wait_pool_serves(lab: Any, name: str) -> None:
    """Until a query on a pooled connection answers (after an outage the pool reconnects with
    a backoff of its own, which readiness does not wait for)."""
    wait_for(lambda: httpx.get(f"{worker_url(lab, name)}/slow", params={"seconds": 0},
                               timeout=10).status_code == 200,
             30, f"{name} serving from its pool")


# -- graceful shutdown -----------------------------------------------------------------------------
def _in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        result["finished_after"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def _wait_in_flight(lab: Any, name: str) -> None:
    wait_for(
        lambda: httpx.get(f"{worker_url(lab, name)}/health", timeout=5).json()["in_flight"] >= 1,
        10,
        f"slow request in flight on {name}",
        interval=0.05,
    )


def _wait_exit(pid: int, timeout: float) -> float:
    started = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - started > timeout:
            pytest.fail(f"worker pid {pid} still running {timeout:.0f}s after SIGTERM")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def restart_worker(stack: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        stack.start(name)


def test_sigterm_drains_an_in_flight_request_and_exits_within_the_bound(
    stack: Any, restart_worker: list[str]
) -> None:
    name = "api-3"
    restart_worker.append(name)
    pid = stack.pid(name)
    assert pid is not None
    url = worker_url(stack, name)
    _wait_pool_serves(stack, name)  # an earlier test's outage may still be healing
    thread, result = _in_background(
        lambda: httpx.get(f"{url}/slow", params={"seconds": 4}, timeout=30.0)
    )
    _wait_in_flight(stack, name)

    os.kill(pid, signal.SIGTERM)
    signalled = time.monotonic()
    # Readiness turns 503 at once, while the worker still accepts connections (drain delay).
    draining = httpx.get(f"{url}/health/ready", timeout=5.0)
    assert draining.status_code == 503, draining.text
    assert draining.json()["reason"] == "shutting down"
    assert draining.headers["connection"] == "close"
    assert time.monotonic() - signalled < DRAIN_DELAY
    assert httpx.get(f"{url}/health/live", timeout=5.0).status_code == 200

    exited_after = _wait_exit(pid, DRAIN_DELAY + GRACE + 10)
    thread.join(timeout=10)
    assert "error" not in result, result.get("error")
    slow = result["value"]
    assert slow.status_code == 200, slow.text
    assert slow.json() == {"slept": 4.0, "worker": name}
    # It waited for the request, and not much longer.
    assert exited_after < DRAIN_DELAY + 4 + 5, exited_after
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health/live", timeout=2.0)


def test_a_request_longer_than_the_grace_does_not_hold_the_shutdown(
    stack: Any, restart_worker: list[str]
) -> None:
    name = "api-2"
    restart_worker.append(name)
    pid = stack.pid(name)
    assert pid is not None
    url = worker_url(stack, name)
    thread, result = _in_background(
        lambda: httpx.get(f"{url}/slow", params={"seconds": GRACE + 30}, timeout=GRACE + 40)
    )
    _wait_in_flight(stack, name)
    os.kill(pid, signal.SIGTERM)
    exited_after = _wait_exit(pid, DRAIN_DELAY + GRACE + 10)
    assert exited_after < DRAIN_DELAY + GRACE + 6, exited_after
    thread.join(timeout=10)
    # The cut request got no 200 (connection closed, or a 5xx): never a fake success.
    value = result.get("value")
    assert value is None or value.status_code != 200


# -- Kafka: every accepted write is published after the commit ---------------------------------
@pytest.mark.kafka
def test_accepted_writes_are_published_to_kafka(stack: Any) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from deploy.lab import kafka as lab_kafka

    stack.ensure("kafka")
    name = "api-1"
    # ensure() restarted any worker started before Kafka (deploy/lab/ops.py).
    created = httpx.post(f"{worker_url(stack, name)}/events", json={"k": "v"}, timeout=10)
    assert created.status_code == 201
    assert created.json()["event_published"] == "queued"
    event_id = created.json()["id"]

    def delivered() -> bool:
        kafka = httpx.get(f"{worker_url(stack, name)}/health", timeout=5).json()["kafka"]
        return kafka["counts"]["delivered"] >= 1

    wait_for(delivered, 20, "delivery report from Kafka")
    consumer = Consumer(
        {
            **lab_kafka.client_config(stack.lab),
            "group.id": f"test-api-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(lab_kafka.APP_TOPIC, timeout=10)
        partitions = metadata.topics[lab_kafka.APP_TOPIC].partitions
        consumer.assign([TopicPartition(lab_kafka.APP_TOPIC, p, 0) for p in partitions])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.key() == str(event_id).encode():
                assert b'"served_by":"api-1"' in message.value()
                break
        else:
            pytest.fail(f"event {event_id} not found on {lab_kafka.APP_TOPIC}")
    finally:
        consumer.close()


# -- failover (last: it changes the topology, then restores it) ------------------------------------
def test_the_service_follows_a_failover_without_restarting(stack: Any) -> None:
    assert not in_recovery(stack, "pg-1") and in_recovery(stack, "pg-2")
    pids = {name: stack.pid(name) for name in WORKERS}
    with httpx.Client(base_url=nginx_url(stack), timeout=10.0) as client:
        assert client.post("/events", json={"phase": "before"}).status_code == 201
        try:
            with superuser(stack, "pg-2") as conn:
                row = conn.execute("SELECT pg_promote(true, 30)").fetchone()
            assert row is not None and row[0] is True, "pg_promote did not finish"
            stack.stop("pg-1")
            failed_over = time.monotonic()

            def write_succeeds() -> bool:
                return client.post("/events", json={"phase": "after"}).status_code == 201

            wait_for(write_succeeds, 15, "a write through nginx after the failover")
            recovered_after = time.monotonic() - failed_over
            # Every worker follows, not just the one nginx happened to pick.
            ids: list[int] = []
            for name in WORKERS:

                def worker_writes(n: str = name) -> bool:
                    r = httpx.post(f"{worker_url(stack, n)}/events", json={"w": n}, timeout=10)
                    if r.status_code == 201:
                        ids.append(r.json()["id"])
                    return r.status_code == 201

                wait_for(worker_writes, 15, f"{name} writes after the failover")
            served = [client.post("/events", json={"i": i}) for i in range(12)]
            assert [r.status_code for r in served] == [201] * 12
            assert {r.headers["X-Served-By"] for r in served} == set(WORKERS)
            assert {name: stack.pid(name) for name in WORKERS} == pids, "no worker restarted"
            # The writes landed on the new primary.
            with psycopg.connect(
                **{**stack.component("pg-2").superuser_conninfo(stack.lab), "dbname": "streamforge"}
            ) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM events WHERE id = ANY(%s)", (ids,)
                ).fetchone()
            assert row is not None and row[0] == len(ids) == len(WORKERS)
            print(f"writes through nginx recovered {recovered_after:.1f}s after the failover")
            assert recovered_after < 15
        finally:
            _restore_topology(stack)


def _restore_topology(lab: Any) -> None:
    """Back to pg-1 primary / pg-2 streaming replica: re-initialise both from scratch."""
    lab.stop("pg-2")
    lab.stop("pg-1")
    lab_postgres.wipe(lab.lab)
    lab.ensure("pg")
    for name in WORKERS:
        wait_for(lambda n=name: ready(lab, n).status_code == 200, 30, f"{name} ready after restore")
