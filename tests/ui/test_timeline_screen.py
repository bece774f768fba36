"""The timeline screen (key T) on a fake backend: the app records each change it polls, the
screen shows them with the audit log's actions, oldest first, updated as they come; hostile
text stays text; the filter, source and window keys; the span ends when the app quits."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static

from backends.service import Alert, BackendSummary, Severity
from backends.snapshot import Health, Snapshot
from backends.timeline.store import TimelineStore
from tests.ui.fakes import INJECTION, FakeService
from tests.ui.helpers import wait_for
from tests.ui.test_pushed_snapshots import make_app
from tui.app import SfopsApp
from tui.screens.timeline import TimelineScreen

HOSTILE = f"{INJECTION} \x1b]52;c;cGF5bG9hZA==\x07 \u202eevil"


class FlippingService(FakeService):
    """A fifth backend (no timeline module of its own): followed by its health and alerts."""

    def __init__(self) -> None:
        super().__init__("fifth", "Fifth")
        self.bad = False

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        if not self.bad:
            return BackendSummary(self.name, self.title, Health.OK)
        return BackendSummary(self.name, self.title, Health.DEGRADED,
                              alerts=(Alert(self.name, "disk", Severity.WARNING, HOSTILE),))


def cells(app: SfopsApp) -> list[list[Text]]:
    table = app.screen.query_one("#table", DataTable)
    return [list(table.get_row_at(i)) for i in range(table.row_count)]


def whats(app: SfopsApp) -> list[str]:
    return [row[3].plain for row in cells(app)]


async def test_changes_and_actions_appear_in_order_and_hostile_text_is_inert(tmp_path):
    started = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 5))
    (tmp_path / "audit.jsonl").write_text(json.dumps(
        {"ts": started, "id": "f1", "event": "finished", "env": "default", "user": "bob",
         "host": "h", "action": "nginx.drain", "target": "api-2", "outcome": "succeeded",
         "duration_s": 1.0}) + "\n")
    service = FlippingService()
    app = make_app(tmp_path, service)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: service.polls >= 2, what="the baseline polls")
        await pilot.press("T")
        await wait_for(pilot, lambda: isinstance(app.screen, TimelineScreen), what="timeline")
        screen = app.screen
        await wait_for(pilot, lambda: any("nginx.drain api-2: succeeded" in w
                                          for w in whats(app)), what="the action")
        first_key = app.screen.query_one("#table", DataTable).coordinate_to_cell_key(
            (0, 0)).row_key.value
        service.bad = True
        await wait_for(pilot, lambda: "Fifth ok → degraded" in whats(app), what="the flip")
        await wait_for(pilot, lambda: any("[@click=app.quit]" in w for w in whats(app)),
                       what="the alert")
        texts = whats(app)
        assert texts.index("Fifth ok → degraded") > next(
            i for i, w in enumerate(texts) if "nginx.drain" in w)
        # Outside text: literal, escaped controls, never markup (the app did not quit).
        alert = next(w for w in texts if "[@click=app.quit]" in w)
        assert "\\x1b]52;c;" in alert and "\\u202eevil" in alert and "\x1b" not in alert
        assert app.is_running and app.screen is screen
        # Rows are kept and appended (diff-updated), not refilled.
        table = app.screen.query_one("#table", DataTable)
        assert table.coordinate_to_cell_key((0, 0)).row_key.value == first_key
        ages = app.screen.query_one("#ages", Static).render()
        assert "fifth" in str(ages) and "old" in str(ages)

        service.bad = False
        await wait_for(pilot, lambda: "Fifth degraded → ok" in whats(app), what="recovery")

        await pilot.press("slash")
        await pilot.press(*"degraded")
        await pilot.press("enter")
        await wait_for(pilot, lambda: whats(app) and all("degraded" in w for w in whats(app)),
                       what="the filter")
        await pilot.press("slash", "escape")  # Esc in the filter clears it
        await wait_for(pilot, lambda: any("nginx.drain" in w for w in whats(app)),
                       what="the filter cleared")
        await pilot.press("s")  # only the first source: fifth
        await wait_for(pilot, lambda: whats(app) and not any("nginx.drain" in w
                                                             for w in whats(app)),
                       what="one source")
        assert screen.source == "fifth"
        await pilot.press("w")
        assert screen.window == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, TimelineScreen), what="back")
    # The app's span ended when it quit: the store has it stopped.
    store = TimelineStore(tmp_path / "state" / "timeline.sqlite3").open()
    (span,) = store.spans(0)
    assert span.stopped is not None and span.observer.endswith("(tui)")
    kinds = [e.kind for e in store.events(0)]
    assert kinds.count("health") == 2 and "alert" in kinds and "alert-cleared" in kinds
