"""What the overview remembers between polls: when each alert was first seen.

The renderers in :mod:`tui.render` are pure (same input, same rows); this state lives here,
owned by the app, and is handed to :func:`tui.render.overview.alert_rows` as plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from backends.service import Alert
from backends.topology.causes import grouped


class AlertTracker:
    """Remembers when each alert (by source+key) was first seen, so the list says "since"."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, str], datetime] = {}

    def update(self, alerts: Iterable[Alert], now: datetime) -> list[tuple[Alert, datetime]]:
        current = {(a.source, a.key): a for a in alerts}
        for key in list(self.first_seen):
            if key not in current:
                del self.first_seen[key]
        for key in current:
            self.first_seen.setdefault(key, now)
        # Each likely cause first, its symptoms after it (backends.topology.causes); within
        # equal order, the oldest first.
        ordered = grouped(current.values(), lambda a: self.first_seen[(a.source, a.key)])
        return [(a, self.first_seen[(a.source, a.key)]) for a in ordered]
