"""The reference API survives abuse, against the real lab (PostgreSQL, api-1..3, nginx).

- 50 concurrent slow requests through nginx are refused by nginx itself (404, no worker ever
  sees them); 50 concurrent slow requests straight at each worker (where the lab enables
  /slow) are bounded below the pool size, the excess refused with 429 — and readiness, checked
  on every worker while the slow slots are full, stays 200 throughout, as do ordinary writes.
- A burst of invalid payloads (NUL, lone surrogate, NaN, oversized, wrong schema, nesting) gets
  4xx only — never 500 — and leaves every worker's circuit breaker closed, with no failure and
  no success counted.

Outcomes are asserted, never timings.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import httpx
import pytest

from deploy.lab import api as lab_api
from tests.integration.test_api_service import WORKERS, nginx_url, ready, wait_for, worker_url

pytestmark = pytest.mark.integration

CONCURRENT_SLOW = 50
SLOW_SECONDS = 6  # long enough that all 50 are in flight together


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    lab.ensure("pg", "api", "nginx")
    for name in WORKERS:
        wait_for(lambda n=name: ready(lab, n).status_code == 200, 30, f"{name} ready")
    return lab


def health(lab: Any, name: str) -> dict[str, Any]:
    response = httpx.get(f"{worker_url(lab, name)}/health", timeout=10.0)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_get(port: int, target: str) -> tuple[int, str]:
    """GET with the request target sent byte for byte (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split()[1]), head


# -- slow requests -------------------------------------------------------------------------------
def test_nginx_never_routes_slow_in_any_spelling(stack: Any) -> None:
    from deploy.lab import nginx as lab_nginx

    port = stack.port(lab_nginx.PORT_OFFSET)
    for target in ("/slow?seconds=1", "/slow", "/slow/", "//slow", "/./slow", "/%73low",
                   "/slow/x?seconds=1"):
        status, head = raw_get(port, target)
        assert status == 404, (target, head)
        assert "X-Served-By" not in head, f"{target} reached a worker: {head}"


async def test_fifty_slow_requests_make_no_replica_unready(stack: Any) -> None:
    limit = lab_api.SLOW_CONCURRENCY
    before = {name: health(stack, name)["slow"] for name in WORKERS}
    assert all(b["enabled"] and b["limit"] == limit for b in before.values()), before
    no_pool_limit = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=60.0, limits=no_pool_limit) as client:

        async def slow(url: str) -> httpx.Response:
            return await client.get(f"{url}/slow", params={"seconds": SLOW_SECONDS})

        via_nginx = [asyncio.create_task(slow(nginx_url(stack))) for _ in range(CONCURRENT_SLOW)]
        direct = {
            name: [
                asyncio.create_task(slow(worker_url(stack, name)))
                for _ in range(CONCURRENT_SLOW)
            ]
            for name in WORKERS
        }
        # Readiness of every worker, checked again and again until the slow requests are done;
        # each check also records how many slow slots were taken at that moment. The workers
        # are asked at once, on a client of their own (a fresh run on a loaded machine asked
        # them one by one behind the 200 slow requests' connection set-up: two rounds in the
        # 4 s, the first before any slow request had arrived, the second after they ended).
        checks: list[tuple[str, int, int]] = []
        writes: list[int] = []
        pending = [t for tasks in direct.values() for t in tasks]

        async def check(probe: httpx.AsyncClient, name: str) -> tuple[str, int, int]:
            url = worker_url(stack, name)
            in_flight = (await probe.get(f"{url}/health")).json()["slow"]["in_flight"]
            return name, (await probe.get(f"{url}/health/ready")).status_code, in_flight

        async with httpx.AsyncClient(timeout=30.0) as probe:
            while not all(t.done() for t in pending):
                checks += await asyncio.gather(*(check(probe, name) for name in WORKERS))
                created = await probe.post(f"{nginx_url(stack)}/events",
                                           json={"during": "slow"})
                writes.append(created.status_code)
                await asyncio.sleep(0.05)
        nginx_results = await asyncio.gather(*via_nginx)
        direct_results = {name: await asyncio.gather(*tasks) for name, tasks in direct.items()}

    # Through nginx: refused by nginx itself, no worker involved.
    assert [r.status_code for r in nginx_results] == [404] * CONCURRENT_SLOW
    assert not any("X-Served-By" in r.headers for r in nginx_results)
    after = {name: health(stack, name)["slow"] for name in WORKERS}
    for name in WORKERS:
        statuses = Counter(r.status_code for r in direct_results[name])
        print(f"{name}: slow requests {dict(statuses)}")
        assert set(statuses) <= {200, 429}, statuses
        assert statuses[429] >= 1 and statuses[200] >= 1, statuses
        assert after[name]["refused"] - before[name]["refused"] == statuses[429]
        assert after[name]["served"] - before[name]["served"] == statuses[200]
        assert after[name]["in_flight"] == 0
        # The load was really on while readiness was checked: slots full, still ready.
        assert any(c[0] == name and c[2] == limit for c in checks), checks
    print(f"readiness checks during the load: {len(checks)}, writes: {Counter(writes)}")
    assert {c[1] for c in checks} == {200}, [c for c in checks if c[1] != 200]
    assert set(writes) == {201}, Counter(writes)
    for name in WORKERS:
        assert health(stack, name)["database"]["breaker"]["state"] == "closed"


