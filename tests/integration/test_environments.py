"""The lab's two environments — `lab` (the default) and `lab-readonly` (the same stack,
read-only) — from the command line and in the TUI: `sfops --env lab-readonly status`, its
refusal to act, and switching between the two in the TUI by key and by palette, with the new
environment's backends polled and the old one's polls stopped."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from textual.widgets import DataTable

from backends.config import load
from deploy.lab.ops import LAB_ENV
from tests.ui.helpers import screen_text, wait_for
from tui import exitcodes
from tui.app import SfopsApp
from tui.commands.ui import session
from tui.environments import CallableOpener, EnvironmentPicker
from tui.screens.nginx import NginxScreen

pytestmark = pytest.mark.integration
READONLY = "lab-readonly"


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    return lab.ensure("pg", "api", "nginx")


def test_the_lab_has_two_environments_and_lab_is_the_default(stack: Any) -> None:
    config = load(stack.config_path)
    assert config.env == LAB_ENV and not config.sfops.read_only
    assert list(config.environments) == [LAB_ENV, READONLY]
    readonly = load(stack.config_path, env=READONLY)
    assert readonly.sfops.read_only and readonly.colour == "cyan"
    assert readonly.nginx.members.keys() == config.nginx.members.keys()  # the same stack


def test_status_of_each_environment(stack: Any) -> None:
    result = stack.sfops("--env", READONLY, "status")
    assert result.returncode in (exitcodes.OK, exitcodes.DEGRADED), result.stderr
    assert result.stdout.splitlines()[0] == f"environment: {READONLY} (read-only)"
    assert "Load balancer" in result.stdout
    document = json.loads(stack.sfops("status", "--json").stdout)
    assert document["env"] == LAB_ENV
    env_var = stack.sfops("status", "-o", "json", env={**os.environ, "SFOPS_ENV": READONLY})
    assert json.loads(env_var.stdout)["env"] == READONLY


def test_the_readonly_environment_refuses_to_act(stack: Any) -> None:
    result = stack.sfops("nginx", "drain", "api-3", "--yes", "--env", READONLY)
    assert result.returncode == exitcodes.READ_ONLY, result.stdout + result.stderr
    unknown = stack.sfops("--env", "nope", "status")
    assert unknown.returncode == exitcodes.USAGE
    assert f'unknown environment "nope" (configured: {LAB_ENV}, {READONLY})' in unknown.stderr


def make_app(stack: Any) -> SfopsApp:
    config = load(stack.config_path)

    def load_env(env: str) -> Any:
        return load(stack.config_path, env=env)

    def open_session(c: Any) -> Any:
        return session(c, read_only=False)

    first = open_session(config)
    return SfopsApp(first.config, first.services, runner=first.runner,
                    config_path=stack.config_path,
                    opener=CallableOpener(load_env, open_session))


def nginx_rows(app: SfopsApp) -> int:
    return app.screen.query_one("#table", DataTable).row_count


async def test_switching_between_the_lab_environments_in_the_tui(stack: Any) -> None:
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "nginx" in app.summaries, timeout=30, what="nginx polled")
        old_services, old_poller = list(app.services), app.poller
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen)
                       and "d" in app.screen.active_bindings, what="lab may act: d")

        await pilot.press("E")  # from a drill-down screen: the picker, then the overview
        await wait_for(pilot, lambda: isinstance(app.screen, EnvironmentPicker), what="picker")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.config.env == READONLY and "nginx" in app.summaries,
                       timeout=30, what="lab-readonly polled")
        assert app.read_only and app.has_class("-env-cyan")
        assert all(new is not old for new, old in zip(app.services, old_services, strict=True))
        assert app.poller is not old_poller
        assert not any(job.running for job in old_poller.jobs.values())
        assert f"sfops · {READONLY}" in screen_text(pilot)

        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen)
                       and nginx_rows(app) == 3, timeout=20, what="members of lab-readonly")
        keys = set(app.screen.active_bindings)
        assert "d" not in keys and "u" not in keys
        assert READONLY in screen_text(pilot)  # the badge on the drill-down screen
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(t.startswith(("Drain", "Undrain")) for t in titles)

        # Back by the palette.
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette",
                       what="palette")
        await pilot.press(*f"Switch environment: {LAB_ENV}")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.config.env == LAB_ENV and "nginx" in app.summaries,
                       timeout=30, what="lab polled again")
        assert not app.read_only
        await pilot.press("1")
        await wait_for(pilot, lambda: isinstance(app.screen, NginxScreen)
                       and "d" in app.screen.active_bindings, what="lab may act again")
        await pilot.press("escape", "q")
