"""Environments in the TUI, with fake backends: the badge and header colour, switching by key
(E, the picker) and by the palette — the old environment's polls stop and its services close,
the new one's are polled — per-environment read-only (no mutating palette entries or keys),
and no switch while an action is in progress."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Header

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, parse
from tests.ui.fakes import FakeService
from tests.ui.helpers import screen_text, wait_for
from tui.app import SfopsApp, help_text
from tui.environments import CallableOpener, EnvironmentPicker, Session
from tui.screens.overview import OverviewScreen


def config_text(tmp: Path) -> str:
    return f"""
default_env = "prod"
[sfops]
refresh_interval = 0.2
audit_log = "{tmp}/audit.jsonl"
state_dir = "{tmp}/state"

[nginx]
config_file = "/etc/nginx/nginx.conf"
upstream_name = "api"
upstream_file = "/etc/nginx/conf.d/upstream.conf"

[environments.prod]
[environments.prod.nginx.members.api-1]
address = "10.0.0.11:8000"

[environments.staging]
read_only = true
[environments.staging.nginx.members.api-9]
address = "10.1.0.19:8000"

[environments.dev]
colour = "blue"
[environments.dev.nginx.members.api-5]
address = "10.2.0.15:8000"
"""


class Lab:
    """The opener the TUI gets, with fake services per environment (kept to look at)."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "sfops.toml"
        self.text = config_text(tmp)
        self.services: dict[str, list[FakeService]] = {}

    def load(self, env: str) -> SfopsConfig:
        return parse(self.text, self.path, env)

    def session(self, config: SfopsConfig) -> Session:
        services = [FakeService("nginx", f"Load balancer {config.env}")]
        self.services.setdefault(config.env, []).extend(services)
        runner = ActionRunner(AuditLog(config.sfops.audit_log, env=config.env),
                              read_only=config.sfops.read_only)
        return Session(config, list(services), runner)

    def app(self, env: str | None = None) -> SfopsApp:
        first = self.session(parse(self.text, self.path, env))
        return SfopsApp(first.config, first.services, runner=first.runner,
                        config_path=self.path, opener=CallableOpener(self.load, self.session))


def header_background(app: SfopsApp) -> tuple[int, int, int]:
    colour = app.screen.query_one(Header).styles.background
    return colour.r, colour.g, colour.b


def titles(app: SfopsApp) -> list[str]:
    return [c.title for c in app.get_system_commands(app.screen)]


async def test_the_environment_is_in_the_header_in_its_colour(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    app = lab.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: lab.services["prod"][0].polls >= 1, what="a poll")
        assert app.config.env == "prod" and app.has_class("-env-red")
        red, green, blue = header_background(app)
        assert red > 100 and green < 50 and blue < 50, (red, green, blue)
        assert "sfops · prod" in screen_text(pilot)
        title = app.format_title(app.title, app.sub_title)
        assert any("red" in str(span.style) for span in title.spans), title.spans
        await pilot.press("q")


async def test_a_file_without_environments_shows_no_badge(tmp_path: Path) -> None:
    text = f'[sfops]\naudit_log = "{tmp_path}/a.jsonl"\nstate_dir = "{tmp_path}/s"\n'
    config = parse(text, tmp_path / "sfops.toml")
    app = SfopsApp(config, [FakeService("nginx", "Load balancer")],
                   runner=ActionRunner(AuditLog(tmp_path / "a.jsonl")))
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.title == "sfops" and app.environment_badge() is None
        assert not any(c.startswith("-env-") for c in app.classes)
        assert not any(t.startswith("Switch environment") for t in titles(app))
        await pilot.press("E")  # says why, switches nothing
        await wait_for(pilot, lambda: len(app._notifications) == 1, what="a notification")
        assert not isinstance(app.screen, EnvironmentPicker)
        await pilot.press("q")


