"""The sfops Textual app: overview of every configured backend, drill-downs, guarded actions.

Polling: each backend has its own poll job (backends.resilience.Poller) on the app's event
loop; a job re-arms only after its poll finished, each poll is bounded by a timeout, and the
adapters do blocking work off the loop — so a hung backend never freezes the keyboard or
another panel. Widgets are updated by diff from immutable snapshots.

Environments (tui/environments.py): the one on screen is named in the header (and on every
backend screen and confirmation) in its colour; ``E`` or the palette switches to another once
no action is running — the current polls stop, their services close, the other environment's
start, and the screens are built again (read-only bindings included).

Outside text never drives the terminal: renderers, titles and the palette pass it through
:func:`backends.safetext.safe_text`, and every notification — the app's or a screen's —
goes through :meth:`SfopsApp.notify`, which makes it safe and never parses markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import DataTable

from backends.actions import Action, ActionRunner, RunResult, close_quietly
from backends.audit import RUNNING, AuditLog, Unfinished
from backends.config import ConfigError, SfopsConfig, redact_text
from backends.locks import format_since
from backends.resilience import Poller
from backends.safetext import CELL, LINE, TEXT, safe_text
from backends.secrets import redact_known
from backends.service import (
    Alert,
    BackendService,
    BackendSummary,
    observe,
    summary_of,
    wrong_now,
)
from backends.snapshot import Health, Snapshot
from backends.timeline.capture import ActionSnapshots
from backends.timeline.model import HEARTBEAT_S
from backends.timeline.observer import TimelineWriter
from backends.writepath.action import done_but_cannot_write
from tui.alerts import AlertTracker
from tui.environments import (
    BADGE_STYLE,
    EnvironmentOpener,
    EnvironmentPicker,
    Session,
    badge,
    env_class,
)
from tui.modals import ConfirmActionScreen, HelpScreen, ProgressScreen, QuitGuardScreen
from tui.palette import SafeSystemCommands
from tui.render.overview import alert_rows, recent_action_rows
from tui.screens import palette_actions, preload, screen_for, screen_key_help
from tui.screens.base import BackendScreen
from tui.screens.overview import BackendPanel, OverviewScreen
from tui.tablediff import sync_table

PREFLIGHT_TIMEOUT = 60.0
PANEL_KEYS = 9  # panels 1-9 open with their digit
PARTIAL_WAIT = 0.3  # s: a poll during a first sync returns what arrived by then, then polls again


class SfopsApp(App[None]):
    TITLE = "sfops"
    CSS_PATH = "sfops.tcss"
    # Textual's provider parses titles as markup; target names in titles are outside text.
    COMMANDS: ClassVar[set[Any]] = {SafeSystemCommands}
    BINDINGS = [
        Binding("q", "request_quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("E", "pick_environment", "Env", show=False),
        # Only where [verify] is configured and not read-only (check_action).
        Binding("v", "verify_write_path", "Verify", show=False),
        Binding("T", "timeline", "Timeline", show=False),
    ]

    def __init__(
        self,
        config: SfopsConfig,
        services: Sequence[BackendService],
        *,
        runner: ActionRunner,
        config_path: Path | None = None,
        opener: EnvironmentOpener | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.services = list(services)
        self.runner = runner
        self.read_only = runner.read_only
        self.audit: AuditLog = runner.audit
        self.snapshots: dict[str, Snapshot[Any]] = {}
        self.summaries: dict[str, BackendSummary] = {}
        self.alerts = AlertTracker()
        self.poller = Poller()
        self.opener = opener  # None: switching environments is not offered
        self.switching: str | None = None  # the environment being switched to
        self._config_path = config_path
        # Target key (the action's lock keys) → the action that has it, from before its
        # preflight to its end: a second action on the same target is refused at once.
        self.busy: dict[str, Action] = {}
        self.busy_since: dict[str, float] = {}  # target key → when it became busy (epoch)
        # Actions between confirmation and outcome: quitting waits for every one of them.
        self.running: list[Action] = []
        self.quit_when_done = False
        self.headless = False
        self.loop_lag_max = 0.0  # seconds; the worst event-loop delay seen (tests, benchmark)
        self._audit_signature: tuple[int, ...] | None = None
        # Actions that started and have no outcome (audit intent records): "What is wrong
        # now" lines, and the ids already notified about.
        self.unfinished_alerts: list[Alert] = []
        self.running_actions: list[str] = []  # "pg.failover pg-2": causes name them
        self._notified_unfinished: set[str] = set()
        self._audit_running = False  # an action's process was alive: re-judge each refresh
        self._lag_expected = 0.0
        # The timeline store's writer (backends.timeline): this app is an observer while its
        # polls run; made with them (one per environment).
        self.timeline: TimelineWriter | None = None
        self._bind_panels()
        self._show_environment()

    def _bind_panels(self) -> None:
        for index in range(1, min(len(self.services), PANEL_KEYS) + 1):
            self.bind(str(index), f"open_index({index})", description=f"Panel {index}",
                      show=False)
        preload([service.name for service in self.services], read_only=self.read_only)

    def _show_environment(self) -> None:
        """Title, sub-title and colour class of the environment on screen."""
        config_path = self._config_path
        self.sub_title = (safe_text(config_path, LINE) if config_path else "") + (
            "  [READ-ONLY]" if self.read_only else ""
        )
        self.title = f"sfops · {self.config.env}" if self.config.has_environments else "sfops"
        for colour in BADGE_STYLE:
            self.set_class(self.config.has_environments and colour == self.config.colour,
                           env_class(colour))

    def format_title(self, title: str, sub_title: str) -> Content:
        """The header: the environment's name as a coloured badge after "sfops"."""
        content = super().format_title(title, sub_title)
        env = self.config.env
        if not self.config.has_environments or not title.endswith(env):
            return content
        start = len(title) - len(env)
        style = BADGE_STYLE.get(self.config.colour, BADGE_STYLE["neutral"])
        return content.stylize(style, start, start + len(env))

    def environment_badge(self) -> Text | None:
        """The environment as a badge for a screen's title line (None: no environments)."""
        return badge(self.config)

    # -- lifecycle ---------------------------------------------------------------------------
    def _fatal_error(self) -> None:
        """Textual's own version prints the crash's traceback *with every local variable*
        (a revealed password, a passfile's text) to the terminal on exit: ours prints the
        traceback without locals, redacted by known secret values, as plain text."""
        import traceback

        self.bell()
        text = redact_known(traceback.format_exc())
        self._exit_renderables.append(Text(text, style="red"))
        self._close_messages_no_wait()

    def get_default_screen(self) -> Screen[None]:
        return OverviewScreen()

    def on_mount(self) -> None:
        interval = self.config.sfops.refresh_interval
        self._start_polls()
        # Recent actions follow the audit log, whoever writes it (a runbook, a colleague).
        self.set_interval(interval, self.load_recent_actions)
        self.set_interval(HEARTBEAT_S, self._timeline_heartbeat)
        self._lag_expected = time.monotonic() + 0.1
        self.set_interval(0.1, self._measure_lag)
        keep_out_of_gc()  # the modules and widgets live as long as the app
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.on_hangup)
            loop.add_signal_handler(signal.SIGTERM, self.on_terminate)

    def _start_polls(self) -> None:
        interval = self.config.sfops.refresh_interval
        secrets = self.config.secrets()
        self.poller = Poller()
        self._start_timeline()
        for service in self.services:
            if hasattr(service, "partial_wait"):
                # A live screen shows a big first sync as it comes (Kubernetes: 5,000 pods).
                service.partial_wait = PARTIAL_WAIT
            job = self.poller.add(
                service.name,
                lambda service=service: observe(service),  # type: ignore[misc]
                interval=interval,
                timeout=max(5.0, interval * 3, service.contact_timeout + 1.0),
                on_snapshot=self._snapshot_callback(service),
                redact=lambda text: redact_known(text, secrets),
            )
            if hasattr(service, "on_lost"):
                # A member's server went away (PostgreSQL: its watch connection closed):
                # poll now rather than at the end of the interval.
                service.on_lost = lambda member, job=job: job.wake()
        self.poller.start()

    async def _stop_polls(self) -> None:
        """Stop every poll (each job's task ends; no snapshot arrives after this) and close
        the services."""
        await self.poller.stop()
        await asyncio.gather(*(s.close() for s in self.services), return_exceptions=True)
        timeline, self.timeline = self.timeline, None
        if timeline is not None:
            await timeline.stop()  # the span ends: from here on it is a gap

    def _start_timeline(self) -> None:
        """Observe for the timeline: a span from now, every snapshot recorded, the status
        before and after each action kept (the runner tells the ActionSnapshots)."""
        self.timeline = TimelineWriter.for_config(self.config, role="tui")
        self.timeline.start([service.name for service in self.services])
        self.runner.observers[:] = [o for o in self.runner.observers
                                    if not isinstance(o, ActionSnapshots)]
        self.runner.observers.append(ActionSnapshots(self.timeline, self, self.config))

    def _timeline_heartbeat(self) -> None:
        if self.timeline is not None:
            self.timeline.heartbeat()

    async def on_unmount(self) -> None:
        await self._stop_polls()
        # Frozen objects are only freed by reference counting; widgets hold cycles. Handed
        # back to the collector, an app's heap goes once it ends (tests run many apps).
        gc.unfreeze()

    def on_resize(self) -> None:
        # 80x24 is the design size: smaller panels there, roomier ones on taller terminals.
        self.set_class(self.size.height < 30, "-compact")

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every notification (screens' too: Widget.notify calls this) is outside text until
        proven otherwise: redacted one last time by the value of every secret sfops read,
        made safe, never parsed as markup (``markup`` is ignored)."""
        super().notify(safe_text(redact_known(message), TEXT, lines=True),
                       title=safe_text(redact_known(title), LINE),
                       severity=severity, timeout=timeout, markup=False)

    def _measure_lag(self) -> None:
        now = time.monotonic()
        self.loop_lag_max = max(self.loop_lag_max, now - self._lag_expected)
        self._lag_expected = now + 0.1

    # -- polling -----------------------------------------------------------------------------
    def _snapshot_callback(self, service: BackendService) -> Callable[[Snapshot[Any]], None]:
        def on_snapshot(snapshot: Snapshot[Any]) -> None:
            first_complete = getattr(snapshot.value, "synced", True) is True and (
                getattr(self.snapshots.get(service.name), "value", None) is None
                or getattr(self.snapshots[service.name].value, "synced", True) is False)
            self.snapshots[service.name] = snapshot
            if first_complete:
                keep_out_of_gc()
            summary = summary_of(service, snapshot)
            self.summaries[service.name] = summary
            if self.timeline is not None:  # compared and written in its own thread
                self.timeline.record(service.name, service.title, snapshot, summary,
                                     getattr(self.config, service.name, None))
            self._render_backend(service, summary, snapshot)
            if getattr(snapshot.value, "synced", True) is False:
                self.poller.jobs[service.name].wake()  # more of the first sync, soon

        return on_snapshot

    def _render_backend(
        self, service: BackendService, summary: BackendSummary, snapshot: Snapshot[Any]
    ) -> None:
        with contextlib.suppress(Exception):
            overview = self.get_screen_stack_overview()
            if overview is not None:
                overview.query_one(f"#panel-{service.name}", BackendPanel).show(summary, snapshot)
        self.render_alerts()
        # Every open screen of this backend (e.g. Kafka's brokers under its topics) gets the
        # new snapshot, so going back never shows an older one.
        for screen in self.screen_stack:
            if isinstance(screen, BackendScreen) and screen.backend == service.name:
                screen.show(snapshot)

    def get_screen_stack_overview(self) -> OverviewScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, OverviewScreen):
                return screen
        return None

    def filled_overview(self) -> OverviewScreen | None:
        """The overview when its tables are there to update; None while it is composed
        (again, after a switch of environment: it reads the recent actions and renders the
        alerts itself once filled)."""
        overview = self.get_screen_stack_overview()
        return overview if overview is not None and overview.filled else None

    # -- the ActionContext of backends.contract: actions built from the TUI share the live
    # services (their breakers, the last LSN PostgreSQL saw) and see the last status.
    def service(self, backend: str) -> BackendService:
        for service in self.services:
            if service.name == backend:
                return service
        raise LookupError(f"{backend} is not configured")

    def status(self, backend: str) -> Any:
        snapshot = self.snapshots.get(backend)
        return None if snapshot is None else snapshot.best

    # -- what the screens see of the app (tui.screens.host.ScreenHost) -------------------------
    def last_snapshot(self, backend: str) -> Snapshot[Any] | None:
        return self.snapshots.get(backend)

    def overview_mounted(self) -> None:
        self.load_recent_actions(force=True)
        self.render_alerts()

    def current_summaries(self) -> list[BackendSummary]:
        """Every configured backend's summary; one not polled yet reads UNKNOWN (so the
        wrong-now list says it has not answered, never "nothing is wrong")."""
        return [self.summaries.get(s.name) or BackendSummary(s.name, s.title, Health.UNKNOWN)
                for s in self.services]

    def wrong_now_explained(self) -> list[Alert]:
        """What is wrong now, each symptom under its likely cause across the layers
        (backends.topology): built from the statuses of the last good polls only — a backend
        that did not answer is an alert of its own, never evidence."""
        from backends.topology.causes import explain
        from backends.topology.config import topology_of
        from backends.topology.model import build_topology

        statuses = {name: snapshot.value for name, snapshot in self.snapshots.items()
                    if snapshot.ok}
        topology = build_topology(topology_of(self.config), statuses,
                                  running=self.running_actions,
                                  postgres_configured=self.config.postgres is not None)
        return explain([*wrong_now(self.current_summaries()), *self.unfinished_alerts],
                       topology)

    def render_alerts(self) -> None:
        overview = self.filled_overview()
        if overview is None:
            return
        now = datetime.now(UTC)
        tracked = self.alerts.update(self.wrong_now_explained(), now)
        rows = [(row.key, row.cells) for row in alert_rows(tracked, now)]
        with contextlib.suppress(Exception):  # the overview may be mid-compose
            sync_table(overview.query_one("#alerts", DataTable), rows, ordered=True)

    def action_refresh_now(self) -> None:
        for job in self.poller.jobs.values():
            job.wake()

    @work(thread=True, exclusive=True, group="recent")
    def load_recent_actions(self, force: bool = False) -> None:
        audit = self.audit  # the environment's log when this read began
        # A stat per refresh; the file is read only when it changed (size, time or inode).
        try:
            stat = os.stat(audit.path)
            signature: tuple[int, ...] | None = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = None
        # A running action (its process alive) may die without a write: look again.
        if not force and signature == self._audit_signature and not self._audit_running:
            return
        self._audit_signature = signature
        try:
            view = audit.view(limit=5)
            records, unfinished = view.actions, view.unfinished
        except Exception:  # an unreadable audit log must not break the overview
            records, unfinished = [], []
        self._audit_running = any(u.state == RUNNING for u in unfinished)
        self.call_from_thread(self._show_recent, records, unfinished, audit)

    def _show_recent(self, records: list[dict[str, Any]],
                     unfinished: Sequence[Unfinished] = (), audit: AuditLog | None = None,
                     ) -> None:
        if audit is not None and audit is not self.audit:
            return  # read before a switch of environment: another environment's actions
        # A worker's result may land while the overview is composed again (a switch of
        # environment): its table is not there then (a fresh `make test` saw NoMatches end the
        # app).
        overview = self.filled_overview()
        if overview is not None:
            sync_table(overview.query_one("#recent", DataTable), recent_action_rows(records))
        self._show_unfinished(unfinished)

    def _show_unfinished(self, unfinished: Sequence[Unfinished]) -> None:
        """Interrupted actions (started, no outcome, nobody dealt with them): a line in "What
        is wrong now" while they stay so, and one notification each, with what to check."""
        from backends.intent import alerts, headline

        self.unfinished_alerts = alerts(unfinished)
        self.running_actions = [f"{u.action} {u.target}" for u in unfinished
                                if u.state == RUNNING and not u.resolved]
        for item in unfinished:
            if item.resolved or item.state == RUNNING or item.id in self._notified_unfinished:
                continue
            self._notified_unfinished.add(item.id)
            self.notify(headline(item), title="an action did not finish", severity="error",
                        markup=False, timeout=30)
        self.render_alerts()

    # -- navigation --------------------------------------------------------------------------
    def action_open_index(self, index: int) -> None:
        if 1 <= index <= len(self.services):
            self.open_backend(self.services[index - 1].name)

    def open_backend(self, name: str) -> None:
        screen_cls = screen_for(name)
        if screen_cls is None:
            self.notify(f"no drill-down for {name} yet", severity="warning", markup=False)
            return
        while len(self.screen_stack) > 1 and not isinstance(self.screen, OverviewScreen):
            self.pop_screen()
        self.push_screen(screen_cls())

    def action_timeline(self) -> None:
        from tui.screens.timeline import TimelineScreen

        if isinstance(self.screen, TimelineScreen):
            return
        self.push_screen(TimelineScreen())

    def timeline_writer(self) -> TimelineWriter | None:
        return self.timeline

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_text(self)))

    # -- environments ------------------------------------------------------------------------
    def action_pick_environment(self) -> None:
        if self.opener is None or len(self.config.environments) < 2:
            self.notify("only one environment is configured (see [environments] in the "
                        "README)", severity="warning", markup=False)
            return

        def chosen(name: str | None) -> None:
            if name is not None and name != self.config.env:
                self.switch_environment(name)

        self.push_screen(EnvironmentPicker(list(self.config.environments.values()),
                                           self.config.env), chosen)

    def switch_refusal(self) -> str | None:
        """Why no switch can start now (None: it can). Actions are never left behind: a
        switch waits for nobody and is refused while one runs or awaits confirmation."""
        if self.switching is not None:
            return f"already switching to {self.switching}"
        if self.busy or self.running:
            names = sorted({a.describe() for a in [*self.busy.values(), *self.running]})
            return ("an action is in progress (" + "; ".join(names) + "): switch once it "
                    "has finished")
        if self.quit_when_done or self.headless:
            return "quitting"
        return None

    @work(exclusive=False, group="switch")  # never cancelled half-way
    async def switch_environment(self, name: str) -> None:
        """Stop this environment's polls and services, start the other's, build the screens
        again. Its configuration is read off the event loop; if it is broken, nothing
        changes (the error is shown)."""
        if self.opener is None:
            return
        if (refusal := self.switch_refusal()) is not None:
            self.notify(f"not switching to {name}: {refusal}", severity="warning",
                        markup=False)
            return
        self.switching = name
        try:
            try:
                config = await asyncio.to_thread(self.opener.load, name)
            except ConfigError as exc:
                self.notify(str(exc), title=f"cannot switch to {name}", severity="error",
                            markup=False, timeout=15)
                return
            session = self.opener.session(config)
            await self._stop_polls()
            await self._start_session(session)
        finally:
            self.switching = None
        self.notify(f"environment: {config.env}" + (" (read-only)" if self.read_only else ""),
                    markup=False, timeout=4)

    async def _start_session(self, session: Session) -> None:
        self.config, self.services, self.runner = (session.config, list(session.services),
                                                   session.runner)
        self.read_only = session.runner.read_only
        self.audit = session.runner.audit
        self.snapshots, self.summaries = {}, {}
        self.alerts = AlertTracker()
        self.unfinished_alerts = []
        self._audit_signature = None
        self._audit_running = False
        self._bind_panels()
        self._show_environment()
        # Every screen was built for the old services (panels, read-only bindings): back to
        # the overview, composed again.
        while len(self.screen_stack) > 1:
            await self.pop_screen()
        overview = self.get_screen_stack_overview()
        if overview is not None:
            await overview.rebuild()
        self._start_polls()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if self.opener is not None:
            for env in self.config.environments.values():
                if env.name == self.config.env:
                    continue
                mode = ", read-only" if env.read_only else ""
                yield SystemCommand(
                    safe_text(f"Switch environment: {env.name}", CELL),
                    safe_text(f"stop polling {self.config.env}, open {env.name} "
                              f"({env.colour}{mode}; key E)", LINE),
                    partial(self.switch_environment, env.name),
                )
        yield SystemCommand("Open timeline", "every change and action in time order (key T)",
                            self.action_timeline)
        for index, service in enumerate(self.services, 1):
            yield SystemCommand(
                safe_text(f"Open {service.title}", CELL),
                safe_text(f"drill down into {service.name} (key {index})", LINE),
                partial(self.open_backend, service.name),
            )
        if self.read_only:
            return  # read-only: no mutating entry exists at all
        if self.can_verify():
            yield SystemCommand("Verify the write path",
                                "a canary write through nginx → API → PostgreSQL → Kafka → "
                                "consumer, each hop timed (key v)", self.action_verify_write_path)
        for title, help_line, build in palette_actions(self):
            # Titles name targets (from the cluster, the config): plain text, shown as such
            # by SafeSystemCommands.
            yield SystemCommand(safe_text(title, CELL), safe_text(help_line, LINE),
                                partial(self.start_action, build))

    # -- actions -----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "verify_write_path":
            return self.can_verify()  # False: the key does not exist (read-only, no [verify])
        return True

    def can_verify(self) -> bool:
        """The write-path canary may run: configured, enabled, not read-only (it writes)."""
        return not self.read_only and self.runner.write_path is not None

    def action_verify_write_path(self) -> None:
        """`sfops verify` in the TUI: no confirmation (canary data only), progress shown."""
        check = self.runner.write_path
        if not self.can_verify() or check is None:
            self.notify("verify: not available (read-only, or no [verify] configured)",
                        severity="warning", markup=False)
            return
        from backends.writepath.action import VerifyWritePath

        self.start_action(lambda: self.runner.build(VerifyWritePath, check.canary()),
                          confirm=False)

    def start_action(self, build: Callable[[], Action], *, confirm: bool = True) -> None:
        if self.read_only:
            self.notify("read-only mode: actions are disabled", severity="warning")
            return
        if self.quit_when_done or self.headless:
            self.notify("quitting once the running actions finish: no new action",
                        severity="warning", markup=False)
            return
        if self.switching is not None:
            self.notify(f"switching to {self.switching}: no new action", severity="warning",
                        markup=False)
            return
        try:
            action = build()
        except Exception as exc:
            self.notify(str(exc), title="cannot build action", severity="error", markup=False)
            return
        keys = busy_keys(action)
        held = [key for key in keys if key in self.busy]
        if held:  # as the lock refusal says it: who holds it, since when
            holder = self.busy[held[0]]
            self.notify(f"busy: held by {holder.name} {holder.target} in this sfops since "
                        f"{format_since(self.busy_since.get(held[0]))} "
                        f"({holder.describe()}); nothing was started",
                        severity="warning", markup=False)
            self.run_worker(close_quietly(action), group="close")
            return
        now = time.time()
        for key in keys:  # busy from now, before the preflight
            self.busy[key] = action
            self.busy_since[key] = now
        self.run_action_flow(action, keys, confirm=confirm)

    @work(exclusive=False, group="action")
    async def run_action_flow(self, action: Action, keys: Sequence[str] = (), *,
                              confirm: bool = True) -> None:
        """Prepare once: the target's lock is taken, then the preflight shown in the dialog
        is the one the runner records (it re-reads only the action's named critical
        conditions right before the change); the lock is held to the end."""
        try:
            self.notify(f"preflight: {action.describe()}…", markup=False, timeout=3)
            try:
                checks = await asyncio.wait_for(self.runner.prepare(action), PREFLIGHT_TIMEOUT)
            except Exception as exc:
                message = redact_text(f"preflight failed to run: {exc}",
                                      self.config.secrets())
                self.notify(message, severity="error", markup=False)
                return
            confirmed = not confirm or await self.push_screen_wait(
                ConfirmActionScreen(action, checks, environment=self.environment_badge()))
            if not confirmed:
                self.notify("cancelled: nothing was changed", markup=False)
                return
            if self.quit_when_done or self.headless:
                self.notify("quitting: not started, nothing was changed", markup=False)
                return
            progress = ProgressScreen(action)
            self.running.append(action)
            try:
                await self.push_screen(progress)
                result = await self.runner.run(action, on_step=progress.add_step,
                                               preflight=checks)
            finally:
                self.running.remove(action)
            self.action_finished(action, result, progress)
        finally:
            for key in keys:
                if self.busy.get(key) is action:
                    del self.busy[key]
                    self.busy_since.pop(key, None)
            await close_quietly(action)  # also when refused, cancelled or never confirmed

    def action_finished(self, action: Action, result: RunResult, progress: ProgressScreen) -> None:
        if self.headless or self.quit_when_done:
            if not self.running:  # the last one: every outcome is in the audit log
                self.exit()
            return
        with contextlib.suppress(Exception):
            progress.finish(result)
        cannot_write = done_but_cannot_write(result.write_path) if result.ok else None
        severity = "information" if result.ok and not cannot_write else "error"
        message = f"{action.describe()}: {result.outcome.value}"
        if result.error:
            message += f" — {result.error}"
        if cannot_write is not None:
            message += f"; {cannot_write}"
        elif result.write_path is not None and result.ok:
            message += f"; {result.write_path.summary()}"
        self.notify(message, severity=severity, markup=False, timeout=10)  # type: ignore[arg-type]
        self.load_recent_actions()
        self.action_refresh_now()

    # -- quitting, hang-up, termination -------------------------------------------------------
    def action_request_quit(self) -> None:
        if not self.running:
            self.exit()
            return

        def decided(choice: str | None) -> None:
            if choice == "quit-when-done":
                if not self.running:  # they finished while the dialog was open
                    self.exit()
                    return
                self.quit_when_done = True
                self.notify("will quit when the running actions finish", markup=False)

        self.push_screen(QuitGuardScreen("; ".join(a.describe() for a in self.running)),
                         decided)

    def on_hangup(self) -> None:
        """The SSH link dropped: the terminal is gone, the action is not. Detach output and
        let a running action go on, headless, to its end; its outcome goes to the audit log."""
        self.headless = True
        # Stop the input thread first: on a hung-up terminal (or /dev/null) its select()
        # is always readable and read() returns b"", so it would spin and starve the loop.
        driver = self._driver
        exit_event = getattr(driver, "exit_event", None)
        if exit_event is not None:
            exit_event.set()
        # Nothing can be shown any more: drop output at the source. Textual's writer thread
        # may be wedged on the dead terminal, and a full writer queue would then block the
        # event loop (and the action) forever in Queue.put.
        if driver is not None:
            driver.write = lambda data: None  # type: ignore[method-assign]
            driver.flush = lambda: None  # type: ignore[method-assign]
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
        if not self.running:
            self.exit()

    def on_terminate(self) -> None:
        if not self.running:
            self.exit()
        else:
            self.quit_when_done = True


