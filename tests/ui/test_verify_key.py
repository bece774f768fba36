"""The TUI's write-path verification: key ``v`` and the palette entry run the canary with
progress (no confirmation) and record it; read-only mode has neither. The API is an httpx
MockTransport (tests/unit/test_writepath.py); the lab's real path is in
tests/integration/test_writepath.py."""

from __future__ import annotations

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from tests.ui.fakes import FakeService
from tests.ui.helpers import wait_for
from tests.unit.test_writepath import FakeApi, FakeCheck, ok_post
from tui.app import SfopsApp
from tui.modals import ProgressScreen

TITLE = "Verify the write path"


def make_app(tmp_path, *, read_only: bool, consumer: bool = True) -> SfopsApp:
    config = SfopsConfig(
        path=tmp_path / "sfops.toml",
        sfops=SfopsSettings(refresh_interval=0.2, audit_log=tmp_path / "audit.jsonl",
                            state_dir=tmp_path / "state", read_only=read_only),
        executors={},
    )
    check = None if read_only else FakeCheck(FakeApi([ok_post], consumer=consumer))
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"), read_only=read_only,
                          write_path=check)
    return SfopsApp(config, [FakeService("nginx", "Load balancer")], runner=runner)


async def test_v_runs_the_canary_with_progress_and_records_it(tmp_path):
    app = make_app(tmp_path, read_only=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        assert TITLE in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen)
                       and app.screen.finished, what="the canary's outcome")
        shown = app.screen.lines.plain
        assert "nginx accepted" in shown and "consumer received" in shown
        await pilot.press("enter")
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    assert record["action"] == "verify" and record["outcome"] == "succeeded"
    assert record["write_path"]["ok"] is True


async def test_a_failing_hop_is_named_in_red(tmp_path):
    app = make_app(tmp_path, read_only=False, consumer=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen)
                       and app.screen.finished, what="the canary's outcome")
        status = str(app.screen.query_one("#status").render())
        assert "failed" in status and "consumer received" in status
    assert AuditLog(tmp_path / "audit.jsonl").read()[-1]["outcome"] == "failed"


async def test_read_only_has_no_verify_key_or_entry(tmp_path):
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        assert TITLE not in [c.title for c in app.get_system_commands(app.screen)]
        assert app.check_action("verify_write_path", ()) is False
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, ProgressScreen)
    assert not (tmp_path / "audit.jsonl").exists(), "nothing ran"


async def test_an_action_whose_canary_fails_reads_done_but_users_cannot_write(tmp_path):
    from tests.unit.test_writepath import Change

    app = make_app(tmp_path, read_only=False, consumer=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        app.start_action(lambda: Change("x"), confirm=False)
        await wait_for(pilot, lambda: isinstance(app.screen, ProgressScreen)
                       and app.screen.finished, what="the action's outcome")
        status = str(app.screen.query_one("#status").render())
        assert status.startswith("done, but users cannot write: consumer received")
        assert "write path:" in app.screen.lines.plain
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    assert record["outcome"] == "succeeded" and record["write_path"]["failed_hop"] == "consumer"
