"""One action per target, against the lab's real servers (issue #14): two failovers started
together, two nginx drains with only two members up, the TUI and the CLI on one target, and
a Lease left by a killed sfops. Nothing is faked; no timing is asserted (figures are printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.locks import manager_for
from backends.services import build_services
from tests.integration.test_pg import reset_pg, sql, status
from tests.ui.helpers import wait_for as ui_wait_for
from tui.app import SfopsApp
from tui.modals import ConfirmActionScreen
from tui.screens.nginx import NginxScreen

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def start(config: Path, *args: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """`sfops ARGS` in the background (the real CLI, its own process)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--config", str(config), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, text=True, cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
    )


def finish(process: subprocess.Popen[str], timeout: float = 240.0) -> tuple[int, Any, str]:
    out, err = process.communicate(timeout=timeout)
    try:
        data: Any = json.loads(out)
    except ValueError:
        data = out
    return process.returncode, data, err


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not true after {timeout:.0f} s (last: {last!r})")


def lock_check(result: dict[str, Any]) -> dict[str, str]:
    return next(c for c in result["preflight"] if c["name"] == "target lock")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_pair(lab: Any) -> Any:
    lab.ensure("pg")
    reset_pg(lab)
    yield lab
    reset_pg(lab)


def test_two_failovers_started_together_exactly_one_wins(pg_pair: Any) -> None:
    """The lab's cluster has two members, so both name pg-2 (the only standby): without the
    lock both pass "primary unreachable" and both promote and fence."""
    pg_pair.stop("pg-1", kill=True)
    runs = [start(pg_pair.config_path, "pg", "failover", "--to", "pg-2", "--yes", "--json")
            for _ in range(2)]
    results = [finish(run) for run in runs]
    outcomes = sorted(data["outcome"] for _, data, _ in results)
    assert outcomes == ["refused", "succeeded"], results
    refused = next(data for _, data, _ in results if data["outcome"] == "refused")
    assert "held by " in refused["error"] and " since " in refused["error"], refused
    print(f"refused: {refused['error']}")
    winner = next(data for _, data, _ in results if data["outcome"] == "succeeded")
    assert lock_check(winner)["status"] in ("pass", "warn")
    # Exactly one writable primary: pg-2 (pg-1 is killed and fenced).
    data = status(pg_pair)
    assert data["primary"] == "pg-2"
    assert [m["name"] for m in data["members"] if m["role"] == "primary"] == ["pg-2"]
    assert sql(pg_pair, "pg-2", "SELECT pg_is_in_recovery()")[0][0] is False
    records = [json.loads(line) for line in
               Path(load(pg_pair.config_path).sfops.audit_log).read_text().splitlines()[-2:]]
    assert sorted(r["outcome"] for r in records) == ["refused", "succeeded"]


# --------------------------------------------------------------------------- nginx


@pytest.fixture
def web(lab: Any) -> Any:
    lab.ensure("pg", "api", "nginx")
    yield lab
    config = lab.config()
    for name in down_members(config):
        result = lab.sfops("nginx", "undrain", name, "--yes", "--force")
        assert result.returncode == 0, result.stderr
    assert down_members(config) == []


def down_members(config: Any) -> list[str]:
    from backends.nginx.upstream import decode, parse_upstream

    text = decode(Path(config.nginx.upstream_file).read_bytes())
    upstream = parse_upstream(text, config.nginx.upstream_name)
    return [name for name, m in config.nginx.members.items() if upstream.find(m.address).down]


