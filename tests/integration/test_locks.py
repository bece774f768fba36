"""One action per target, against the lab's real servers (issue #14): two failovers started
together, two nginx drains with only two members up, the TUI and the CLI on one target, and
a Lease left by a killed sfops. Nothing is faked; no timing is asserted (figures are printed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w
from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.locks import lock_file_beside, manager_for
from backends.services import build_services
from deploy.lab import postgres as lab_postgres
from tests.integration.test_pg import _rebuild, reset_pg, sql
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


class StderrReader:
    """What a background sfops writes on stderr (its preflight, its confirmation prompt, which
    ends without a newline), read as it comes by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._chunks: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._stream.read(1):
            self._chunks.append(chunk)

    def text(self) -> str:
        return "".join(self._chunks)

    def join(self) -> None:
        self._thread.join(timeout=30)


def lock_check(result: dict[str, Any]) -> dict[str, str]:
    return next(c for c in result["preflight"] if c["name"] == "target lock")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_pair(lab: Any) -> Any:
    lab.ensure("pg")
    reset_pg(lab)
    yield lab
    reset_pg(lab)


@contextmanager
def third_member(lab: Any) -> Iterator[Path]:
    """pg-3, a second streaming standby of pg-1 seeded for this test (the lab's stack has one),
    and a configuration naming all three members. Removed again afterwards."""
    member = lab_postgres.ReplicaMember("pg-3", lab_postgres.PG1)
    sql(lab, "pg-1", "SELECT pg_create_physical_replication_slot('pg_3') WHERE NOT EXISTS "
        "(SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pg_3')")
    config = tomllib.loads(lab.config_path.read_text())
    config["postgres"]["members"]["pg-3"] = lab_postgres.member_config(lab.lab, member)
    path = lab.dir / "sfops-three-members.toml"
    path.write_text(tomli_w.dumps(config))
    try:
        member.start(lab.lab)
        member.wait_ready(lab.lab)
        yield path
    finally:
        member.stop(lab.lab, kill=True)
        shutil.rmtree(lab.lab.path("pg-3"), ignore_errors=True)
        path.unlink(missing_ok=True)


def caught_up(lab: Any) -> bool:
    """pg-2 and pg-3 both stream from pg-1 and have flushed everything it wrote."""
    rows = sql(lab, "pg-1", "SELECT application_name FROM pg_stat_replication WHERE state = "
               "'streaming' AND flush_lsn = pg_current_wal_lsn()")
    return {r[0] for r in rows} >= {"pg-2", "pg-3"}


def writable(lab: Any, config: Path, name: str) -> bool:
    member = load(config).postgres.members[name]
    try:
        with psycopg.connect(host=str(Path(member.data_dir).parent / "run"), port=member.port,
                             user="postgres", dbname="postgres", connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] is False


def test_two_failovers_with_different_candidates_exactly_one_wins(pg_pair: Any) -> None:
    """pg-1 (primary) killed; `sfops pg failover --to pg-2` and `--to pg-3` started together.
    Without the lock both pass "primary unreachable" and both promote: two primaries."""
    with third_member(pg_pair) as config:
        wait_until(lambda: caught_up(pg_pair), 60, "pg-2 and pg-3 streaming, caught up")
        pg_pair.stop("pg-1", kill=True)
        runs = [start(config, "pg", "failover", "--to", name, "--yes", "--json")
                for name in ("pg-2", "pg-3")]
        results = [finish(run) for run in runs]
        outcomes = sorted(data["outcome"] for _, data, _ in results)
        assert outcomes == ["refused", "succeeded"], results
        refused = next(data for _, data, _ in results if data["outcome"] == "refused")
        assert "held by " in refused["error"] and " since " in refused["error"], refused
        print(f"refused: {refused['error']}")
        winner = next(data for _, data, _ in results if data["outcome"] == "succeeded")
        assert lock_check(winner)["status"] in ("pass", "warn")
        new_primary = winner["target"]
        # Exactly one writable primary among the three: the winner's candidate.
        assert [n for n in ("pg-1", "pg-2", "pg-3") if writable(pg_pair, config, n)] == [
            new_primary]
        records = [json.loads(line) for line in
                   Path(load(config).sfops.audit_log).read_text().splitlines()[-3:]]
        assert sorted(r["outcome"] for r in records) == ["refused", "started", "succeeded"]
    if new_primary == "pg-3":  # gone with the test's member: a fresh pair, as the lab makes it
        _rebuild(pg_pair)
    reset_pg(pg_pair)
    for name in ("pg-1", "pg-2"):  # no slot left behind for the removed member
        if not sql(pg_pair, name, "SELECT pg_is_in_recovery()")[0][0]:
            sql(pg_pair, name, "SELECT pg_drop_replication_slot('pg_3') FROM "
                "pg_replication_slots WHERE slot_name = 'pg_3'")


