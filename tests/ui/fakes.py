"""Fake backend services for UI tests: the cases a real server can't produce on demand
(a poll that hangs forever, markup-like text in every field)."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.service import Alert, BackendSummary, Figure, Severity
from backends.snapshot import Health, Snapshot

INJECTION = "[@click=app.quit]boom [link=http://x]y[/link] [unclosed"


class FakeService:
    breaker = None
    contact_timeout = 0.5

    def __init__(self, name: str, title: str, *, hang: bool = False, message: str = "ok") -> None:
        self.name = name
        self.title = title
        self.hang = hang
        self.message = message
        self.polls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def contact(self) -> None:
        if self.hang:
            await asyncio.Event().wait()  # a hung server answers nothing, not even a probe

    async def poll(self) -> dict[str, Any]:
        self.polls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.Event().wait()  # never returns: a hung backend
            return {"count": self.polls}
        finally:
            self.in_flight -= 1

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        value = snapshot.best or {}
        return BackendSummary(
            name=self.name,
            title=self.title,
            health=Health.DEGRADED,
            figures=(
                Figure("polls", str(value.get("count")), Health.OK),
                Figure("label", self.message, Health.DEGRADED),
            ),
            alerts=(Alert(self.name, "fake", Severity.WARNING, self.message),),
            spark_value=float(value.get("count", 0)),
        )

    async def close(self) -> None:
        self.closed = True
