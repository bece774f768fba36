"""The streamforge-api ASGI application (Starlette): routes, lifespan, served-by header."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deploy.api.breaker import CircuitBreaker, CircuitOpenError
from deploy.api.canary import canary_routes
from deploy.api.db import (
    Database,
    DatabaseUnavailable,
    ReservedConnection,
    make_pool,
    reserved_connector,
)
from deploy.api.events_out import EventPublisher, NullPublisher, Publisher
from deploy.api.payload import InvalidInput, parse_event_payload, read_body
from deploy.api.settings import Settings

log = logging.getLogger("sfapi")

MAX_SLOW_SECONDS = 120.0
MAX_LIST_LIMIT = 1000


@dataclass
class Lifecycle:
    """Process state shared by the server (signal handling) and the app (readiness)."""

    shutting_down: bool = False
    shutdown_requested_at: float | None = None
    in_flight: int = 0

    def begin_shutdown(self) -> None:
        # Called from a signal handler: only plain assignments, no locks, no I/O.
        if not self.shutting_down:
            self.shutdown_requested_at = time.monotonic()
            self.shutting_down = True


class ServedByMiddleware:
    """Names the worker on every response (also 500s), counts in-flight requests and asks
    clients to close connections while the worker drains."""

    def __init__(self, app: ASGIApp, worker_name: str, lifecycle: Lifecycle) -> None:
        self.app = app
        self.worker_name = worker_name
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = not scope["path"].startswith("/health")
        started = False

        async def send_with_header(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Served-By"] = self.worker_name
                if self.lifecycle.shutting_down:
                    headers["Connection"] = "close"
            await send(message)

        if counted:
            self.lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send_with_header)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            await JSONResponse({"error": "internal error"}, status_code=500)(
                scope, receive, send_with_header
            )
        finally:
            if counted:
                self.lifecycle.in_flight -= 1


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    publisher: Publisher | None = None,
    lifecycle: Lifecycle | None = None,
) -> Starlette:
    lifecycle = lifecycle or Lifecycle()
    if database is None:
        database = Database(
            make_pool(settings),
            CircuitBreaker(
                "postgres",
                failure_threshold=settings.breaker_failures,
                reset_timeout=settings.breaker_reset,
            ),
            reserved=ReservedConnection(reserved_connector(settings)),
            timeout=settings.db_timeout,
        )
    if publisher is None:
        publisher = (
            EventPublisher(
                settings.kafka_bootstrap,
                settings.kafka_topic,
                CircuitBreaker(
                    "kafka",
                    failure_threshold=settings.breaker_failures,
                    reset_timeout=settings.breaker_reset,
                ),
                client_id=f"streamforge-api/{settings.worker_name}",
                delivery_timeout=settings.kafka_delivery_timeout,
                security=settings.kafka_security,
            )
            if settings.kafka_bootstrap
            else NullPublisher()
        )
    db, out = database, publisher
    # Slow requests hold a pooled connection for their whole duration: at most
    # slow_concurrency of them at once (fewer than the pool), the rest refused at once.
    slow_slots = asyncio.Semaphore(max(1, settings.slow_concurrency))
    slow_stats = {"in_flight": 0, "served": 0, "refused": 0}
    readiness_logged: list[str] = [""]  # the last readiness problem written to the log

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info(
            "%s starting: database %s; kafka %s",
            settings.worker_name,
            settings.redacted_database(),
            f"{settings.kafka_bootstrap} topic {settings.kafka_topic}"
            if settings.kafka_bootstrap
            else "disabled",
        )
        await db.open()
        out.start()
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests finished (or the grace ran out).
            lifecycle.begin_shutdown()
            await asyncio.to_thread(out.close, min(5.0, max(settings.shutdown_grace, 1.0)))
            await db.close(wait_seconds=5.0)
            log.info("%s stopped: pool and producer closed", settings.worker_name)

    async def readiness() -> tuple[bool, str]:
        """(ready, reason). Reasons are generic (the endpoints are public); the details go to
        the log, once per change."""
        if lifecycle.shutting_down:
            return False, "shutting down"
        try:
            await db.ping(settings.ready_timeout)
        except CircuitOpenError:
            return False, "database circuit breaker open"
        except DatabaseUnavailable as exc:
            if readiness_logged[0] != str(exc):
                readiness_logged[0] = str(exc)
                log.warning("not ready: %s", exc)
            return False, "database unavailable"
        if readiness_logged[0]:
            readiness_logged[0] = ""
            log.info("ready again: the database answers")
        return True, "ok"

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive", "worker": settings.worker_name})

    async def ready(request: Request) -> Response:
        ok, reason = await readiness()
        body = {"ready": ok, "reason": reason, "worker": settings.worker_name}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def health(request: Request) -> Response:
        ok, reason = await readiness()
        return JSONResponse(
            {
                "worker": settings.worker_name,
                "ready": ok,
                "reason": reason,
                "shutting_down": lifecycle.shutting_down,
                "in_flight": lifecycle.in_flight,
                # Counters and states only: no host, user, address or error text (this
                # endpoint is public); those are in the server log.
                "database": db.snapshot(),
                "kafka": out.snapshot(),
                "slow": {
                    "enabled": settings.slow_enabled,
                    "limit": settings.slow_concurrency if settings.slow_enabled else 0,
                    **slow_stats,
                },
            }
        )

    async def create_event(request: Request) -> Response:
        payload = parse_event_payload(await read_body(request, settings.max_body_bytes))
        row = await db.insert_event(payload, settings.worker_name)
        # After the commit (autocommit INSERT returned), never before: the DB is the truth.
        published = out.publish(str(row.id), row.to_json())
        return JSONResponse(
            {
                "id": row.id,
                "created_at": row.created_at.isoformat(),
                "served_by": row.served_by,
                "event_published": published,
            },
            status_code=201,
        )

    async def get_event(request: Request) -> Response:
        row = await db.get_event(request.path_params["event_id"])
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(row.to_json())

    async def list_events(request: Request) -> Response:
        try:
            after_id = int(request.query_params.get("after_id", "0"))
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return JSONResponse({"error": "after_id and limit must be integers"}, 400)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            return JSONResponse({"error": f"limit must be 1..{MAX_LIST_LIMIT}"}, 400)
        rows = await db.list_events(after_id, limit)
        return JSONResponse({"events": [r.to_json() for r in rows]})

    async def slow(request: Request) -> Response:
        try:
            seconds = float(request.query_params.get("seconds", "1"))
        except ValueError:
            return JSONResponse({"error": "seconds must be a number"}, 400)
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            return JSONResponse({"error": f"seconds must be 0..{MAX_SLOW_SECONDS:g}"}, 400)
        if slow_slots.locked():
            slow_stats["refused"] += 1
            return JSONResponse(
                {"error": "too many slow requests"}, status_code=429, headers={"Retry-After": "1"}
            )
        async with slow_slots:  # free now, so this does not wait
            slow_stats["in_flight"] += 1
            try:
                await db.sleep(seconds)
            finally:
                slow_stats["in_flight"] -= 1
        slow_stats["served"] += 1
        return JSONResponse({"slept": seconds, "worker": settings.worker_name})

    async def invalid_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidInput)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def refused_value(request: Request, exc: Exception) -> Response:
        # The database refused a value the validation let through: still the client's input.
        log.info("%s %s: value refused by the database: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "invalid input"}, status_code=422)

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "database unavailable"}, status_code=503)

    async def circuit_open(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "database unavailable", "breaker": "open"},
            status_code=503,
            headers={"Retry-After": str(max(1, round(settings.breaker_reset)))},
        )

    routes = [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/health", health),
        Route("/events", create_event, methods=["POST"]),
        Route("/events", list_events, methods=["GET"]),
        Route("/events/{event_id:int}", get_event, methods=["GET"]),
        *canary_routes(settings, db, out),  # sfops verify: the write path, hop by hop
    ]
    if settings.slow_enabled:  # otherwise GET /slow is a plain 404
        routes.append(Route("/slow", slow))

    app = Starlette(
        routes=routes,
        middleware=[Middleware(ServedByMiddleware, settings.worker_name, lifecycle)],
        exception_handlers={
            InvalidInput: invalid_input,
            psycopg.DataError: refused_value,
            DatabaseUnavailable: database_unavailable,
            CircuitOpenError: circuit_open,
        },
        lifespan=lifespan,
    )
    app.state.lifecycle = lifecycle
    app.state.database = db
    app.state.publisher = out
    return app


__all__ = ["Lifecycle", "ServedByMiddleware", "create_app"]
