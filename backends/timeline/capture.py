"""The status before and after each action, kept for the postmortem (``sfops incident
export``): a :class:`~backends.actions.RunObserver` of the ActionRunner.

Before: the action's backend as it was when the operator confirmed — in the TUI its last
snapshot (no extra request), elsewhere a reading started with the preflight (so it costs the
action no time: it is awaited, at most BEFORE_WAIT_S, only when the intent is on disk).
After: a fresh reading once the final record is written, at most AFTER_TIMEOUT_S. Both are
stored with the action's started-record id, and recorded as timeline readings too, so a
runbook's action shows its changes even when no TUI is watching.

Reads go through the same services the action uses (the TUI's live ones, the CLI's context),
under the liveness rule (backends.service.observe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from backends.actions import Action
from backends.contract import Backend
from backends.resilience import describe_error, with_timeout
from backends.secrets import redact_known
from backends.service import BackendService, BackendSummary, observe, summary_of
from backends.snapshot import Snapshot
from backends.timeline.observer import TimelineWriter
from backends.timeline.store import TimelineStore

log = logging.getLogger(__name__)

BEFORE_WAIT_S = 5.0
AFTER_TIMEOUT_S = 5.0
FORGET_AFTER_S = 600.0  # a preflight never followed by a run (not confirmed)


class StatusSource(Protocol):
    """Where the readings come from: the TUI app or the CLI's action context."""

    def service(self, backend: str) -> BackendService: ...


@dataclass
class _Before:
    action: Action
    backend: Backend
    started: float
    cached: Snapshot[Any] | None = None
    task: asyncio.Task[Snapshot[Any]] | None = None
    action_id: str | None = None


def backend_of(action: Action) -> Backend | None:
    """The backend whose contract declares this action (None: e.g. a write-path check)."""
    from backends.registry import backends

    return next((b for b in backends() if any(s.name == action.name for s in b.actions)),
                None)


class ActionSnapshots:
    def __init__(self, writer: TimelineWriter, source: StatusSource, config: Any, *,
                 before_wait: float = BEFORE_WAIT_S, after_timeout: float = AFTER_TIMEOUT_S,
                 ) -> None:
        self.writer = writer
        self.source = source
        self.config = config
        self.before_wait = before_wait
        self.after_timeout = after_timeout
        self._runs: dict[int, _Before] = {}

    async def action_event(self, event: str, action: Action,
                           record: Mapping[str, Any]) -> None:
        self._forget_old()
        if event == "preparing":
            self._prepare(action)
        elif event == "started":
            await self._started(action, str(record.get("id") or ""))
        elif event == "finished":
            await self._finished(action, record)

    def _prepare(self, action: Action) -> None:
        backend = backend_of(action)
        if backend is None:
            return
        run = _Before(action, backend, time.monotonic())
        last = getattr(self.source, "last_snapshot", None)
        run.cached = last(backend.name) if last is not None else None
        if run.cached is None:  # no live poll here: read now, beside the preflight
            run.task = asyncio.ensure_future(self._read(backend))
        self._runs[id(action)] = run

    async def _started(self, action: Action, action_id: str) -> None:
        run = self._run(action)
        if run is None or not action_id:
            return
        run.action_id = action_id
        snapshot = run.cached
        if snapshot is None and run.task is not None:
            wait = max(0.5, self.before_wait - (time.monotonic() - run.started))
            done, _ = await asyncio.wait({run.task}, timeout=wait)
            snapshot = run.task.result() if done else None
            if not done:
                run.task.cancel()
        self._store(run, "before", snapshot, record_reading=run.cached is None)

    async def _finished(self, action: Action, record: Mapping[str, Any]) -> None:
        run = self._runs.pop(id(action), None)
        if run is None or run.action is not action:
            return
        if run.task is not None and not run.task.done():
            run.task.cancel()
        if run.action_id is None:
            return  # refused before its first change: nothing to compare
        snapshot = await self._read(run.backend, self.after_timeout)
        self._store(run, "after", snapshot, record_reading=True)

    def _run(self, action: Action) -> _Before | None:
        run = self._runs.get(id(action))
        return run if run is not None and run.action is action else None

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key, run in list(self._runs.items()):
            if now - run.started > FORGET_AFTER_S:
                if run.task is not None:
                    run.task.cancel()
                del self._runs[key]

    async def _read(self, backend: Backend, timeout: float | None = None,  # noqa: ASYNC109
                    ) -> Snapshot[Any]:
        budget = self.before_wait if timeout is None else timeout
        try:
            service = self.source.service(backend.name)
            value = await with_timeout(observe(service), budget, f"{backend.title} status")
        except Exception as exc:
            return Snapshot.failure(redact_known(describe_error(exc)))
        return Snapshot.success(value)

    def _store(self, run: _Before, phase: str, snapshot: Snapshot[Any] | None, *,
               record_reading: bool) -> None:
        """Queue the snapshot row (and the reading for the timeline); never waits."""
        backend, action = run.backend, run.action
        summary = self._summary(backend, snapshot)
        value = None if snapshot is None else snapshot.value
        taken = snapshot.taken_at.timestamp() if snapshot is not None else None
        error = "not read in time" if snapshot is None else snapshot.error
        action_id, now = run.action_id or "", time.time()

        def work(store: TimelineStore) -> None:  # in the writer's thread: a big status's JSON
            status = None
            if value is not None:
                with contextlib.suppress(Exception):  # a contract's JSON bug loses only this
                    status = backend.status_json(value)
            store.add_snapshot(
                ts=now, action_id=action_id, action=action.name, target=action.target,
                phase=phase, backend=backend.name, taken_at=taken,
                ok=snapshot is not None and snapshot.ok, error=error,
                summary=_summary_json(summary), status=status)

        self.writer.submit(work)
        if record_reading and snapshot is not None and summary is not None:
            self.writer.record(backend.name, backend.title, snapshot, summary,
                               getattr(self.config, backend.name, None))

    def _summary(self, backend: Backend, snapshot: Snapshot[Any] | None
                 ) -> BackendSummary | None:
        if snapshot is None:
            return None
        try:
            return summary_of(self.source.service(backend.name), snapshot)
        except Exception:
            log.debug("no summary of %s", backend.name, exc_info=True)
            return None


def _summary_json(summary: BackendSummary | None) -> dict[str, Any]:
    if summary is None:
        return {}
    return {
        "health": summary.health.value,
        "figures": [{"label": f.label, "value": f.value, "health": f.health.value}
                    for f in summary.figures],
        "alerts": [{"key": a.key, "severity": a.severity.name.lower(), "message": a.message}
                   for a in summary.alerts],
        "error": summary.error,
    }