async def test_switch_by_key_stops_the_old_polls_and_polls_the_new(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    app = lab.app()
    async with app.run_test(size=(80, 24)) as pilot:
        (prod,) = lab.services["prod"]
        await wait_for(pilot, lambda: prod.polls >= 2, what="prod polled")
        assert any(t == "Drain: api-1" for t in titles(app))

        await pilot.press("E")
        await wait_for(pilot, lambda: isinstance(app.screen, EnvironmentPicker), what="picker")
        picker = app.screen
        assert "staging" in screen_text(pilot) and "(current)" in screen_text(pilot)
        await pilot.press("down", "enter")  # prod, staging, dev: the next one
        await wait_for(pilot, lambda: app.config.env == "staging" and "staging" in lab.services
                       and lab.services["staging"][0].polls >= 2, what="staging polled")
        assert not isinstance(app.screen, EnvironmentPicker) and picker is not app.screen
        (staging,) = lab.services["staging"]
        assert app.services == [staging]
        # The old environment: its service closed, its poll stopped for good.
        assert prod.closed and prod.in_flight == 0
        polls = prod.polls
        await wait_for(pilot, lambda: staging.polls >= polls + 4 or staging.polls >= 6,
                       what="more staging polls")
        assert prod.polls == polls
        # The panel and header are the new environment's.
        assert "Load balancer staging" in screen_text(pilot)
        assert app.has_class("-env-yellow") and not app.has_class("-env-red")
        assert "sfops · staging" in screen_text(pilot)
        # staging is read-only: no action entry, no action key, the runner refuses.
        assert app.read_only and app.runner.read_only
        assert not any(t.startswith(("Drain", "Undrain")) for t in titles(app))
        assert "read-only" in help_text(app).plain
        assert "Switch environment: prod" in titles(app)
        assert "Switch environment: staging" not in titles(app)
        await pilot.press("q")


async def test_switch_by_palette_and_back(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    app = lab.app("staging")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: lab.services["staging"][0].polls >= 1, what="polled")
        assert app.read_only
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette",
                       what="palette")
        await pilot.press(*"Switch environment: dev")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.config.env == "dev"
                       and lab.services.get("dev", [FakeService("x", "x")])[0].polls >= 1,
                       what="dev polled")
        assert lab.services["staging"][0].closed
        assert app.has_class("-env-blue")  # its configured colour
        assert not app.read_only and "Drain: api-5" in titles(app)
        # And back: a new session each time, the earlier one stays closed.
        app.switch_environment("staging")
        await wait_for(pilot, lambda: app.config.env == "staging"
                       and len(lab.services["staging"]) == 2, what="staging again")
        assert lab.services["dev"][0].closed and app.read_only
        await pilot.press("q")


async def test_no_switch_while_an_action_is_in_progress(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    app = lab.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: lab.services["prod"][0].polls >= 1, what="polled")
        action = _Described()
        app.busy["nginx:api-1"] = action  # type: ignore[assignment]
        app.running.append(action)  # type: ignore[arg-type]
        app.switch_environment("dev")
        await wait_for(pilot, lambda: any("not switching to dev" in n.message
                                          for n in app._notifications), what="refusal")
        assert app.config.env == "prod" and "dev" not in lab.services
        assert not lab.services["prod"][0].closed
        app.busy.clear()
        app.running.clear()
        await pilot.press("q")


async def test_a_broken_environment_changes_nothing(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.text += "[environments.broken]\n[environments.broken.nginx]\nno_such_key = 1\n"
    app = lab.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: lab.services["prod"][0].polls >= 1, what="polled")
        app.switch_environment("broken")
        await wait_for(pilot, lambda: any("no_such_key" in n.message
                                          for n in app._notifications), what="the error")
        assert app.config.env == "prod" and app.switching is None
        polls = lab.services["prod"][0].polls
        await wait_for(pilot, lambda: lab.services["prod"][0].polls > polls, what="still polled")
        await pilot.press("q")


async def test_a_late_read_during_the_switch_does_not_end_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recent-actions read (a thread worker, every refresh) may land while the overview is
    composed again for the new environment: its tables gone, then back without columns. A
    fresh `make test` saw NoMatches('#recent') end the app there. Both moments are forced here."""
    lab = Lab(tmp_path)
    app = lab.app()
    landed: list[str] = []
    original = OverviewScreen.recompose

    async def recompose_with_late_reads(screen: OverviewScreen) -> None:
        await screen.query_children("*").remove()  # what recompose does first
        app._show_recent([], (), app.audit)  # a read of the new environment's log lands
        app.render_alerts()
        landed.append("emptied")
        await original(screen)
        app._show_recent([], (), app.audit)  # composed, no columns yet
        app.render_alerts()
        landed.append("composed")

    monkeypatch.setattr(OverviewScreen, "recompose", recompose_with_late_reads)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: lab.services["prod"][0].polls >= 1, what="polled")
        app.switch_environment("dev")
        await wait_for(pilot, lambda: app.config.env == "dev"
                       and lab.services.get("dev", [FakeService("x", "x")])[0].polls >= 1,
                       what="dev polled")
        assert landed == ["emptied", "composed"]
        overview = app.get_screen_stack_overview()
        assert overview is not None and overview.filled
        assert len(overview.query_one("#recent", DataTable).columns) == 4
        # The screen repaints after the recompose: wait for it rather than read it mid-way.
        await wait_for(pilot, lambda: "Recent actions" in screen_text(pilot),
                       what="the overview painted again")
        await pilot.press("q")


class _Described:
    def describe(self) -> str:
        return "nginx.drain api-1"