# -- invalid payloads ----------------------------------------------------------------------------
OVERSIZED = b'{"k": "' + b"x" * (70 * 1024) + b'"}'  # over the 64 KiB limit of nginx and API
INVALID_PAYLOADS: dict[str, bytes] = {
    "NUL": b'{"k": "a\\u0000b"}',
    "NUL in a key": b'{"\\u0000": 1}',
    "lone surrogate": b'{"k": "\\ud83d"}',
    "NaN": b'{"k": NaN}',
    "overflowing number": b'{"k": 1e999}',
    "array": b"[1, 2, 3]",
    "string": b'"just a string"',
    "too deep": b'{"k": ' + b"[" * 40 + b"]" * 40 + b"}",
    "deeper than the parser": b"[" * 30_000 + b"]" * 30_000,
    "not JSON": b"{not json",
    "not UTF-8": b'{"k": "\xff"}',
    "oversized": OVERSIZED,
}
BURST_COPIES = 10


async def test_a_burst_of_invalid_payloads_gets_4xx_and_leaves_the_breakers_closed(
    stack: Any,
) -> None:
    before = {name: health(stack, name)["database"]["breaker"] for name in WORKERS}
    assert all(b["state"] == "closed" for b in before.values()), before
    targets = [nginx_url(stack), *(worker_url(stack, name) for name in WORKERS)]
    no_pool_limit = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=60.0, limits=no_pool_limit) as client:
        jobs = [
            (what, target, client.post(f"{target}/events", content=body,
                                       headers={"Content-Type": "application/json"}))
            for what, body in INVALID_PAYLOADS.items()
            for target in targets
            for _ in range(BURST_COPIES)
        ]
        responses = await asyncio.gather(*(job for _, _, job in jobs))
        valid = await client.post(f"{nginx_url(stack)}/events", json={"after": "the burst"})

    wrong = [(what, target, r.status_code, r.text[:200])
             for (what, target, _), r in zip(jobs, responses, strict=True)
             if not 400 <= r.status_code < 500]
    assert not wrong, wrong
    statuses = Counter(r.status_code for r in responses)
    print(f"invalid payloads: {len(responses)}, statuses {dict(statuses)}")
    for (what, _, _), r in zip(jobs, responses, strict=True):
        if what == "oversized":
            assert r.status_code == 413
        elif "X-Served-By" in r.headers:  # answered by a worker: a JSON error, no traceback
            assert set(r.json()) == {"error"}, r.text
    assert valid.status_code == 201, valid.text
    after = {name: health(stack, name)["database"]["breaker"] for name in WORKERS}
    for name in WORKERS:
        assert after[name]["state"] == "closed"
        assert after[name]["consecutive_failures"] == 0
        assert after[name]["times_opened"] == before[name]["times_opened"]


def test_public_endpoints_reveal_no_database_or_kafka_address(stack: Any) -> None:
    from deploy.lab import postgres as lab_postgres

    conninfo = lab_postgres.conninfo_for_app(stack.lab)
    for name in WORKERS:
        text = httpx.get(f"{worker_url(stack, name)}/health", timeout=10.0).text
        assert "host=" not in text and "user=" not in text and "port=" not in text
        assert "127.0.0.1" not in text, text
        assert conninfo not in text
        assert "streamforge" not in text.replace("streamforge-api", ""), text
