"""Screen snapshots (pytest-textual-snapshot) at 80x24 and 160x48, with fixed fake data so the
picture is deterministic. Update with `pytest tests/ui/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import SfopsConfig, SfopsSettings
from tests.ui.fakes import INJECTION, FakeService
from tui.app import SfopsApp


def make_app(tmp: Path) -> SfopsApp:
    config = SfopsConfig(
        path=tmp / "sfops.toml",
        sfops=SfopsSettings(refresh_interval=3600, audit_log=tmp / "audit.jsonl",
                            state_dir=tmp / "state"),
        executors={},
    )
    services = [
        FakeService("nginx", "Load balancer"),
        FakeService("postgres", "PostgreSQL", message=INJECTION),
        FakeService("kafka", "Kafka"),
        FakeService("kubernetes", "Kubernetes"),
    ]
    return SfopsApp(config, services, runner=ActionRunner(AuditLog(tmp / "audit.jsonl")))


async def _settle(pilot) -> None:
    app = pilot.app
    while len(app.snapshots) < 4:
        await pilot.pause(0.05)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_overview_snapshot(snap_compare, tmp_path, size):
    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=_settle)
