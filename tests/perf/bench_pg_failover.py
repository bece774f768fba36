"""Failover time on the lab: `sfops pg failover` from confirmation to "the new primary accepts
writes", beside `pg_promote` alone (the physical floor). Prints numbers; asserts nothing.

    .venv/bin/python tests/perf/bench_pg_failover.py --lab-dir /tmp/lab-pg --runs 5

Each run kills the current primary (SIGKILL), fails over to the other member and rejoins the
killed one, so runs alternate direction and need no switch back. ``sfops`` is driven
in-process (the CLI's Python start-up is not part of a failover). The preflight's repeated
"primary unreachable" probes are part of the sfops figure: they are the price of not
promoting on one lost packet.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from backends.actions import ActionRunner, Step  # noqa: E402
from backends.audit import AuditLog  # noqa: E402
from backends.config import load  # noqa: E402
from backends.postgres.actions import Failover, Rejoin  # noqa: E402
from backends.postgres.cluster import PgCluster  # noqa: E402
from deploy.lab import ops  # noqa: E402
from deploy.lab.core import Lab  # noqa: E402


def roles(lab: Lab) -> tuple[str, str]:
    """(primary, standby) by asking each member."""
    found: dict[str, bool] = {}
    for name in ("pg-1", "pg-2"):
        info = {**ops.component(name).superuser_conninfo(lab)}  # type: ignore[attr-defined]
        with psycopg.connect(**info) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            found[name] = bool(row and row[0])
    primary = next(n for n, standby in found.items() if not standby)
    standby = next(n for n, standby in found.items() if standby)
    return primary, standby


async def rejoin(runner: ActionRunner, cluster: PgCluster, member: str) -> None:
    result = await runner.run(Rejoin(cluster, member))
    # A killed member restarted with standby.signal may already follow the new primary.
    if not result.ok and "nothing to do" not in (result.error or ""):
        raise SystemExit(f"rejoin failed: {result.error}")


async def sfops_failover(config_path: Path, primary: str, standby: str) -> float:
    config = load(config_path)
    cluster = PgCluster(config)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    try:
        await cluster.service.poll(use_breaker=False)  # what a running TUI already knows
        ops.stop(LAB, primary, kill=True)
        accepted: list[float] = []
        started = time.monotonic()

        def on_step(step: Step) -> None:
            if "accepts writes" in step.message and not accepted:
                accepted.append(time.monotonic() - started)

        result = await runner.run(Failover(cluster, standby), on_step=on_step)
        if not result.ok:
            raise SystemExit(f"failover failed: {result.error}")
        ops.start(LAB, primary)
        await rejoin(runner, cluster, primary)
        return accepted[0]
    finally:
        await cluster.close()


async def promote_alone(config_path: Path, primary: str, standby: str) -> float:
    """Kill the primary, pg_promote the standby by hand, first committed write; then fence
    (standby.signal) and rejoin with sfops so the next run starts from a healthy pair."""
    info = {**ops.component(standby).superuser_conninfo(LAB)}  # type: ignore[attr-defined]
    killed = ops.component(primary).pid(LAB)
    with psycopg.connect(**info, autocommit=True) as conn:
        ops.stop(LAB, primary, kill=True)
        started = time.monotonic()
        conn.execute("SELECT pg_promote(true, 60)")
        conn.execute("SELECT pg_current_xact_id()")
        elapsed = time.monotonic() - started
    data_dir = ops.component(primary).data_dir(LAB)  # type: ignore[attr-defined]
    subprocess.run(["runuser", "-u", "postgres", "--", "touch",
                    str(data_dir / "standby.signal")], check=True)
    # A killed postmaster stays a zombie until init reaps it, and postgres refuses to start
    # while the pid in postmaster.pid answers kill(0).
    deadline = time.monotonic() + 10
    while killed and Path(f"/proc/{killed}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    ops.start(LAB, primary)
    config = load(config_path)
    cluster = PgCluster(config)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    try:
        await rejoin(runner, cluster, primary)
    finally:
        await cluster.close()
    return elapsed


def summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return (f"{label:<28} n={len(values)}  median {statistics.median(values):.3f} s  "
            f"p95 {p95:.3f} s  min {ordered[0]:.3f} s  max {ordered[-1]:.3f} s")


LAB: Any = None


def main() -> None:
    global LAB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    LAB = Lab.open(args.lab_dir, progress=lambda message: None)
    config_path = LAB.config_path
    sfops_times: list[float] = []
    promote_times: list[float] = []
    for run in range(args.runs):
        primary, standby = roles(LAB)
        sfops_times.append(asyncio.run(sfops_failover(config_path, primary, standby)))
        primary, standby = roles(LAB)
        promote_times.append(asyncio.run(promote_alone(config_path, primary, standby)))
        print(f"run {run + 1}: sfops {sfops_times[-1]:.3f} s, pg_promote alone "
              f"{promote_times[-1]:.3f} s", flush=True)
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} "
          f"python {platform.python_version()}")
    print(summary("sfops pg failover", sfops_times))
    print(summary("pg_promote + first write", promote_times))


if __name__ == "__main__":
    main()
