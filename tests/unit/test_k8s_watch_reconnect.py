"""The real KubeClient and Informer against a small fake API server (aiohttp): a watch that
ends because nothing happened reopens quietly; only a reopening that fails is an error, and it
clears when a later one succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends.kubernetes.client import Connection, KubeClient
from backends.kubernetes.informer import PODS, Backoff, Informer
from backends.kubernetes.objects import pod_from_json

WAIT = 30.0  # generous: conditions, never durations, are asserted
IDLE = 0.3  # the client's idle timeout in these tests (production: 90 s)


class FakeApiServer:
    """LIST answers at once with resourceVersion 7; WATCH does what ``mode`` says:
    ``idle`` accepts and sends nothing, ``fail`` answers 500, ``close`` accepts and ends."""

    def __init__(self) -> None:
        self.mode = "idle"
        self.lists = 0
        self.watches: list[dict[str, str]] = []
        self.accepted = 0
        app = web.Application()
        app.router.add_get("/api/v1/pods", self.pods)
        self.app = app
        self.server: TestServer | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = TestServer(self.app, host="127.0.0.1", port=self.port or None)
        await self.server.start_server()
        self.port = self.server.port or 0

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "1":
            self.lists += 1
            return web.json_response(
                {"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []})
        self.watches.append(dict(request.query))
        if self.mode == "fail":
            return web.json_response({"kind": "Status", "code": 500, "reason": "InternalError",
                                      "message": "etcd is unavailable"}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        self.accepted += 1
        if self.mode == "idle":
            # Until the client gives up (its idle timeout) or the server closes.
            while request.transport is not None and not request.transport.is_closing():
                await asyncio.sleep(0.02)
        return response


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    yield server
    await server.stop()


async def until(predicate: Callable[[], Any], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not reached within {WAIT} s: {what}")


def informer_for(api: FakeApiServer) -> tuple[KubeClient, Informer[Any], list[str | None]]:
    client = KubeClient(Connection(host=f"http://127.0.0.1:{api.port}"), timeout=5.0)
    seen: list[str | None] = []
    informer: Informer[Any] = Informer(client, PODS, None, pod_from_json, idle_timeout=IDLE,
                                       backoff=Backoff(0.01, 0.05, 0))
    informer.on_change = lambda: seen.append(informer.error)
    return client, informer, seen


async def test_idle_watches_reopen_without_ever_showing_an_error(api: FakeApiServer) -> None:
    client, informer, seen = informer_for(api)
    informer.start()
    try:
        await until(lambda: len(api.watches) >= 5, "four idle watches reopened")
        assert set(seen) == {None}  # never shown, not even between two watches
        assert informer.error is None and informer.error_since is None
        assert informer.connected
        assert client.stats.watch_ends["idle"] >= 4
        # Each reopening resumes from the list's version: no re-list.
        assert api.lists == 1
        assert {w["resourceVersion"] for w in api.watches} == {"7"}
        assert informer.rewatches >= 4
    finally:
        await informer.stop()
        await client.close()


async def test_watches_the_server_closes_at_once_are_no_error_either(api: FakeApiServer) -> None:
    api.mode = "close"
    client, informer, seen = informer_for(api)
    informer.start()
    try:
        await until(lambda: len(api.watches) >= 4, "three closed watches reopened")
        assert informer.error is None and set(seen) == {None}
        assert client.stats.watch_ends["closed"] >= 3
    finally:
        await informer.stop()
        await client.close()


async def test_a_failed_reopen_is_an_error_until_one_succeeds(api: FakeApiServer) -> None:
    client, informer, _ = informer_for(api)
    informer.start()
    try:
        await until(lambda: api.accepted >= 1 and informer.connected, "first watch accepted")
        api.mode = "fail"  # the next reopening (after the idle timeout) gets a 500
        await until(lambda: informer.error is not None, "the failed reopen shown")
        assert "500" in informer.error and "etcd is unavailable" in informer.error
        assert informer.error_since is not None and not informer.connected
        api.mode = "idle"
        await until(lambda: informer.error is None, "error cleared by a successful reopen")
        assert informer.error_since is None and informer.connected
        assert api.lists == 1  # a 500 is retried from the same version
    finally:
        await informer.stop()
        await client.close()


async def test_a_refused_reopen_is_an_error_until_the_server_is_back(
        api: FakeApiServer) -> None:
    client, informer, _ = informer_for(api)
    informer.start()
    try:
        await until(lambda: api.accepted >= 1 and informer.connected, "first watch accepted")
        await api.stop()
        await until(lambda: informer.error is not None, "the refused reopen shown")
        assert "watch /api/v1/pods" in informer.error
        accepted = api.accepted
        await api.start()  # same port
        await until(lambda: api.accepted > accepted and informer.error is None,
                    "error cleared once the server is back")
        assert informer.error_since is None
    finally:
        await informer.stop()
        await client.close()


async def test_a_server_seen_back_ends_the_backoff_at_once(api: FakeApiServer) -> None:
    """After an outage the backoff has grown to its maximum; the service's /readyz answering
    (retry_now) must not leave the watches closed for that long."""
    client = KubeClient(Connection(host=f"http://127.0.0.1:{api.port}"), timeout=5.0)
    # Idle watches end after 1.5 s: not a "quick end" (that has a backoff of its own).
    informer: Informer[Any] = Informer(client, PODS, None, pod_from_json, idle_timeout=1.5,
                                       backoff=Backoff(600.0, 600.0, 0))
    informer.start()
    try:
        await until(lambda: api.accepted >= 1 and informer.connected, "first watch accepted")
        informer.retry_now()  # no failure yet: nothing to shorten, and nothing kept for later
        assert not informer._retry.is_set()
        api.mode = "fail"
        await until(lambda: informer.error is not None, "the failed reopen shown")
        # Now waiting out a 600 s backoff.
        api.mode = "idle"
        await asyncio.sleep(0.2)
        assert informer.error is not None
        informer.retry_now()
        await until(lambda: informer.error is None and informer.connected,
                    "reconnected long before the backoff ended")
    finally:
        await informer.stop()
        await client.close()
