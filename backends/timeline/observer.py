"""The timeline's writer: the store in a worker thread of its own, so the event loop never
waits for SQLite (nor for another process holding the write lock).

One writer per sfops process, one thread, one connection: calls are queued in order and
return at once (:meth:`TimelineWriter.record`, :meth:`~TimelineWriter.heartbeat`) or are
awaited with a timeout (:meth:`TimelineWriter.call`). A store that cannot be opened or
written is reported (``last_error``) and never stops polling or an action: its readings are
simply not recorded, and the next good write compares with the last stored state, so a
change is recorded late rather than lost.

An observer (the TUI's poller, a long-running or one-shot sfops command) opens a *span* when
it starts watching, keeps it alive with every reading and a heartbeat, and closes it when it
stops: time covered by no span is a gap, shown as such (backends.timeline.view).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from backends.service import BackendSummary
from backends.snapshot import Snapshot
from backends.timeline.derive import derive_for, observation
from backends.timeline.model import STALE_AFTER_S, Change, Reading
from backends.timeline.store import Retention, TimelineError, TimelineStore

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_TIMEOUT = 10.0
MAX_PENDING = 256  # queued writes; beyond this (a store locked for long) readings are dropped
REOPEN_AFTER_S = 30.0


def observer_name(role: str) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()} ({role})"


class TimelineWriter:
    def __init__(self, store: TimelineStore, *, role: str = "sfops",
                 unseen_after: float = STALE_AFTER_S) -> None:
        self.store = store
        self.observer = observer_name(role)
        self.unseen_after = unseen_after
        self.span: str | None = None
        self.last_error: str | None = None
        self.dropped = 0
        self._pending = 0
        self._lock = threading.Lock()  # _pending: counted here and in the worker thread
        self._opened_at: float | None = None
        self._failed_at: float | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sfops-timeline")
        self._closed = False

    @classmethod
    def for_config(cls, config: Any, *, role: str = "sfops") -> TimelineWriter:
        """The writer of a configuration's store: ``<state_dir>/timeline.sqlite3``, bounded
        by ``[sfops] timeline_retention_hours`` and ``timeline_max_events``."""
        settings = config.sfops
        retention = Retention(max_age_s=settings.timeline_retention_hours * 3600.0,
                              max_events=settings.timeline_max_events)
        unseen = max(STALE_AFTER_S, 3 * float(getattr(settings, "refresh_interval", 2.0)))
        return cls(TimelineStore.in_dir(Path(settings.state_dir), retention), role=role,
                   unseen_after=unseen)

    # -- the worker thread -------------------------------------------------------------------
    def _run(self, work: Callable[[TimelineStore], T]) -> T | None:
        """In the worker thread: open the store when needed (again at most every
        REOPEN_AFTER_S after a failure), run ``work``, remember any error."""
        with self._lock:
            self._pending -= 1
        if self._failed_at is not None and time.monotonic() - self._failed_at < REOPEN_AFTER_S:
            return None
        try:
            self.store.open()
            result = work(self.store)
        except TimelineError as exc:
            self._fail(str(exc))
            return None
        except Exception as exc:  # sqlite3.OperationalError (locked past the timeout), …
            self._fail(f"{self.store.path}: {type(exc).__name__}: {exc}")
            self.store.close()  # opened again by the next write
            return None
        self._failed_at, self.last_error = None, None
        return result

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            log.warning("timeline store: %s", message)
        self.last_error = message
        self._failed_at = time.monotonic()

    def submit(self, work: Callable[[TimelineStore], T]) -> concurrent.futures.Future[T | None]:
        """Queue ``work`` (in order) and return at once; dropped when the queue is full."""
        if self._closed:
            future: concurrent.futures.Future[T | None] = concurrent.futures.Future()
            future.set_result(None)
            return future
        with self._lock:
            full = self._pending >= MAX_PENDING
            if not full:
                self._pending += 1
        if full:
            self.dropped += 1
            future = concurrent.futures.Future()
            future.set_result(None)
            return future
        return self._executor.submit(self._run, work)

    async def call(self, work: Callable[[TimelineStore], T],
                   timeout: float = CALL_TIMEOUT) -> T | None:  # noqa: ASYNC109
        """Run ``work`` in the worker thread and wait for it, at most ``timeout`` seconds
        (then None; the work still completes in its thread)."""
        future = asyncio.wrap_future(self.submit(work))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self.last_error = f"{self.store.path}: no answer within {timeout:g} s (locked?)"
            return None

    # -- observing -------------------------------------------------------------------------
    def start(self, sources: list[str]) -> None:
        self.span = uuid.uuid4().hex[:16]
        span, now = self.span, time.time()
        self.submit(lambda store: store.start_span(span, self.observer, now, sources))

    def heartbeat(self) -> None:
        if self.span is not None:
            span, now = self.span, time.time()
            self.submit(lambda store: store.heartbeat(span, now))

    def record(self, name: str, title: str, snapshot: Snapshot[Any], summary: BackendSummary,
               section: Any = None) -> concurrent.futures.Future[list[Change] | None]:
        """Record one refresh of a backend (returns at once; compared in the worker thread)."""
        span, observer, unseen = self.span, self.observer, self.unseen_after

        def work(store: TimelineStore) -> list[Change]:
            reading = reading_of(name, title, snapshot, summary, section)
            if reading is None:
                return []
            return store.record([reading], derive_for, observer=observer, span=span,
                                unseen_after=unseen)

        return self.submit(work)

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Close the span, flush what is queued (at most ``timeout`` s), close the store."""
        if self._closed:
            return
        span, now = self.span, time.time()
        if span is not None:
            self.submit(lambda store: store.stop_span(span, now))
        await self.call(lambda store: store.close(), timeout)
        self._closed = True
        self._executor.shutdown(wait=False)


def reading_of(name: str, title: str, snapshot: Snapshot[Any], summary: BackendSummary,
               section: Any = None) -> Reading | None:
    """A snapshot as a timeline reading: its observation when it is good, else its error
    (None: the backend's timeline module failed on it — logged, the reading skipped)."""
    taken = snapshot.taken_at.timestamp()
    if snapshot.ok and snapshot.value is not None:
        try:
            return Reading(name, title, taken, observation(name, snapshot.value, summary,
                                                           section))
        except Exception:  # a bug in a backend's timeline module must not stop polling
            log.exception("timeline: observing %s failed", name)
            return None
    return Reading(name, title, taken, None, snapshot.error or "no answer")
