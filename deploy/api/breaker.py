"""A tiny circuit breaker for the API service's downstream calls (PostgreSQL, Kafka).

Why not sfops's own ``backends`` resilience module: this service ships separately (its own
image, its own dependency set) and must not import the operator tool it is monitored by.
Why not a library: none we found lets exactly one probe through in half-open, uses a
monotonic clock and is safe to call from the Kafka delivery thread as well as the event loop.

closed --(N consecutive failures)--> open --(reset_timeout)--> half-open (one probe)
half-open --probe ok--> closed;  half-open --probe fails--> open again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitOpenError(RuntimeError):
    """The breaker refused the call without trying the downstream."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()  # the Kafka delivery callback runs in another thread
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.times_opened = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout:
            return "half-open"
        return "open"

    def allow(self) -> None:
        """Raise CircuitOpenError unless a call may go ahead now (at most one half-open probe)."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return
            if state == "half-open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return
        raise CircuitOpenError(f"circuit breaker {self.name!r} is {state}")

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            was_probe = self._probe_in_flight
            self._probe_in_flight = False
            if was_probe or (self._opened_at is None and self._failures >= self.failure_threshold):
                self._opened_at = self._clock()
                self.times_opened += 1

    def release(self) -> None:
        """The call was abandoned (cancelled) without an outcome: free the probe slot."""
        with self._lock:
            self._probe_in_flight = False

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "state": self._state_locked(),
                "consecutive_failures": self._failures,
                "times_opened": self.times_opened,
            }
