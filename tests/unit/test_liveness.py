"""The liveness rule (backends.service): a failed contact is UNREACHABLE, never OK; figures from
before are last known; the wrong-now list names unreachable things first and is never empty
while a backend is not OK."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from backends.kafka.probe import answers
from backends.resilience import BreakerState, CircuitBreaker, PollJob
from backends.service import (
    Alert,
    BackendSummary,
    BackendUnreachable,
    Figure,
    Severity,
    observe,
    summary_of,
    wrong_now,
)
from backends.snapshot import Health, Snapshot
from tui.render.overview import panel_body, panel_title


class Service:
    """A backend whose contact and poll are scripted."""

    name = "fake"
    title = "Fake"
    contact_timeout = 0.2

    def __init__(self) -> None:
        self.breaker: CircuitBreaker | None = None
        self.contact_mode = "ok"  # ok | hang | fail
        self.poll_hangs = False
        self.poll_cancelled = 0

    async def contact(self) -> None:
        if self.contact_mode == "hang":
            await asyncio.Event().wait()
        if self.contact_mode == "fail":
            raise ConnectionRefusedError("connection refused")

    async def poll(self) -> dict[str, Any]:
        try:
            if self.poll_hangs:
                await asyncio.Event().wait()
            return {"up": 3}
        except asyncio.CancelledError:
            self.poll_cancelled += 1
            raise

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        value = snapshot.best or {}
        return BackendSummary(
            self.name, self.title, Health.OK, figures=(Figure("up", f"{value.get('up')}/3"),),
            alerts=(Alert(self.name, "old", Severity.WARNING, "an old warning"),),
        )

    async def close(self) -> None:
        pass


async def test_a_hung_contact_fails_the_refresh_within_its_budget_and_abandons_the_poll():
    service = Service()
    service.contact_mode = "hang"
    service.poll_hangs = True
    job: PollJob[Any] = PollJob("fake", lambda: observe(service), interval=0, timeout=30)
    snapshot = await job.poll_once()
    assert not snapshot.ok
    assert "Fake contact: no answer within 0.2 s" in (snapshot.error or "")
    assert service.poll_cancelled == 1


async def test_a_refused_contact_is_unreachable_even_when_the_poll_would_answer():
    service = Service()
    service.contact_mode = "fail"
    with pytest.raises(BackendUnreachable, match="connection refused"):
        await observe(service)


async def test_a_good_contact_closes_an_open_breaker():
    service = Service()
    breaker = CircuitBreaker("fake", failure_threshold=1, reset_timeout=3600)
    service.breaker = breaker

    async def boom() -> None:
        raise OSError("down")

    with pytest.raises(OSError):
        await breaker.call(boom)
    assert breaker.state is BreakerState.OPEN
    assert await observe(service) == {"up": 3}
    assert breaker.state is BreakerState.CLOSED


def test_after_a_failed_contact_the_last_good_value_reads_unreachable_and_last_known():
    service = Service()
    good = Snapshot.success({"up": 3})
    failed = good.failed("BackendUnreachable: connection refused")
    summary = summary_of(service, failed)
    assert summary.health is Health.UNREACHABLE
    assert summary.last_known
    assert [f.value for f in summary.figures] == ["3/3"]
    assert all(f.health is Health.UNKNOWN for f in summary.figures)
    # The old warning is dropped: the one thing we know is that we cannot see the backend.
    assert [a.key for a in summary.alerts] == ["fake-unreachable"]
    assert summary.alerts[0].unreachable
    body = panel_body(summary, stale_for=48.0).plain
    assert body.startswith("last known 48s ago: BackendUnreach")
    assert "3/3" in body
    title = panel_title(summary, stale_for=48.0).plain
    assert "UNREACHABLE" in title and "OK" not in title and "now" not in title


def test_never_reached_reads_unreachable():
    service = Service()
    summary = summary_of(service, Snapshot.failure("BackendUnreachable: refused"))
    assert summary.health is Health.UNREACHABLE
    assert "UNREACHABLE" in panel_title(summary).plain
    assert panel_body(summary).plain.startswith("never reached: ")


def test_a_good_snapshot_is_the_services_own_summary():
    service = Service()
    summary = summary_of(service, Snapshot.success({"up": 3}))
    assert summary.health is Health.OK and not summary.last_known
    assert "OK · now" in panel_title(summary, data_age=0.2).plain


def test_wrong_now_lists_unreachable_first_then_by_severity_and_every_non_ok_backend():
    summaries = [
        BackendSummary("kafka", "Kafka", Health.DEGRADED,
                       alerts=(Alert("kafka", "urp", Severity.WARNING, "2 URP"),)),
        BackendSummary("postgres", "PostgreSQL", Health.FAILED, alerts=(
            Alert("postgres", "split", Severity.CRITICAL, "two primaries"),
            Alert("postgres", "pg-2", Severity.WARNING, "pg-2 unreachable", unreachable=True),
        )),
        BackendSummary("nginx", "Load balancer", Health.UNREACHABLE, alerts=(
            Alert("nginx", "nginx-unreachable", Severity.CRITICAL, "down", unreachable=True),)),
        BackendSummary("kubernetes", "Kubernetes", Health.DEGRADED),  # no alert of its own
        BackendSummary("other", "Other", Health.UNKNOWN),  # not polled yet
        BackendSummary("fine", "Fine", Health.OK),
    ]
    keys = [(a.source, a.key) for a in wrong_now(summaries)]
    assert keys[:2] == [("nginx", "nginx-unreachable"), ("postgres", "pg-2")]
    assert keys[2] == ("postgres", "split")
    assert ("kubernetes", "kubernetes-degraded") in keys
    assert ("other", "other-unknown") in keys
    assert not any(source == "fine" for source, _ in keys)


def test_wrong_now_is_empty_only_when_everything_is_ok():
    assert wrong_now([BackendSummary("a", "A", Health.OK)]) == []


async def _serve(handler: Any) -> tuple[asyncio.base_events.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_kafka_answers_needs_a_real_answer_not_just_a_tcp_accept():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        await asyncio.sleep(5)  # accepted, read, never answered: a wedged broker

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        request = await reader.readexactly(size)
        api_key, version, correlation_id = struct.unpack(">hhi", request[:8])
        assert (api_key, version) == (18, 0)
        body = struct.pack(">ihi", correlation_id, 0, 0)  # no error, no api versions listed
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        writer.close()

    hung, hung_port = await _serve(silent)
    good, good_port = await _serve(broker)
    async with hung, good:
        assert "no answer to ApiVersions within 0.3 s" in (
            await answers("127.0.0.1", hung_port, timeout=0.3) or "")
        assert await answers("127.0.0.1", good_port, timeout=2.0) is None
    refused = await answers("127.0.0.1", hung_port, timeout=1.0)
    assert refused is not None


class MemberProbed(Service):
    """A backend probed per member inside its poll (as PostgreSQL is)."""

    def __init__(self, answering: int) -> None:
        super().__init__()
        self.answering = answering

    async def poll(self) -> dict[str, Any]:
        return {"up": self.answering}

    def unreachable(self, value: dict[str, Any]) -> str | None:
        return None if value["up"] else "no member answers: pg-1: refused; pg-2: refused"


async def test_a_member_probed_backend_with_no_member_answering_is_unreachable():
    with pytest.raises(BackendUnreachable, match="no member answers"):
        await observe(MemberProbed(answering=0))
    assert await observe(MemberProbed(answering=1)) == {"up": 1}


async def test_a_poll_that_failed_beside_a_failed_contact_leaves_no_unretrieved_error():
    import gc

    class BothFail(Service):
        async def poll(self) -> dict[str, Any]:
            raise OSError("watch failed too")

    service = BothFail()
    service.contact_mode = "fail"
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        poll_done = asyncio.Event()
        original = service.poll

        async def poll() -> dict[str, Any]:
            try:
                return await original()
            finally:
                poll_done.set()

        service.poll = poll  # type: ignore[method-assign]

        async def slow_contact() -> None:
            await poll_done.wait()  # the poll has failed before the contact does
            raise ConnectionRefusedError("connection refused")

        service.contact = slow_contact  # type: ignore[method-assign]
        with pytest.raises(BackendUnreachable):
            await observe(service)
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))]
