"""The backend contract: a fifth backend registered at run time (its own package + one
registry call) gets its CLI commands, palette entries, help line and drill-down screen with no
change under tui/; the four real backends declare what the front ends need."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from backends import registry
from backends.actions import Action, CheckResult, Step
from backends.audit import AuditLog
from backends.contract import ActionContext, ActionSpec, Backend, Param, Row, Target
from backends.service import BackendSummary, Figure
from backends.snapshot import Health, Snapshot
from tests.ui.helpers import screen_text, wait_for
from tui import cli, exitcodes

POKED: list[tuple[str, dict[str, Any]]] = []


class WidgetService:
    name = "widgets"
    title = "Widget farm"
    breaker = None
    contact_timeout = 1.0

    def __init__(self) -> None:
        self.closed = False

    async def contact(self) -> None:
        return None

    async def poll(self) -> dict[str, str]:
        return {"w1": "spinning", "w2": "stopped \x1b]0;pwned\x07"}

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        value = snapshot.best or {}
        return BackendSummary(self.name, self.title, Health.OK,
                              figures=(Figure("widgets", str(len(value))),))

    async def close(self) -> None:
        self.closed = True


class Poke(Action):
    name = "widgets.poke"
    closed = 0

    def __init__(self, widget: str, force_level: int) -> None:
        super().__init__(widget, {"widget": widget, "level": force_level})
        self.level = force_level

    async def preflight(self) -> list[CheckResult]:
        return [CheckResult.passed("widget exists", self.target)]

    async def execute(self) -> AsyncIterator[Step]:
        POKED.append((self.target, dict(self.params)))
        yield Step("poking", 0.5)

    async def would_change(self) -> list[str]:
        return [f"{self.target}: level 0 -> {self.level}"]

    async def close(self) -> None:
        Poke.closed += 1


def build_poke(context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
    action: Action = context.runner.build(Poke, str(target), params["level"])
    return action


WIDGETS = Backend(
    name="widgets",
    title="Widget farm",
    command="widgets",
    help="the widget farm: status, poke",
    build_service=lambda config: WidgetService(),
    status_json=lambda value: dict(value),
    columns=("widget", "state"),
    rows=lambda value: [Row(k, (k, v), "ok" if v == "spinning" else "degraded")
                        for k, v in value.items()],
    actions=(ActionSpec("widgets.poke", "poke", "Poke", "poke WIDGET until it spins",
                        f"{__name__}:Poke", build_poke, key="k",
                        target=Target("widget", "WIDGET", "widget name",
                                      choices=lambda config, status: ["w1", "w2"]),
                        params=(Param("level", "how hard", type=int, default=1),)),),
)


@pytest.fixture
def widgets(tmp_path: Path):
    registry.register(WIDGETS)
    POKED.clear()
    Poke.closed = 0
    config = tmp_path / "sfops.toml"
    config.write_text(f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\n'
                      f'state_dir = "{tmp_path}/state"\n')
    yield config
    registry.unregister("widgets")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse errors and --help
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_cli_has_the_fifth_backends_commands(widgets):
    code, out, _ = run_cli("--help")
    assert code == 0 and "widgets" in out and "the widget farm" in out
    code, out, _ = run_cli("widgets", "poke", "--help")
    assert code == 0
    for flag in ("WIDGET", "--level", "--yes", "--json", "--force", "--dry-run"):
        assert flag in out


def test_cli_runs_the_action_once_and_audits_it(widgets, tmp_path):
    # Global options after the sub-command are accepted.
    code, out, err = run_cli("widgets", "poke", "w1", "--level", "3", "--yes", "--json",
                             "--config", str(widgets))
    assert code == exitcodes.OK, err
    assert POKED == [("w1", {"widget": "w1", "level": 3})]
    assert json.loads(out)["outcome"] == "succeeded"
    records = AuditLog(tmp_path / "audit.jsonl").read()
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("widgets.poke", "w1", "succeeded")]
    assert Poke.closed >= 1


def test_cli_dry_run_changes_nothing(widgets, tmp_path):
    code, out, _ = run_cli("--config", str(widgets), "widgets", "poke", "w2", "--level", "9",
                           "--dry-run", "--json")
    assert code == exitcodes.OK
    data = json.loads(out)
    assert data["dry_run"] and data["plan"] == ["w2: level 0 -> 9"]
    assert POKED == [] and not (tmp_path / "audit.jsonl").exists()


def test_cli_read_only_refuses_before_building(widgets):
    code, _, err = run_cli("--read-only", "widgets", "poke", "w1", "--yes",
                           "--config", str(widgets))
    assert code == exitcodes.READ_ONLY and "read-only" in err and POKED == []


@pytest.mark.parametrize("output", ["json", "yaml", "table"])
def test_cli_status_in_every_format(widgets, output):
    code, out, _ = run_cli("widgets", "status", "-o", output, "--config", str(widgets))
    assert code == exitcodes.OK
    if output == "table":
        assert "Widget farm: OK" in out and "spinning" in out
        assert "\x1b" not in out and "\x07" not in out  # outside text never drives the terminal
        return
    data = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert data["backend"] == "widgets" and data["health"] == "ok" and data["reachable"]
    assert data["status"]["w1"] == "spinning"


def test_completion_script_names_the_fifth_backend(widgets):
    code, out, _ = run_cli("completion", "bash")
    assert code == 0 and "widgets" in out and "--dry-run" in out


async def test_tui_palette_help_and_screen_come_from_the_contract(widgets, tmp_path):
    from tests.ui.test_app_shell import make_app
    from tui.app import help_text
    from tui.modals import ConfirmActionScreen
    from tui.screens.generic import GenericScreen

    service = WidgetService()
    app = make_app(tmp_path, [service])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: "widgets" in app.snapshots, what="first poll")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Open Widget farm" in titles
        assert {"Poke: w1", "Poke: w2"} <= set(titles)
        assert "widgets: poke the selected row" in help_text(app).plain
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, GenericScreen), what="screen")
        await wait_for(pilot, lambda: "spinning" in screen_text(pilot), what="rows")
        assert "pwned" in screen_text(pilot) and "\x1b" not in screen_text(pilot)
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen),
                       what="confirmation")


def test_the_four_backends_are_declared():
    names = [b.name for b in registry.backends()]
    assert names[:1] == ["nginx"]
    for backend in registry.backends():
        keys = [s.key for s in backend.actions if s.key]
        assert len(keys) == len(set(keys)), f"{backend.name}: a key is used twice"
        for spec in backend.actions:
            cls = spec.action_class()
            assert cls.name == spec.name, f"{spec.name}: the class says {cls.name}"
            assert cls.destructive == spec.destructive, f"{spec.name}: destructive differs"
            assert cls.mutating == spec.mutating, f"{spec.name}: mutating differs"


def test_a_closed_pipe_ends_quietly():
    """`sfops … | head`: the reader goes away; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as after `head -c 0`
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "completion", "bash"],
                            stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == exitcodes.BROKEN_PIPE
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_global_options_before_or_after_the_command():
    assert cli.hoist_global_options(["pg", "status", "--config", "x.toml", "--read-only"]) == [
        "--config", "x.toml", "--read-only", "pg", "status"]
    assert cli.hoist_global_options(["k8s", "status", "--config=x", "-n", "ns"]) == [
        "--config=x", "k8s", "status", "-n", "ns"]
    assert cli.hoist_global_options(["lab", "--", "--config"]) == ["lab", "--", "--config"]
