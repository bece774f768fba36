"""The overview: one panel per configured backend (health badge, key figures, sparkline, data
age), what is wrong now, and the recent actions. The app pushes each backend's new summary
to its panel (:meth:`BackendPanel.show`) and fills the two tables."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, Sparkline, Static

from backends.service import BackendService, BackendSummary
from backends.snapshot import Health, Snapshot
from tui.footer import SteadyFooter
from tui.render.cells import CELL, safe_text
from tui.render.overview import panel_body, panel_title
from tui.tablediff import add_columns

if TYPE_CHECKING:
    from tui.screens.host import ScreenHost

SPARK_POINTS = 40


class BackendPanel(Vertical):
    """One overview panel: title with health badge, key figures, sparkline, data age."""

    can_focus = True

    def __init__(self, service: BackendService, index: int) -> None:
        super().__init__(id=f"panel-{service.name}", classes="panel")
        self.service = service
        self.index = index
        self.history: deque[float] = deque(maxlen=SPARK_POINTS)

    def compose(self) -> ComposeResult:
        yield Static(
            Text(f"{self.index} {safe_text(self.service.title, CELL)}", style="bold"),
            markup=False,
            classes="panel-title",
        )
        yield Static(
            Text("waiting for the first poll…", style="dim"), markup=False, classes="panel-body"
        )
        yield Sparkline([], classes="panel-spark")

    def show(self, summary: BackendSummary, snapshot: Snapshot[Any]) -> None:
        breaker = self.service.breaker.state if self.service.breaker is not None else None
        title = Text(f"{self.index} ")
        title.append_text(
            panel_title(
                summary, data_age=snapshot.age(), stale_for=snapshot.stale_for(), breaker=breaker
            )
        )
        self.query_one(".panel-title", Static).update(title)
        self.query_one(".panel-body", Static).update(
            panel_body(summary, stale_for=snapshot.stale_for()))
        if summary.spark_value is not None:
            self.history.append(summary.spark_value)
            self.query_one(".panel-spark", Sparkline).data = list(self.history)
        for health in Health:
            self.set_class(summary.health is health, f"health-{health.value}")


class OverviewScreen(Screen[None]):
    BINDINGS = [Binding("enter", "open_focused", "Open", show=False)]
    # True while its tables are there with their columns: not before the first mount, nor while
    # it is composed again for another environment (a worker's late result lands in between).
    filled = False

    @property
    def host(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="panels"):
            for index, service in enumerate(self.host.services, 1):
                yield BackendPanel(service, index)
        alerts: DataTable[Text] = DataTable(id="alerts", cursor_type="row", show_header=False)
        yield Static(Text("What is wrong now", style="bold"), markup=False, classes="section")
        yield alerts
        yield Static(Text("Recent actions", style="bold"), markup=False, classes="section")
        recent: DataTable[Text] = DataTable(id="recent", cursor_type="none", show_header=False)
        yield recent
        yield SteadyFooter()

    def on_mount(self) -> None:
        self._fill()

    async def rebuild(self) -> None:
        """Compose again for the app's current services (another environment)."""
        self.filled = False
        await self.recompose()
        self._fill()

    def _fill(self) -> None:
        add_columns(self.query_one("#alerts", DataTable), ["sev", "source", "message", "since"])
        add_columns(self.query_one("#recent", DataTable), ["time", "action", "outcome", "user"])
        self.filled = True
        self.host.overview_mounted()
        if not self.host.services:
            self.notify(
                "no backends configured: add [nginx], [postgres], [kafka] or "
                "[kubernetes] to the configuration",
                severity="warning",
                markup=False,
            )

    def action_open_focused(self) -> None:
        focused = self.focused
        if isinstance(focused, BackendPanel):
            self.host.open_backend(focused.service.name)
