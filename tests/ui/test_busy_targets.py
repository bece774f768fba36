"""The TUI's busy state per target (issue #14): set on the key press, before the preflight;
several actions on different targets at once; quitting and SIGTERM wait for all of them.
Fake actions (no lab): the point is the app's bookkeeping, the locks are real files."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

from backends.actions import Action, ActionRunner, CheckResult, Step
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from backends.locks import CHECK_NAME, LocalFlockLocks, LockKey, LockManager, format_since
from tests.ui.fakes import FakeService
from tests.ui.helpers import wait_for
from tui.app import SfopsApp
from tui.modals import ConfirmActionScreen, ProgressScreen, QuitGuardScreen


class SlowAction(Action):
    name = "test.slow"

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.preflight_started = asyncio.Event()
        self.preflight_may_end = asyncio.Event()
        self.running = asyncio.Event()
        self.may_end = asyncio.Event()
        self.executed = False

    def locks(self) -> list[LockKey]:
        return [LockKey(f"test-{self.target}", f"target {self.target}")]

    async def preflight(self) -> list[CheckResult]:
        self.preflight_started.set()
        await self.preflight_may_end.wait()
        return [CheckResult.passed("ok")]

    async def execute(self) -> AsyncIterator[Step]:
        self.running.set()
        yield Step("working")
        await self.may_end.wait()
        self.executed = True
        yield Step("done", 1.0)


def make_app(tmp_path: Path) -> SfopsApp:
    config = SfopsConfig(
        path=tmp_path / "sfops.toml",
        sfops=SfopsSettings(refresh_interval=0.2, audit_log=tmp_path / "audit.jsonl",
                            state_dir=tmp_path / "state"),
        executors={},
    )
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"),
                          locks=LockManager(local=LocalFlockLocks(tmp_path / "state")))
    return SfopsApp(config, [FakeService("nginx", "Load balancer")], runner=runner)


async def confirm(pilot, app: SfopsApp) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="dialog")
    await pilot.press("tab", "enter")  # Cancel has the focus; Confirm is next


async def test_busy_before_the_preflight_and_a_second_action_on_it_is_refused(tmp_path):
    app = make_app(tmp_path)
    first, second = SlowAction("a"), SlowAction("a")
    async with app.run_test(size=(80, 24)) as pilot:
        app.start_action(lambda: first)
        assert "test-a" in app.busy  # at once: the preflight has not even started
        await wait_for(pilot, lambda: first.preflight_started.is_set(), what="preflight")
        app.start_action(lambda: second)  # during the first one's preflight
        await pilot.pause()
        assert app.busy["test-a"] is first and not second.preflight_started.is_set()
        first.preflight_may_end.set()
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmActionScreen)
        assert [c.name for c in dialog.checks] == [CHECK_NAME, "ok"]
        await pilot.press("escape")  # not confirmed: the target is free again
        await wait_for(pilot, lambda: not app.busy, what="busy cleared")
        third = SlowAction("a")
        third.preflight_may_end.set()
        app.start_action(lambda: third)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="again")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.busy, what="busy cleared again")


async def test_the_refusal_of_a_busy_target_names_the_holder_and_since_when(tmp_path):
    """As the lock refusal does ("held by … since HH:MM:SS"): the action that has the
    target in this sfops, and since when."""
    app = make_app(tmp_path)
    first, second = SlowAction("a"), SlowAction("a")
    async with app.run_test(size=(80, 24)) as pilot:
        app.start_action(lambda: first)
        await wait_for(pilot, lambda: first.preflight_started.is_set(), what="preflight")
        app.start_action(lambda: second)
        await wait_for(pilot, lambda: any("busy" in n.message for n in app._notifications),
                       what="the refusal")
        (note,) = [n for n in app._notifications if "busy" in n.message]
        since = format_since(app.busy_since["test-a"])
        assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", since), since
        assert note.message.startswith(f"busy: held by test.slow a in this sfops since {since} "
                                       "(test.slow a)"), note.message
        assert note.severity == "warning" and not second.preflight_started.is_set()
        first.preflight_may_end.set()
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen), what="dialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.busy and not app.busy_since, what="cleared")


async def test_two_targets_run_at_once_and_quit_waits_for_both(tmp_path):
    app = make_app(tmp_path)
    a, b = SlowAction("a"), SlowAction("b")
    a.preflight_may_end.set()
    b.preflight_may_end.set()
    async with app.run_test(size=(80, 24)) as pilot:
        app.start_action(lambda: a)
        await confirm(pilot, app)
        await wait_for(pilot, lambda: a.running.is_set(), what="a runs")
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen), what="progress")
        app.start_action(lambda: b)
        await confirm(pilot, app)
        await wait_for(pilot, lambda: b.running.is_set(), what="b runs beside a")
        assert app.running == [a, b] and set(app.busy) == {"test-a", "test-b"}

        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitGuardScreen), what="guard")
        await pilot.press("tab", "enter")  # "Quit when done"
        await wait_for(pilot, lambda: app.quit_when_done, what="quit when done")
        a.may_end.set()  # the first to finish must not end the app under the other
        await wait_for(pilot, lambda: app.running == [b], what="a finished")
        await pilot.pause()
        assert app.is_running and not b.executed
        b.may_end.set()
        await wait_for(pilot, lambda: not app.is_running, timeout=10, what="app exits")
    assert a.executed and b.executed
    outcomes = [r["outcome"] for r in AuditLog(tmp_path / "audit.jsonl").read()]
    assert outcomes == ["succeeded", "succeeded"]


async def test_sigterm_with_actions_running_waits_for_all(tmp_path):
    app = make_app(tmp_path)
    a, b = SlowAction("a"), SlowAction("b")
    a.preflight_may_end.set()
    b.preflight_may_end.set()
    async with app.run_test(size=(80, 24)) as pilot:
        for action in (a, b):
            app.start_action(lambda action=action: action)
            await confirm(pilot, app)
            await wait_for(pilot, lambda action=action: action.running.is_set(), what="runs")
        app.on_terminate()
        b.may_end.set()
        await wait_for(pilot, lambda: app.running == [a], what="b finished")
        await pilot.pause()
        assert app.is_running
        a.may_end.set()
        await wait_for(pilot, lambda: not app.is_running, timeout=10, what="app exits")
    assert a.executed and b.executed
