from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from backends.resilience import (
    BackendTimeout,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    Poller,
    PollJob,
    RetryPolicy,
    call_read,
    call_write,
    with_timeout,
)
from backends.snapshot import Snapshot


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom("backend down")


async def succeed() -> str:
    return "ok"


def make_breaker(clock: FakeClock, **kwargs: object) -> tuple[CircuitBreaker, list[tuple]]:
    changes: list[tuple] = []
    breaker = CircuitBreaker(
        "pg-1",
        failure_threshold=3,
        reset_timeout=10.0,
        clock=clock,
        on_state_change=lambda old, new: changes.append((old, new)),
        **kwargs,  # type: ignore[arg-type]
    )
    return breaker, changes


# --------------------------------------------------------------------------- with_timeout


async def test_with_timeout_names_what_timed_out() -> None:
    with pytest.raises(BackendTimeout, match=r"pg-1 status: no answer within 0.05 s"):
        await with_timeout(asyncio.sleep(10), 0.05, "pg-1 status")


async def test_with_timeout_passes_value_and_callee_timeout_through() -> None:
    assert await with_timeout(succeed(), 1, "x") == "ok"

    async def own_timeout() -> None:
        raise TimeoutError("the driver's own")

    with pytest.raises(TimeoutError, match="the driver's own") as info:
        await with_timeout(own_timeout(), 1, "x")
    assert not isinstance(info.value, BackendTimeout)


# --------------------------------------------------------------------------- breaker


async def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock)
    for expected_count in (1, 2):
        with pytest.raises(Boom):
            await breaker.call(fail)
        assert breaker.state is BreakerState.CLOSED
        assert breaker.failure_count == expected_count
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.now
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert breaker.last_error == "Boom: backend down"

    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(CircuitOpen) as info:
        await breaker.call(counted)
    assert calls == 0, "an open circuit must not call the backend"
    assert info.value.retry_after == pytest.approx(10.0)


async def test_success_resets_consecutive_failure_count() -> None:
    breaker, _ = make_breaker(FakeClock())
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert await breaker.call(succeed) == "ok"
    assert breaker.failure_count == 0
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN


async def test_half_open_after_reset_timeout_on_injected_clock() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock)
    await trip(breaker)
    clock.advance(9.9)
    with pytest.raises(CircuitOpen):
        await breaker.call(succeed)
    clock.advance(0.1)
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_count == 0
    assert breaker.opened_at is None
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


async def test_failed_probe_reopens_with_fresh_timeout() -> None:
    clock = FakeClock()
    breaker, changes = make_breaker(clock)
    await trip(breaker)
    clock.advance(10)
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_at == clock.now
    assert changes[-1] == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    with pytest.raises(CircuitOpen):
        await breaker.call(succeed)


async def test_exactly_one_probe_in_half_open_under_concurrency() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock)
    await trip(breaker)
    clock.advance(10)

    release = asyncio.Event()
    probes = 0

    async def slow_probe() -> str:
        nonlocal probes
        probes += 1
        await release.wait()
        return "up"

    tasks = [asyncio.create_task(breaker.call(slow_probe)) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Nine callers were refused at once, without waiting for the probe.
    refused = [t for t in tasks if t.done()]
    assert len(refused) == 9
    assert all(isinstance(t.exception(), CircuitOpen) for t in refused)
    assert probes == 1
    assert breaker.state is BreakerState.HALF_OPEN
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("up") == 1
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_probe_is_not_a_failure_and_frees_the_slot() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock)
    await trip(breaker)
    clock.advance(10)
    probe = asyncio.create_task(breaker.call(lambda: asyncio.sleep(60)))
    await asyncio.sleep(0)
    assert breaker.state is BreakerState.HALF_OPEN
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state is BreakerState.HALF_OPEN  # neither re-opened nor closed
    failures = breaker.failure_count
    # The slot is free again: the next caller becomes the probe.
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert failures == breaker.failure_threshold


