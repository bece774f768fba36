"""`sfops lab down` returns only when every process of the lab has exited: the three Kafka
JVMs, the consumer, both postmasters and all their workers.

A lab of its own (own directory, ports at the test port base + 50) so the session lab keeps
running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab import ops
from deploy.lab.core import Lab
from tests.conftest import TEST_PORT_BASE

pytestmark = [pytest.mark.integration, pytest.mark.kafka]
REPO = Path(__file__).resolve().parents[2]
PORT_BASE = TEST_PORT_BASE + 50  # the lab uses offsets 0..48: no overlap with the session lab


def _proc_status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines()
                                      if ":" in line)}


def alive(pid: int) -> bool:
    """In the process table at all, as ``kill -0`` and ``ps`` see it: a zombie (exited, not yet
    reaped by init, which is the lab processes' parent once `lab up` has returned) counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def family(pids: set[int]) -> set[int]:
    """``pids``, every descendant, and every member of the process groups they lead."""
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        groups[int(entry)] = int(fields[2])
    found = set(pids) | {pid for pid, group in groups.items() if group in pids}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


@pytest.fixture
def own_lab() -> Iterator[Lab]:
    # Not pytest's tmp_path: the lab's other users (postgres) must traverse the directory.
    path = Path(tempfile.mkdtemp(prefix="sfops-lab-down-"))
    path.chmod(0o755)
    lab = Lab.open(path / "lab", port_base=PORT_BASE)
    lab.progress = lambda message: None
    try:
        yield lab
    finally:
        ops.down(lab)  # a failed test must not leave a lab behind
        shutil.rmtree(path, ignore_errors=True)


def sfops_lab(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "lab", "--dir", str(lab.dir), *args],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )


def test_lab_down_returns_when_every_process_has_exited(own_lab: Lab) -> None:
    # Through the CLI, as an operator does: once `lab up` has returned, the lab's processes
    # are init's children, so `down` can only wait for them, never reap them itself.
    up = sfops_lab(own_lab, "--port-base", str(PORT_BASE), "up", "--only", "pg,kafka")
    assert up.returncode == 0, up.stdout + up.stderr
    rows = {row["name"]: row for row in ops.status(own_lab)}
    main_pids = {rows[name]["pid"] for name in
                 ("pg-1", "pg-2", "kafka-1", "kafka-2", "kafka-3", "kafka-consumer")}
    assert None not in main_pids
    pids = family(main_pids)  # type: ignore[arg-type]
    assert len(pids) > len(main_pids)  # the postmasters' workers are there too
    assert all(alive(pid) for pid in pids)

    done = sfops_lab(own_lab, "down", "--json")

    still = {pid: (_proc_status(pid) or {}).get("State") for pid in sorted(pids) if alive(pid)}
    assert still == {}, f"alive right after `lab down` returned: {still}\n{done.stderr}"
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["down"] is True
    assert report["left"] == []
    assert {r["name"] for r in report["stopped"]} == {
        "pg-1", "pg-2", "kafka-1", "kafka-2", "kafka-3", "kafka-consumer"}
    # The Kafka nodes stop together while the controller quorum stands, so normally none needs
    # a kill. On a loaded machine the last one can still be left without a quorum and be
    # killed; what must never happen is a kill without a reason, or one not reported.
    summary = next(line for line in done.stderr.splitlines() if line.startswith("lab down:"))
    for stopped in report["stopped"]:
        assert stopped["had_to_kill"] == (stopped["name"] in report["killed"])
        if stopped["had_to_kill"]:
            assert stopped["name"].startswith("kafka-") and stopped["note"], done.stderr
            assert stopped["name"] in summary.partition("had to SIGKILL:")[2], summary
    assert all(r["state"] == "stopped" for r in report["components"])
    # The progress said what it was doing.
    assert "kafka-1: stopping" in done.stderr and "lab down: 6 component(s) stopped" in done.stderr
