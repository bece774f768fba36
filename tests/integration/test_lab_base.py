"""The lab's first half (issue 2): PostgreSQL streaming, nginx over three workers, lab CLI."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from deploy.lab import ops
from deploy.lab.core import Lab, pid_alive
from tests.conftest import TEST_PORT_BASE

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# A separate small lab: its own ports, clear of the session lab's (offsets 0..48) and of other
# checkouts' test labs (each has its own SFOPS_TEST_PORT_BASE).
PORT_BASE = TEST_PORT_BASE + 50


def superuser(lab, member: str) -> psycopg.Connection:
    component = lab.component(member)
    return psycopg.connect(**component.superuser_conninfo(lab.lab), autocommit=True)


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx")


def test_replica_streams_and_sees_primary_writes(stack):
    with superuser(stack, "pg-1") as primary:
        rows = primary.execute(
            "SELECT application_name, state FROM pg_stat_replication"
        ).fetchall()
        assert ("pg-2", "streaming") in rows
        marker = f"lab-{time.time_ns()}"
        primary.execute("CREATE TABLE IF NOT EXISTS lab_probe (v text)")
        primary.execute("INSERT INTO lab_probe VALUES (%s)", (marker,))
    deadline = time.monotonic() + 10
    with superuser(stack, "pg-2") as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        while time.monotonic() < deadline:
            found = replica.execute(
                "SELECT count(*) FROM lab_probe WHERE v = %s", (marker,)
            ).fetchone()
            if found == (1,):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the row written on pg-1 never reached pg-2")


def nginx_url(lab) -> str:
    return f"http://127.0.0.1:{lab.port(0)}"


def test_nginx_spreads_requests_over_all_three_workers(stack):
    served = set()
    with httpx.Client(base_url=nginx_url(stack), timeout=5) as client:
        for _ in range(30):
            response = client.get("/health/live")
            assert response.status_code == 200
            served.add(response.headers["x-served-by"])
    assert served == {"api-1", "api-2", "api-3"}


def test_stopping_a_worker_fails_no_get(stack):
    failures: list[str] = []
    served: list[str] = []
    stop_at = time.monotonic() + 6

    def hammer() -> None:
        with httpx.Client(base_url=nginx_url(stack), timeout=5) as client:
            while time.monotonic() < stop_at:
                try:
                    response = client.get("/health/live")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(str(response.status_code))
                else:
                    served.append(response.headers["x-served-by"])

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(hammer) for _ in range(4)]
            time.sleep(1.5)
            stack.stop("api-2")
            for future in futures:
                future.result()
        assert failures == []
        assert len(served) > 100
        tail = served[-50:]
        assert "api-2" not in tail, "nginx kept sending requests to the stopped worker"
    finally:
        stack.start("api-2")


def test_lab_status_json_lists_components(stack):
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "lab", "--dir", str(stack.dir), "status", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    for name in ("pg-1", "pg-2", "api-1", "api-2", "api-3", "nginx"):
        assert rows[name]["state"] == "running", rows[name]
        assert rows[name]["pid"] > 0
        assert rows[name]["address"].startswith("127.0.0.1:")


def test_port_collision_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        lab = Lab.open(tmp_path / "lab", port_base=port - 20)  # sshd sits at base + 20
        lab.progress = lambda message: None
        with pytest.raises(Exception, match=rf"port {port} .* already in use"):
            ops.up(lab, ["sshd"])


@pytest.fixture
def open_tmp_dir():
    """A temp dir the lab's other users (postgres, sfops-lab) can traverse; pytest's own
    tmp_path lives under a 0700 directory."""
    path = Path(tempfile.mkdtemp(prefix="sfops-lab-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_lab_down_leaves_no_process(open_tmp_dir):
    """A separate small lab (own dir and ports) so the session lab keeps running."""
    lab = Lab.open(open_tmp_dir / "lab", port_base=PORT_BASE)
    lab.progress = lambda message: None
    ops.up(lab, ["pg", "nginx", "sshd"])
    pids = [row["pid"] for row in ops.status(lab) if row["state"] == "running"]
    assert len(pids) == 5  # pg-1, pg-2, nginx, sshd, sshd-jump
    ops.down(lab)
    assert [pid for pid in pids if pid_alive(pid)] == []
    # nothing left listening either
    for offset in (0, 10, 11, 20, 21):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", PORT_BASE + offset)) != 0
