"""Timeouts, read-only retries, a per-endpoint circuit breaker and independent pollers.

Every adapter call goes through one of two doors, and the name says which:

* :func:`call_read` — idempotent reads: timeout per attempt, retried with exponential backoff
  and jitter (tenacity) up to N attempts / a total deadline, behind an optional breaker.
* :func:`call_write` — anything that changes state: one attempt, timeout, breaker. Never
  retried: a write whose reply was lost may have happened, and doing it twice is worse than
  reporting the failure.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from backends.snapshot import Snapshot

T = TypeVar("T")
log = logging.getLogger(__name__)

Clock = Callable[[], float]


class BackendTimeout(TimeoutError):
    """A backend call exceeded its time budget; ``what`` names the call."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        super().__init__(f"{what}: no answer within {seconds:g} s")


async def with_timeout(aw: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``aw`` for at most ``seconds``; on expiry raise :class:`BackendTimeout`."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await aw
    except TimeoutError:
        if scope.expired():
            raise BackendTimeout(what, seconds) from None
        raise  # the callee's own TimeoutError, not ours: keep it as it is


# --------------------------------------------------------------------------- circuit breaker
#
# Why in-house (GUIDE.md §3): the asyncio breaker libraries we looked at either let every
# waiting caller through when the reset timeout expires (a thundering herd against a backend
# that is just coming back), use the wall clock (an NTP step opens or closes circuits), or
# count task cancellation (the user leaving a screen) as a backend failure. This one lets
# exactly one probe through in half-open, runs on time.monotonic and ignores cancellation.


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpen(Exception):
    """Refused without calling the backend: its circuit is open (or a probe is in flight)."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"{name}: circuit open, next probe in {max(retry_after, 0):.1f} s")


StateHook = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Closed → (``failure_threshold`` consecutive failures) → open → (``reset_timeout``)
    → half-open: one probe; success closes, failure re-opens."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Clock = time.monotonic,
        on_state_change: StateHook | None = None,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.on_state_change = on_state_change
        self._clock = clock
        self._is_failure = is_failure
        self._state = BreakerState.CLOSED
        self._failure_count = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def failure_count(self) -> int:
        return self._failure_count

    @property
    def opened_at(self) -> float | None:
        """``clock()`` value when the circuit last opened (None while closed)."""
        return self._opened_at

    def retry_after(self) -> float:
        """Seconds until a probe will be allowed (0 when calls go through)."""
        if self._state is not BreakerState.OPEN or self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self._clock())

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif new is BreakerState.CLOSED:
            self._opened_at = None
            self._failure_count = 0
        if old is not new and self.on_state_change is not None:
            try:
                self.on_state_change(old, new)
            except Exception:  # a broken UI hook must not break the backend call path
                log.exception("circuit breaker %s: on_state_change hook failed", self.name)

    def _admit(self) -> bool:
        """Decide whether a call may proceed; returns True when it is the half-open probe."""
        if self._state is BreakerState.OPEN:
            if self.retry_after() > 0:
                raise CircuitOpen(self.name, self.retry_after())
            self._transition(BreakerState.HALF_OPEN)
        if self._state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                raise CircuitOpen(self.name, 0.0)
            self._probe_in_flight = True
            return True
        return False

    def _record_failure(self, exc: BaseException, probe: bool) -> None:
        self._failure_count += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if probe:
            self._transition(BreakerState.OPEN)
        elif (
            self._state is BreakerState.CLOSED
            and self._failure_count >= self.failure_threshold
        ):
            self._transition(BreakerState.OPEN)
        # A late failure of a call admitted while closed doesn't touch open/half-open state.

    def _record_success(self, probe: bool) -> None:
        if probe:
            self._transition(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._failure_count = 0
        # A late success while open proves little: wait for the probe.

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        probe = self._admit()
        try:
            result = await fn()
        except asyncio.CancelledError:
            raise  # neither success nor failure; the finally frees the probe slot
        except Exception as exc:
            if self._is_failure(exc):
                self._record_failure(exc, probe)
            elif probe:
                self._record_success(probe)  # the backend answered, just not happily
            raise
        else:
            self._record_success(probe)
            return result
        finally:
            if probe:
                self._probe_in_flight = False

    def reset(self) -> None:
        """Force the circuit closed (operator override)."""
        self._probe_in_flight = False
        self._transition(BreakerState.CLOSED)


# --------------------------------------------------------------------------- reads and writes


@dataclass(frozen=True)
class RetryPolicy:
    """How an idempotent read is retried: ``attempts`` in all (1 = no retry), exponential
    backoff from ``initial_backoff`` doubling up to ``max_backoff`` plus up to ``jitter`` s of
    random jitter, and no new attempt that would start after ``deadline`` s."""

    attempts: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 2.0
    jitter: float = 0.2
    deadline: float | None = 10.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)


DEFAULT_READ_POLICY = RetryPolicy()
Sleep = Callable[[float], Awaitable[None]]


def _retryable(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        # An open circuit will still be open in 200 ms: retrying it only wastes the deadline;
        # so will an error that says so of itself (a refused login: ``permanent = True``).
        return (isinstance(exc, policy.retry_on) and not isinstance(exc, CircuitOpen)
                and not getattr(exc, "permanent", False))

    return check


async def call_read(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = DEFAULT_READ_POLICY,
    *,
    what: str,
    timeout: float | None = None,  # noqa: ASYNC109 - per-attempt budget, enforced inside
    breaker: CircuitBreaker | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run an idempotent read: each attempt bounded by ``timeout`` and passed through
    ``breaker``; failures retried per ``policy``. ``fn`` is called afresh per attempt."""

    async def attempt() -> T:
        if timeout is None:
            return await fn()
        return await with_timeout(fn(), timeout, what)

    async def guarded() -> T:
        return await (breaker.call(attempt) if breaker is not None else attempt())

    stop: Any = stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | stop_before_delay(policy.deadline)
    retrying = AsyncRetrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
        ),
        retry=retry_if_exception(_retryable(policy)),
        reraise=True,
        sleep=sleep,
    )
    result: T = await retrying(guarded)
    return result