def test_a_failover_while_a_switchover_holds_the_cluster_is_refused_naming_it(
        pg_pair: Any) -> None:
    """Failover, switchover and rejoin of one cluster exclude each other. A switchover waits
    at its confirmation (stdin open, nobody answers) holding the cluster's lock; pg-1 is
    killed meanwhile, so a failover would pass its preflight: it is refused naming the
    switchover, and proceeds once the switchover is cancelled. One writable primary at the
    end."""
    config = pg_pair.config_path
    data_dir = Path(str(load(config).postgres.members["pg-1"].data_dir))
    lock_file = Path(lock_file_beside(data_dir, f"pg-{data_dir.name}"))
    waiting = start(config, "pg", "switchover", "--to", "pg-2", stdin=subprocess.PIPE)
    said = StderrReader(waiting)
    try:
        # Its holder line is in the lock file beside pg-1's data directory, and it is at its
        # confirmation (its preflight passed): the lock is taken before the preflight, and a
        # switchover whose preflight refused lets it go at once (a fresh run saw that: the
        # failover below then found the cluster free).
        wait_until(lambda: lock_file.exists()
                   and f'"pid": {waiting.pid}' in lock_file.read_text(errors="replace"),
                   60, "the waiting switchover holds the cluster's lock")
        wait_until(lambda: "to confirm" in said.text() or waiting.poll() is not None, 120,
                   "the switchover at its confirmation")
        assert waiting.poll() is None, f"the switchover ended (rc {waiting.returncode}): " \
            f"{said.text()}"
        pg_pair.stop("pg-1", kill=True)
        code, data, err = finish(start(config, "pg", "failover", "--to", "pg-2", "--yes",
                                       "--json"))
        assert code == 3 and data["outcome"] == "refused", (data, err)
        error = data["error"]
        assert "held by " in error and " since " in error, error
        assert "pg.switchover pg-2" in error and f"pid {waiting.pid}" in error, error
        assert lock_check(data)["status"] == "fail"
        print(f"failover refused: {error}")
        assert not writable(pg_pair, config, "pg-2")  # nothing was promoted
    finally:
        if waiting.poll() is None:
            assert waiting.stdin is not None
            waiting.stdin.write("no\n")  # not the target's name: cancelled
            waiting.stdin.close()
            waiting.wait(timeout=60)
        said.join()
    assert waiting.returncode == 3  # not confirmed: nothing was changed, the lock let go

    code, data, err = finish(start(config, "pg", "failover", "--to", "pg-2", "--yes", "--json"))
    # The failover is what is tested here, not the write path after it: a lab whose config has
    # [verify] (nginx once started there) but whose nginx is down now exits 1 "done, but users
    # cannot write" (pg_pair starts only PostgreSQL).
    canary_failed = data.get("write_path") is not None and not data["write_path"]["ok"]
    assert data["outcome"] == "succeeded" and (code == 0 or (code == 1 and canary_failed)), \
        (data, err)
    assert [n for n in ("pg-1", "pg-2") if writable(pg_pair, config, n)] == ["pg-2"]


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


def hold_then_kill(lab: Any, config: Path, node: str, name: str,
                   elsewhere: bool = False) -> int:
    """An sfops holding ``node``'s Lease at "Proceed?" (stdin open, nobody answers), then
    SIGKILLed: no release, no audit record. ``elsewhere``: its Lease first says it ran on
    another machine (as a Lease taken from an operator's laptop would), so its death cannot
    be seen from here. Returns its pid."""
    from deploy.lab import k8s

    waiting = start(config, "k8s", "cordon", node, stdin=subprocess.PIPE)
    try:
        held = wait_until(
            lambda: (d := lease(lab, name)) and d["spec"].get("holderIdentity")
            and d["metadata"]["annotations"].get("sfops.streamforge.io/pid") == str(waiting.pid)
            and d, 60, "the waiting sfops holds the Lease")
        assert held["spec"]["leaseDurationSeconds"] == 15
        if elsewhere:
            process = json.loads(held["metadata"]["annotations"]["sfops.streamforge.io/process"])
            process["node"] = "operator-laptop"
            k8s.kubectl(lab.lab, "-n", k8s.NAMESPACE, "annotate", "--overwrite", "lease", name,
                        f"sfops.streamforge.io/process={json.dumps(process)}")
        waiting.kill()
        waiting.communicate(timeout=10)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    return waiting.pid


@pytest.mark.k8s
def test_lease_of_a_killed_sfops_on_this_machine_is_taken_at_once(
        lab: Any, k8s_config: Path) -> None:
    """Its holder ran here, in this boot, and is gone: provably dead, nothing to wait for."""
    node, name = "kwok-node-0", "sfops-k8s-node-kwok-node-0"
    hold_then_kill(lab, k8s_config, node, name)
    code, data, err = finish(start(k8s_config, "k8s", "cordon", node, "--yes", "--json"))
    assert code == 0, (data, err)
    assert data["outcome"] == "succeeded" and lock_check(data)["status"] == "pass"
    released = lease(lab, name)
    assert released is not None and not released["spec"].get("holderIdentity")


@pytest.mark.k8s
def test_lease_left_by_a_killed_sfops_elsewhere_expires_and_the_next_action_proceeds(
        lab: Any, k8s_config: Path) -> None:
    node, name = "kwok-node-0", "sfops-k8s-node-kwok-node-0"
    pid = hold_then_kill(lab, k8s_config, node, name, elsewhere=True)
    killed_at = time.monotonic()
    code, data, err = finish(start(k8s_config, "k8s", "cordon", node, "--yes", "--json"))
    assert code == 3, (data, err)
    assert "held by " in data["error"] and f"pid {pid}" in data["error"], data
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
