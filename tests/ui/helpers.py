"""Pilot helpers. Pilot's idle wait never returns in a polling app: wait on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.pilot import Pilot


async def wait_for(
    pilot: Pilot, condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def screen_text(pilot: Pilot) -> str:
    """The whole screen as plain text (what a person sees)."""
    app = pilot.app
    lines = app.screen._compositor.render_update(full=True)
    del lines
    from rich.console import Console

    console = Console(width=app.size.width, record=True, file=open("/dev/null", "w"))
    console.print(app.screen._compositor)
    return console.export_text()
