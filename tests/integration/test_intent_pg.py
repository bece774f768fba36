"""The intent record against the lab's PostgreSQL pair (issue #14): `sfops pg switchover
--yes` SIGKILLed in the middle leaves a started record without an outcome; `sfops audit`
shows it interrupted with what to check, the next action command warns about it, and after
the recovery it names the cluster has exactly one writable primary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backends.config import load
from backends.postgres.actions import cluster_lock
from backends.postgres.cluster import PgCluster
from deploy.lab.core import LabError
from tests.conftest import REPO
from tests.integration import test_pg as pg_tests
from tests.integration.test_pg import action, sql, status, streams_from, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_lab(lab: Any) -> Iterator[Any]:
    """As test_pg's: pg-1 primary, pg-2 streaming, before and after the module."""
    try:
        lab.ensure("pg")
    except LabError:
        pg_tests._start_members(lab)
    pg_tests.reset_pg(lab)
    yield lab
    pg_tests.reset_pg(lab)


@pytest.fixture
def fresh(pg_lab: Any) -> Any:
    pg_tests.reset_pg(pg_lab)
    return pg_lab


# The progress line after which sfops is killed: the first step (nothing changed yet), the
# second (the old primary's fast shutdown is about to start, or under way), the third (the
# old primary is stopped and fenced, the target not promoted yet: no primary at all).
KILL_AFTER = {"checkpoint": "CHECKPOINT (shortens the shutdown)",
              "shutdown": "fast shutdown (sessions end",
              "stopped": "stopped cleanly, shutdown checkpoint at"}


def kill_mid_switchover(lab: Any, after: str) -> list[str]:
    """Start `sfops pg switchover --to pg-2 --yes`, SIGKILL it as soon as the progress line
    ``after`` is printed; returns the stderr lines seen."""
    argv = [sys.executable, "-m", "tui.cli", "--config", str(lab.config_path),
            "pg", "switchover", "--to", "pg-2", "--yes"]
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, child.kill)  # never hang the suite on a stuck child
    watchdog.start()
    seen: list[str] = []
    try:
        assert child.stderr is not None
        for line in child.stderr:
            seen.append(line.rstrip())
            if after in line:
                child.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail(f"sfops ended before {after!r}: {seen}")
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
        if child.stderr is not None:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL, seen
    return seen


def pg_commands(lab: Any) -> list[str]:
    """pg_ctl / pg_rewind processes working on this lab's data directories."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        text = " ".join(argv)
        if str(lab.dir) in text and any(Path(a).name in ("pg_ctl", "pg_rewind")
                                        for a in argv):
            found.append(text)
    return found


def writable(lab: Any, name: str) -> bool:
    try:
        sql(lab, name, "INSERT INTO events(payload, served_by) VALUES ('{}', 'intent-test')")
    except psycopg.Error:
        return False
    return True


def recover_as_documented(lab: Any) -> list[str]:
    """What the interrupted switchover's "what to check" says: one primary → rejoin the
    other unless it streams from it; none → failover to the target, then rejoin the old."""
    done: list[str] = []
    data = status(lab)
    primaries = [m["name"] for m in data["members"] if m["role"] == "primary"]
    if not primaries:
        code, out, err = action(lab, "failover", "--to", "pg-2")
        assert code == 0, (out, err)
        done.append("failover pg-2")
        data, primaries = status(lab), ["pg-2"]
    assert len(primaries) == 1, data
    (primary,) = primaries
    other = "pg-2" if primary == "pg-1" else "pg-1"
    if not streams_from(data, other, primary) or data["fenced"]:
        code, out, err = action(lab, "rejoin", other)
        assert code == 0, (out, err)
        done.append(f"rejoin {other}")
    wait_for(lambda: streams_from(status(lab), other, primary), 60,
             f"{other} streaming from {primary}")
    return done


@pytest.mark.parametrize("after", sorted(KILL_AFTER))
def test_sigkill_mid_switchover_reads_interrupted_and_recovers_to_one_primary(
        fresh: Any, after: str) -> None:
    seen = kill_mid_switchover(fresh, KILL_AFTER[after])
    # What sfops had started goes on without it (a local pg_ctl is its own session): let
    # it end before judging the cluster.
    wait_for(lambda: not pg_commands(fresh), 120, "no pg_ctl/pg_rewind left running")

    listing = fresh.sfops("audit", "-n", "5")
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if "pg.switchover" in line]
    assert rows and "interrupted" in rows[-1], listing.stdout
    entries = [json.loads(line) for line in
               fresh.sfops("audit", "--json", "-n", "5").stdout.splitlines()]
    entry = entries[-1]
    assert (entry["action"], entry["target"], entry["outcome"]) == (
        "pg.switchover", "pg-2", "interrupted"), entries
    assert entry["event"] == "started" and isinstance(entry["pid"], int)
    # The preflight it ran is in the intent record, and the lock it held: the cluster's key
    # and this sfops as the holder.
    assert "one reachable primary" in [c["name"] for c in entry["preflight"]], entry
    lock = entry["lock"]
    key = cluster_lock(PgCluster(load(fresh.config_path)))
    assert lock["keys"] == [{"name": key.name, "title": key.title}], lock
    assert lock["holder"] == f"{entry['user']}@{entry['host']}", lock
    assert lock["pid"] == entry["pid"] and lock["action"] == "pg.switchover pg-2", lock
    assert [c["name"] for c in lock["checks"]] == ["target lock"], lock
    assert lock["checks"][0]["status"] in ("pass", "warn"), lock  # warn: a lock not taken
    record_id = entry["id"]
    advice = [line for line in listing.stdout.splitlines() if record_id in line]
    assert advice and "exactly one primary" in advice[0] and "rejoin" in advice[0], \
        listing.stdout

    # The next action command warns before anything else (a dry run changes nothing).
    dry = fresh.sfops("pg", "rejoin", "pg-1", "--dry-run")
    warning = [line for line in dry.stderr.splitlines() if record_id in line]
    assert warning and warning[0].startswith("sfops: warning: did not finish: pg.switchover")

    done = recover_as_documented(fresh)
    names = ("pg-1", "pg-2")
    writers = [name for name in names if writable(fresh, name)]
    assert len(writers) == 1, (writers, status(fresh))
    print(f"killed after {after!r} ({seen[-1].strip()}); recovery: {done or ['nothing']}; "
          f"primary now {writers[0]}")

    # Dealt with: a later pg action succeeded, or the operator acknowledges it.
    if not done:
        ack = fresh.sfops("audit", "--ack", record_id)
        assert ack.returncode == 0, ack.stderr
    again = fresh.sfops("pg", "rejoin", "pg-1", "--dry-run")
    assert record_id not in again.stderr