async def call_write(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    timeout: float | None = None,  # noqa: ASYNC109 - per-attempt budget, enforced inside
    breaker: CircuitBreaker | None = None,
) -> T:
    """Run a state-changing call exactly once (bounded by ``timeout``, through ``breaker``)."""

    async def attempt() -> T:
        if timeout is None:
            return await fn()
        return await with_timeout(fn(), timeout, what)

    if breaker is not None:
        return await breaker.call(attempt)
    return await attempt()


# --------------------------------------------------------------------------- bulkhead poller


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    if text and (isinstance(exc, BackendTimeout) or getattr(exc, "describes_itself", False)):
        return text  # its message already says what failed and how
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


SnapshotCallback = Callable[[Snapshot[Any]], object]


class PollJob(Generic[T]):
    """One backend's poll loop. ``latest`` is the newest snapshot (None before the first)."""

    def __init__(
        self,
        name: str,
        poll: Callable[[], Awaitable[T]],
        *,
        interval: float,
        timeout: float,
        on_snapshot: Callable[[Snapshot[T]], object] | None = None,
        redact: Callable[[str], str] = lambda text: text,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.interval = interval
        self.timeout = timeout
        self.latest: Snapshot[T] | None = None
        self.polls = 0
        self._poll = poll
        self._on_snapshot = on_snapshot
        self._redact = redact
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self) -> Snapshot[T]:
        """One bounded poll; never raises except on cancellation."""
        try:
            value = await with_timeout(self._poll(), self.timeout, f"{self.name} poll")
        except Exception as exc:
            snapshot = Snapshot.failure(
                self._redact(describe_error(exc)), previous=self.latest, clock=self._clock
            )
        else:
            snapshot = Snapshot.success(value, clock=self._clock)
        self.latest = snapshot
        self.polls += 1
        if self._on_snapshot is not None:
            try:
                result = self._on_snapshot(snapshot)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("poller %s: snapshot callback failed", self.name)
        return snapshot

    def wake(self) -> None:
        """Poll now instead of at the end of the current interval (a manual refresh)."""
        self._wake.set()

    async def _run(self) -> None:
        # Re-armed only after the previous poll finished: polls of one backend never overlap,
        # and a slow backend stretches only its own cycle.
        while True:
            started = self._clock()
            # Cleared before the poll: a wake while it runs (a manual refresh, or a snapshot
            # callback asking for more of a partial value) polls again right after it.
            self._wake.clear()
            await self.poll_once()
            remaining = self.interval - (self._clock() - started)
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"poll:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


class Poller:
    """A bulkhead: each backend's poll runs on its own task, so a hung one delays no other."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.jobs: dict[str, PollJob[Any]] = {}
        self._clock = clock

    def add(
        self,
        name: str,
        poll: Callable[[], Awaitable[T]],
        *,
        interval: float,
        timeout: float,
        on_snapshot: Callable[[Snapshot[T]], object] | None = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> PollJob[T]:
        if name in self.jobs:
            raise ValueError(f"poll job {name!r} already exists")
        job = PollJob(
            name, poll, interval=interval, timeout=timeout, on_snapshot=on_snapshot,
            redact=redact, clock=self._clock,
        )
        self.jobs[name] = job
        return job

    def start(self) -> None:
        for job in self.jobs.values():
            job.start()

    async def stop(self) -> None:
        await asyncio.gather(*(job.stop() for job in self.jobs.values()))

    async def __aenter__(self) -> Poller:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

