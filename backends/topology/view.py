"""The other layers as an action's preflight sees them, for its blast-radius checks.

The TUI hands over its last statuses (no request at all); the CLI, which has none, polls each
backend the check needs once, under the liveness rule, bounded by :data:`POLL_TIMEOUT` — in
the background from :meth:`LayerView.prefetch`, so a failover's confirm-gone window and the
polls overlap. A layer that cannot be read is named in a warning, never guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from backends.resilience import describe_error, with_timeout
from backends.secrets import redact_known
from backends.topology.config import topology_of
from backends.topology.model import Topology, build_topology

POLL_TIMEOUT = 10.0  # one backend's poll for a CLI preflight

StatusOf = Callable[[str], Any]
Fresh = Callable[[str], Awaitable[Any]]


class LayerView:
    def __init__(self, config: Any, status: StatusOf, fresh: Fresh | None = None, *,
                 timeout: float = POLL_TIMEOUT) -> None:
        self.config = config
        self._status = status
        self._fresh = fresh
        self._timeout = timeout
        self._reads: dict[str, asyncio.Task[Any]] = {}

    @classmethod
    def of(cls, context: Any) -> LayerView:
        """From an action context: its ``status`` (the TUI's last statuses) and, where it has
        one, ``fresh_status`` (the CLI's one-shot poll)."""
        return cls(context.config, context.status, getattr(context, "fresh_status", None))

    def configured(self, backend: str) -> bool:
        return getattr(self.config, backend, None) is not None

    async def _read(self, backend: str) -> Any:
        value = self._status(backend)
        if value is not None or self._fresh is None:
            return value
        return await with_timeout(self._fresh(backend), self._timeout,
                                  f"{backend} status for the blast radius")

    def prefetch(self, backends: Iterable[str]) -> None:
        """Start reading ``backends`` now (the CLI's polls run while the preflight reads)."""
        for backend in backends:
            if backend not in self._reads and self.configured(backend):
                self._reads[backend] = asyncio.ensure_future(self._read(backend))

    async def topology(self, backends: Iterable[str]) -> tuple[Topology, list[str]]:
        """The cross-layer view from ``backends`` (those configured), and what could not be
        read ("nginx: no status yet", "kubernetes: …timed out")."""
        wanted = [b for b in dict.fromkeys(backends) if self.configured(b)]
        self.prefetch(wanted)
        statuses: dict[str, Any] = {}
        problems: list[str] = []
        for backend in wanted:
            try:
                value = await self._reads[backend]
            except Exception as exc:
                problems.append(f"{backend}: {redact_known(describe_error(exc))}")
                continue
            if value is None:
                problems.append(f"{backend}: no status yet")
            statuses[backend] = value
        return build_topology(topology_of(self.config), statuses,
                              postgres_configured=self.configured("postgres")), problems

    async def close(self) -> None:
        """Stop reads still running (an action refused before it needed them)."""
        for task in self._reads.values():
            if not task.done():
                task.cancel()
        for task in self._reads.values():
            with contextlib.suppress(BaseException):
                await task