async def test_cancellation_in_closed_state_does_not_count() -> None:
    breaker, _ = make_breaker(FakeClock())
    for _ in range(5):
        task = asyncio.create_task(breaker.call(lambda: asyncio.sleep(60)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failure_count == 0


async def test_is_failure_filter_and_broken_hook() -> None:
    def hook(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("ui bug")

    breaker = CircuitBreaker(
        "x", failure_threshold=1, on_state_change=hook,
        is_failure=lambda exc: not isinstance(exc, KeyError),
    )

    async def not_found() -> None:
        raise KeyError("no such row")

    with pytest.raises(KeyError):
        await breaker.call(not_found)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN  # the failing hook did not break the breaker
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_defaults_to_monotonic_clock() -> None:
    breaker = CircuitBreaker("x")
    assert breaker._clock is time.monotonic


# --------------------------------------------------------------------------- retry


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return "value"


async def no_sleep(seconds: float) -> None:
    sleeps.append(seconds)


sleeps: list[float] = []


@pytest.fixture(autouse=True)
def _clear_sleeps() -> None:
    sleeps.clear()


async def test_reads_are_retried_with_growing_backoff() -> None:
    flaky = Flaky(failures=3)
    policy = RetryPolicy(attempts=4, initial_backoff=0.1, max_backoff=5, jitter=0.05)
    assert await call_read(flaky, policy, what="read", sleep=no_sleep) == "value"
    assert flaky.calls == 4
    assert len(sleeps) == 3
    for index, slept in enumerate(sleeps):
        base = 0.1 * 2**index
        assert base <= slept <= base + 0.05


async def test_read_gives_up_after_attempts_and_reraises_last_error() -> None:
    flaky = Flaky(failures=10)
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        await call_read(flaky, RetryPolicy(attempts=3), what="read", sleep=no_sleep)
    assert flaky.calls == 3


async def test_read_respects_total_deadline() -> None:
    flaky = Flaky(failures=100)
    policy = RetryPolicy(attempts=100, initial_backoff=0.05, max_backoff=0.05, jitter=0,
                         deadline=0.2)
    with pytest.raises(ConnectionError):
        await call_read(flaky, policy, what="read")
    # 100 attempts 0.05 s apart would take 5 s: the deadline stopped it after a few.
    assert 2 <= flaky.calls < 10


async def test_read_timeout_applies_per_attempt() -> None:
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "second"

    result = await call_read(hangs_once, RetryPolicy(attempts=2), what="read", timeout=0.05,
                             sleep=no_sleep)
    assert result == "second"


async def test_writes_are_never_retried() -> None:
    flaky = Flaky(failures=1)
    with pytest.raises(ConnectionError):
        await call_write(flaky, what="write")
    assert flaky.calls == 1
    with pytest.raises(BackendTimeout, match="pg promote"):
        await call_write(lambda: asyncio.sleep(10), what="pg promote", timeout=0.05)


async def test_read_is_not_retried_when_the_circuit_is_open() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock)
    await trip(breaker)
    flaky = Flaky(failures=0)
    with pytest.raises(CircuitOpen):
        await call_read(flaky, RetryPolicy(attempts=5), what="r", breaker=breaker,
                        sleep=no_sleep)
    assert flaky.calls == 0
    assert sleeps == []


async def test_retry_on_filters_exceptions() -> None:
    calls = 0

    async def bad_query() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("syntax error")

    policy = RetryPolicy(attempts=5, retry_on=(ConnectionError,))
    with pytest.raises(ValueError):
        await call_read(bad_query, policy, what="r", sleep=no_sleep)
    assert calls == 1


async def test_write_goes_through_the_breaker() -> None:
    clock = FakeClock()
    breaker, _ = make_breaker(clock)
    await trip(breaker)
    with pytest.raises(CircuitOpen):
        await call_write(succeed, what="w", breaker=breaker)


# --------------------------------------------------------------------------- poller


async def test_one_hung_backend_does_not_delay_another() -> None:
    hung_started = asyncio.Event()

    async def hung() -> None:
        hung_started.set()
        await asyncio.Event().wait()  # never answers

    fast_times: list[float] = []

    async def fast() -> str:
        fast_times.append(time.monotonic())
        return "fine"

    snapshots: list[Snapshot[object]] = []
    poller = Poller()
    hung_job = poller.add("pg", hung, interval=0.05, timeout=5.0)
    fast_job = poller.add("kafka", fast, interval=0.05, timeout=1.0,
                          on_snapshot=snapshots.append)
    async with poller:
        await asyncio.wait_for(hung_started.wait(), 30)

        async def five_fast_polls() -> None:
            while len(fast_times) < 5:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(five_fast_polls(), 30)  # a hang guard, not a speed target
        # The fast backend polled five times while the hung one's first poll still waited.
        assert hung_job.latest is None  # still waiting on its (bounded) first poll
    assert fast_job.latest is not None and fast_job.latest.value == "fine"
    assert all(s.ok for s in snapshots)
    gaps = [b - a for a, b in itertools.pairwise(fast_times)]
    assert max(gaps) < 0.5
    assert not hung_job.running and not fast_job.running


async def test_poll_timeout_yields_failed_snapshot_keeping_last_good() -> None:
    calls = 0

    async def sometimes_hangs() -> int:
        nonlocal calls
        calls += 1
        if calls >= 2:
            await asyncio.sleep(10)
        return 42

    poller = Poller()
    job = poller.add("nginx", sometimes_hangs, interval=0.01, timeout=0.05,
                     redact=lambda text: text.replace("nginx", "N"))
    first = await job.poll_once()
    assert first.ok and first.value == 42
    second = await job.poll_once()
    assert not second.ok
    assert second.error == "N poll: no answer within 0.05 s"
    assert second.value is None
    assert second.last_good == 42
    assert second.last_good_at == first.taken_at


async def test_polls_of_one_backend_never_overlap() -> None:
    active = 0
    max_active = 0
    polls = 0

    async def slow() -> None:
        nonlocal active, max_active, polls
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(0.03)
        polls += 1
        active -= 1

    poller = Poller()
    poller.add("slow", slow, interval=0.001, timeout=1)
    async with poller:
        while polls < 4:
            await asyncio.sleep(0.01)
    assert max_active == 1


async def test_wake_polls_immediately_and_callback_errors_are_contained() -> None:
    polls = 0

    async def count() -> int:
        nonlocal polls
        polls += 1
        return polls

    def broken_callback(snapshot: Snapshot[int]) -> None:
        raise RuntimeError("ui bug")

    poller = Poller()
    job = poller.add("x", count, interval=60, timeout=1, on_snapshot=broken_callback)
    async with poller:
        while polls < 1:
            await asyncio.sleep(0.01)
        job.wake()
        for _ in range(100):
            if polls >= 2:
                break
            await asyncio.sleep(0.01)
    assert polls == 2
    with pytest.raises(ValueError):
        poller.add("x", count, interval=1, timeout=1)


async def test_a_wake_during_a_poll_polls_again_right_after_it() -> None:
    """The snapshot callback of a partial value (a first sync under way) asks for the next
    one at once; a wake while polling is not lost."""
    polls = 0
    job: PollJob[int] | None = None

    async def count() -> int:
        nonlocal polls
        polls += 1
        return polls

    def more_please(snapshot: Snapshot[int]) -> None:
        if snapshot.value is not None and snapshot.value < 3:
            assert job is not None
            job.wake()

    poller = Poller()
    job = poller.add("x", count, interval=60, timeout=1, on_snapshot=more_please)
    async with poller:
        for _ in range(200):
            if polls >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert polls == 3  # two woken re-polls, then the 60 s interval