def test_two_drains_with_two_members_up_leave_one_up(web: Any) -> None:
    config = web.config()
    done = web.sfops("nginx", "drain", "api-3", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    runs = [start(web.config_path, "nginx", "drain", name, "--yes", "--json")
            for name in ("api-1", "api-2")]
    results = [finish(run) for run in runs]
    down = down_members(config)
    assert len(down) == 2 and "api-3" in down, (down, results)  # one of api-1/api-2 is up
    outcomes = sorted(data["outcome"] for _, data, _ in results)
    assert outcomes == ["refused", "succeeded"], results
    refused = next(data for _, data, _ in results if data["outcome"] == "refused")
    print(f"refused: {refused['error']}")
    assert "held by " in refused["error"], refused


async def test_tui_and_cli_on_the_same_target_one_is_refused(web: Any) -> None:
    import asyncio

    config = load(web.config_path)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets(),
                          locks=manager_for(config))
    app = SfopsApp(config, build_services(config), runner=runner, config_path=web.config_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        await ui_wait_for(pilot, lambda: isinstance(app.screen, NginxScreen), what="nginx")
        table = app.screen.query_one("#table", DataTable)
        await ui_wait_for(pilot, lambda: table.row_count == 3, timeout=20, what="members")
        await pilot.press("down", "down")
        assert app.screen.selected_key() == "api-3"
        await pilot.press("d")
        assert app.busy, "the target is busy from the key press, before the preflight"
        await ui_wait_for(pilot, lambda: isinstance(app.screen, ConfirmActionScreen),
                          timeout=30, what="confirmation with preflight")
        dialog = app.screen
        assert isinstance(dialog, ConfirmActionScreen)
        assert dialog.checks[0].name == "target lock" and not dialog.blocked, dialog.checks

        # The TUI holds the upstream file's lock while its operator reads the preflight.
        cli = await asyncio.to_thread(web.sfops, "nginx", "drain", "api-3", "--yes", "--json")
        assert cli.returncode == 3, (cli.stdout, cli.stderr)
        refused = json.loads(cli.stdout)
        assert refused["outcome"] == "refused" and "held by " in refused["error"], refused
        assert "nginx.drain api-3" in refused["error"]
        print(f"CLI refused: {refused['error']}")

        await pilot.press("escape")  # cancel: nothing changed, the lock is let go
        await ui_wait_for(pilot, lambda: not app.busy, timeout=15, what="busy state cleared")
    assert down_members(config) == []
    cli = web.sfops("nginx", "drain", "api-3", "--yes", "--json")
    assert cli.returncode == 0, (cli.stdout, cli.stderr)


# --------------------------------------------------------------------------- Kubernetes Lease


@pytest.fixture
def k8s_config(lab: Any, tmp_path: Path) -> Any:
    from tests.integration.test_k8s import _write_config, restore

    lab.ensure("k8s")
    restore(lab)
    yield _write_config(lab, tmp_path / "sfops.toml")
    restore(lab)


def lease(lab: Any, name: str) -> dict[str, Any] | None:
    from deploy.lab import k8s

    try:
        text = k8s.kubectl(lab.lab, "-n", k8s.NAMESPACE, "get", "lease", name, "-o", "json")
    except Exception:
        return None
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.k8s
def test_lease_left_by_a_killed_sfops_expires_and_the_next_action_proceeds(
        lab: Any, k8s_config: Path) -> None:
    node = "kwok-node-0"
    name = "sfops-k8s-node-kwok-node-0"
    # Waits at "Proceed?" holding the Lease (stdin stays open, nobody answers).
    waiting = start(k8s_config, "k8s", "cordon", node, stdin=subprocess.PIPE)
    try:
        held = wait_until(
            lambda: (d := lease(lab, name)) and d["spec"].get("holderIdentity")
            and d["metadata"]["annotations"].get("sfops.streamforge.io/pid") == str(waiting.pid)
            and d, 60, "the waiting sfops holds the Lease")
        assert held["spec"]["leaseDurationSeconds"] == 15
        waiting.kill()  # SIGKILL: no release, no audit record
        waiting.communicate(timeout=10)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    killed_at = time.monotonic()
    code, data, err = finish(start(k8s_config, "k8s", "cordon", node, "--yes", "--json"))
    assert code == 3, (data, err)
    assert "held by " in data["error"] and f"pid {waiting.pid}" in data["error"], data
    print(f"while the Lease is valid: {data['error']}")

    def proceeds() -> Any:
        code, data, _ = finish(start(k8s_config, "k8s", "cordon", node, "--yes", "--json"))
        return data if code == 0 else None

    data = wait_until(proceeds, 90, "cordon proceeds once the dead holder's Lease expired",
                      interval=1.0)
    print(f"the next action proceeded {time.monotonic() - killed_at:.1f} s after the kill "
          f"(leaseDurationSeconds 15 + 2 s allowed skew)")
    assert data["outcome"] == "succeeded" and lock_check(data)["status"] == "pass"
    released = lease(lab, name)
    assert released is not None and not released["spec"].get("holderIdentity")
    done = finish(start(k8s_config, "k8s", "uncordon", node, "--yes", "--json"))
    assert done[0] == 0, done
