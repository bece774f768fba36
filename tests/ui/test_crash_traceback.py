"""A crash of the TUI prints its traceback without locals and redacted by known secret values
(:meth:`tui.app.SfopsApp._fatal_error`): Textual's own version dumps every local variable of
every frame, a revealed password or a passfile's text included."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from backends.secrets import REDACTED, remember
from tests.ui.fakes import FakeService
from tests.ui.helpers import wait_for
from tui import app as tui_app
from tui.app import SfopsApp

SECRET = "SFOPS-CRASH-SECRET-51c2"


class CrashingApp(SfopsApp):
    CSS_PATH = str(Path(tui_app.__file__).with_name(SfopsApp.CSS_PATH))  # not beside this file

    def crash(self) -> None:
        passfile_text = f"*:*:*:sfops:{SECRET}"  # noqa: F841 - what a locals dump would show
        raise RuntimeError(f"the server answered {SECRET} to us")


class TextualCrashingApp(CrashingApp):
    """The same app with Textual's own crash report: shows that the check below can fail."""

    _fatal_error = App._fatal_error


def make_app(tmp_path: Path, cls: type[CrashingApp]) -> CrashingApp:
    config = SfopsConfig(
        path=tmp_path / "sfops.toml",
        sfops=SfopsSettings(refresh_interval=0.2, audit_log=tmp_path / "audit.jsonl",
                            state_dir=tmp_path / "state"),
        executors={},
    )
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"))
    return cls(config, [FakeService("nginx", "Load balancer")], runner=runner)


async def crash_report(tmp_path: Path, cls: type[CrashingApp]) -> str:
    """What the app prints on the terminal after the crash (its error console)."""
    remember(SECRET)
    app = make_app(tmp_path, cls)
    printed = io.StringIO()
    app.error_console = Console(file=printed, width=200, markup=False, highlight=False)
    with pytest.raises(RuntimeError, match="the server answered"):
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.services[0].polls >= 1, what="a first poll")
            app.call_later(app.crash)
            await wait_for(pilot, lambda: app._exception is not None, what="the crash")
    assert app.return_code == 1
    return printed.getvalue()


async def test_a_crash_prints_its_traceback_redacted_and_without_locals(
        tmp_path: Path) -> None:
    report = await crash_report(tmp_path, CrashingApp)
    assert "Traceback (most recent call last)" in report, report
    assert f"RuntimeError: the server answered {REDACTED} to us" in report, report
    assert SECRET not in report, report
    assert "in crash" in report  # the frame that raised
    assert "locals" not in report  # no Rich locals panel
    assert "╭" not in report and "│" not in report  # plain text, no Rich traceback frame


async def test_textuals_own_crash_report_would_show_the_secret(tmp_path: Path) -> None:
    report = await crash_report(tmp_path, TextualCrashingApp)
    # The locals panel, the local variable's value in it: what the override prevents.
    assert "locals" in report and f"passfile_text = '*:*:*:sfops:{SECRET}'" in report, report