def keep_out_of_gc() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach.

    Why: a full (generation 2) collection walks every tracked object, and a 5,000-pod
    cluster keeps some 150,000 of them (the informers' stores, the snapshot): measured, each
    full collection held the event loop (and every thread) for 100-600 ms, the worst stalls
    of the fill and of steady state. The long-lived objects — modules, widgets, the first
    complete snapshot's store — are frozen (``gc.freeze``) once, after startup and after
    each backend's first complete snapshot; they are still freed by reference counting when
    dropped, and what changes later is collected as usual."""
    gc.freeze()


def busy_keys(action: Action) -> list[str]:
    """What the action occupies in this app: its lock keys, else its name and target."""
    try:
        keys = [key.name for key in action.locks()]
    except Exception:  # a lock key that cannot be made: the runner will say why
        keys = []
    return keys or [f"{action.name}:{action.target}"]


def help_text(app: SfopsApp) -> Text:
    text = Text()
    text.append("sfops keys\n\n", style="bold")
    lines = [
        (panel_keys(len(app.services)), "open a backend's screen (panel order)"),
        ("Esc", "back"),
        ("/", "filter the table"),
        ("T", "timeline: every change and action in time order"),
        ("r", "refresh now"),
        ("Ctrl+P", "command palette (every screen and action)"),
        ("?", "this help"),
        ("q", "quit (asks first when an action is running)"),
    ]
    if app.opener is not None and len(app.config.environments) > 1:
        lines.append(("E", f"switch environment (now {app.config.env})"))
    if app.can_verify():
        lines.append(("v", "verify the write path: a canary through nginx → API → "
                           "PostgreSQL → Kafka → consumer"))
    lines += screen_key_help([s.name for s in app.services], read_only=app.read_only)
    for key, what in lines:
        text.append(f"{key:<14}", style="bold cyan")
        text.append(f"{what}\n")
    if app.read_only:
        text.append("\nread-only mode: no action keys or palette entries exist.\n", style="yellow")
    return text


def panel_keys(count: int) -> str:
    """The keys that open panels: "1-4 / Enter" for four backends."""
    count = min(count, PANEL_KEYS)
    digits = "1" if count == 1 else f"1-{count}"
    return "Enter" if count == 0 else f"{digits} / Enter"


def overall_health(summaries: Iterable[BackendSummary]) -> Health:
    return Health.worst(s.health for s in summaries)


__all__ = ["SfopsApp", "overall_health"]
