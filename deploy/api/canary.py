"""The write-path canary (``sfops verify``): one request that takes the path a user's write
takes — PostgreSQL commit, then Kafka with acks=all — and says how long each hop took and
which one failed.

``POST /canary/{key}[?wait=S]`` upserts the key's row in table ``canary`` (a new token each
time: the same key written again is the same row, so a canary may be sent again safely),
publishes ``{"canary": key, "token": …}`` to the events topic and waits for its delivery
report (at most ``wait`` seconds, bounded by the producer's delivery timeout). The answer is
200 with the report whether or not a hop failed: a 5xx would count against the worker in
nginx (``max_fails``), and a broken Kafka must not take healthy members out of the
upstream. ``GET /canary/{key}`` reads the row back: ``consumed_at`` is set by the consumer that
received the record (deploy/lab/kafka_consumer.py).

Abuse: no body (a body is refused, 413 over 1 KiB before it is read whole), the key is an
identifier, at most ``SFAPI_CANARY_CONCURRENCY`` canaries wait for Kafka at once (the excess
429 at once), rows older than ``SFAPI_CANARY_TTL`` are deleted by the next canary write.
Failures are named by category and code (``database is read-only (SQLSTATE 25006)``,
``delivery failed: NOT_ENOUGH_REPLICAS``): never a host, user or server text, which go to the
log as for every other endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deploy.api.breaker import CircuitOpenError
from deploy.api.db import Database, DatabaseUnavailable
from deploy.api.events_out import DeliveryFailed, KafkaDisabled, Publisher
from deploy.api.payload import InvalidInput, read_body
from deploy.api.settings import Settings

log = logging.getLogger("sfapi.canary")

KEY_RULE = "[A-Za-z0-9._-]{1,100}"
KEY = re.compile(KEY_RULE)
MAX_WAIT_SECONDS = 30.0
MAX_BODY_BYTES = 1024


def database_problem(exc: BaseException, db_timeout: float) -> str:
    """What a client may be told about a failed canary write: the kind of failure and its
    SQLSTATE, never the server's text (logged instead)."""
    if isinstance(exc, CircuitOpenError):
        return "database circuit breaker open (recent calls failed)"
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
    if isinstance(cause, psycopg.errors.ReadOnlySqlTransaction):
        return "database is read-only (SQLSTATE 25006)"
    if isinstance(cause, psycopg.errors.UndefinedTable):
        return ("table canary missing (SQLSTATE 42P01): apply deploy/postgres/schema.sql on "
                "the primary")
    if isinstance(cause, psycopg_pool.PoolTimeout):
        return f"no read-write database connection within {db_timeout:g} s"
    if isinstance(cause, TimeoutError):
        return "database statement timed out"
    if isinstance(cause, psycopg.Error) and cause.sqlstate:
        return f"database error (SQLSTATE {cause.sqlstate})"
    if isinstance(cause, psycopg.OperationalError):
        return "database unreachable (no read-write primary answered)"
    return f"database error ({type(cause).__name__})"


def _hop(name: str, status: str, ms: float | None = None, error: str | None = None,
         ) -> dict[str, Any]:
    hop: dict[str, Any] = {"hop": name, "status": status}
    if ms is not None:
        hop["ms"] = round(ms, 1)
    if error is not None:
        hop["error"] = error
    return hop


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if KEY.fullmatch(key) is None:
        raise InvalidInput(422, f"canary key must match {KEY_RULE}")
    return key


def _wait(request: Request, default: float) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return default
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidInput(400, "wait must be a number of seconds") from None
    if not 0.1 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidInput(400, f"wait must be 0.1..{MAX_WAIT_SECONDS:g} seconds")
    return wait


def canary_routes(settings: Settings, db: Database, out: Publisher,
                  clock: Callable[[], float] = time.perf_counter) -> list[Route]:
    slots = asyncio.Semaphore(settings.canary_concurrency)

    def since(started: float) -> float:
        return (clock() - started) * 1000

    async def write(request: Request) -> Response:
        started = clock()
        key = _key(request)
        wait = min(_wait(request, settings.kafka_delivery_timeout),
                   settings.kafka_delivery_timeout)
        if await read_body(request, MAX_BODY_BYTES):
            raise InvalidInput(422, "POST /canary/{key} takes no body")
        if slots.locked():
            return JSONResponse({"error": "too many canaries at once"}, status_code=429,
                                headers={"Retry-After": "1"})
        token = secrets.token_hex(8)  # this write's: the consumer's mark must match it
        async with slots:  # free now, so this does not wait
            hops = await _run(key, token, wait)
        return JSONResponse({
            "key": key, "token": token, "served_by": settings.worker_name,
            "ok": all(h["status"] != "failed" for h in hops),
            "api_ms": round(since(started), 1), "hops": hops,
        })

    async def _run(key: str, token: str, wait: float) -> list[dict[str, Any]]:
        started = clock()
        try:
            written_at = await db.upsert_canary(key, token, settings.worker_name,
                                                settings.canary_ttl)
        except (DatabaseUnavailable, CircuitOpenError, psycopg.Error) as exc:
            log.warning("canary %s: database: %s", key, exc)
            problem = database_problem(exc, settings.db_timeout)
            return [_hop("postgres", "failed", since(started), problem)]
        hops = [_hop("postgres", "ok", since(started))]
        started = clock()
        try:
            await out.deliver(f"canary:{key}", {
                "canary": key, "token": token, "served_by": settings.worker_name,
                "written_at": written_at.isoformat()}, wait)
        except KafkaDisabled as exc:
            hops.append(_hop("kafka", "skipped", error=str(exc)))
        except DeliveryFailed as exc:
            hops.append(_hop("kafka", "failed", since(started), str(exc)))
        else:
            hops.append(_hop("kafka", "ok", since(started)))
        return hops

    async def read(request: Request) -> Response:
        row = await db.get_canary(_key(request))
        if row is None:
            return JSONResponse({"error": "no such canary"}, status_code=404)
        return JSONResponse(row)

    return [
        Route("/canary/{key}", write, methods=["POST"]),
        Route("/canary/{key}", read, methods=["GET"]),
    ]


__all__ = ["KEY_RULE", "canary_routes", "database_problem"]
