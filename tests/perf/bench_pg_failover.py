"""Failover time on the lab: `sfops pg failover` from confirmation to "the new primary accepts
writes", with the old primary killed (SIGKILL) and with it hung (every process SIGSTOPped, as
`sfops lab hang`), beside `pg_promote` alone (the physical floor). Prints numbers; asserts
nothing.

    .venv/bin/python tests/perf/bench_pg_failover.py --lab-dir /tmp/lab-pg --runs 5

Each run kills the current primary, fails over to the other member and rejoins the killed one;
then the same by hand with `pg_promote`; then hangs the current primary and fails over again
(sfops fences it — standby.signal, SIGKILL — before promoting) and rejoins it. So runs
alternate direction and need no switch back. ``sfops`` is driven in-process (the CLI's Python
start-up is not part of a failover) and as the CLI drives it: the preflight, then the run of
the preflight the operator confirmed (the re-check, the fence, the promotion). The figure is
that run, up to the "accepts writes" step. The preflight is timed and printed on its own: it
holds the repeated "primary unreachable" probes, the price of not promoting on one lost
packet, paid before the operator confirms (for a hung primary each probe waits out
``connect_timeout``). The load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
TARGET_S = 2.3  # issue 18: today's failover figure, to keep
HUNG_TARGET_S = 8.0  # issue 14: hung primary, confirmation to "accepts writes" ≤ 8 s
sys.path.insert(0, str(REPO))

from backends.actions import ActionRunner, Step  # noqa: E402
from backends.audit import AuditLog  # noqa: E402
from backends.config import load  # noqa: E402
from backends.postgres.actions import Failover, Rejoin  # noqa: E402
from backends.postgres.cluster import PgCluster  # noqa: E402
from deploy.lab import faults, ops  # noqa: E402
from deploy.lab.core import Lab, LabError  # noqa: E402


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


async def sfops_failover(config_path: Path, primary: str, standby: str,
                         fault: str) -> tuple[float, float]:
    """Fail over from ``primary`` killed (``fault`` "kill") or hung ("hang"); (preflight
    seconds, confirmation to "accepts writes" seconds)."""
    config = load(config_path)
    cluster = PgCluster(config)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    try:
        await cluster.service.poll(use_breaker=False)  # what a running TUI already knows
        if fault == "kill":
            ops.stop(LAB, primary, kill=True)
        else:
            faults.hang(LAB, primary)
        action = Failover(cluster, standby)
        started = time.monotonic()
        checks = await action.preflight()  # shown to the operator, who confirms
        preflight = time.monotonic() - started
        accepted: list[float] = []
        started = time.monotonic()

        def on_step(step: Step) -> None:
            if "accepts writes" in step.message and not accepted:
                accepted.append(time.monotonic() - started)

        result = await runner.run(action, preflight=checks, on_step=on_step)
        if not result.ok or not accepted:
            raise SystemExit(f"failover ({fault}) failed: {result.error}")
        if fault == "hang":
            # The fence SIGKILLed it: nothing is left to resume (the lab says so).
            with contextlib.suppress(LabError):
                faults.resume(LAB, primary)
        ops.start(LAB, primary)
        await rejoin(runner, cluster, primary)
        return preflight, accepted[0]
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
    return (f"{label:<36} n={len(values)}  median {statistics.median(values):.3f} s  "
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
    print(f"load average at start: {load_average()}", flush=True)
    killed: list[float] = []
    hung: list[float] = []
    killed_preflight: list[float] = []
    hung_preflight: list[float] = []
    promote_times: list[float] = []
    for run in range(args.runs):
        primary, standby = roles(LAB)
        preflight, figure = asyncio.run(sfops_failover(config_path, primary, standby, "kill"))
        killed.append(figure)
        killed_preflight.append(preflight)
        primary, standby = roles(LAB)
        promote_times.append(asyncio.run(promote_alone(config_path, primary, standby)))
        primary, standby = roles(LAB)
        preflight, figure = asyncio.run(sfops_failover(config_path, primary, standby, "hang"))
        hung.append(figure)
        hung_preflight.append(preflight)
        print(f"run {run + 1}: sfops killed primary {killed[-1]:.3f} s (preflight "
              f"{killed_preflight[-1]:.2f} s), hung primary {hung[-1]:.3f} s (preflight "
              f"{hung_preflight[-1]:.2f} s), pg_promote alone {promote_times[-1]:.3f} s; "
              f"load {load_average()}", flush=True)
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} cores, python {platform.python_version()}; load average at "
          f"end: {load_average()}")
    print("confirmation to \"new primary accepts writes\":")
    print(summary("sfops pg failover, killed primary", killed))
    print(summary("sfops pg failover, hung primary", hung))
    print(summary("pg_promote + first write", promote_times))
    print("preflight (before the confirmation):")
    print(summary("preflight, killed primary", killed_preflight))
    print(summary("preflight, hung primary", hung_preflight))
    # No peer in the lab (Patroni and friends take 15-60 s): the slower median against today's
    # figure, which issue 18 keeps.
    worst = max(statistics.median(killed), statistics.median(hung))
    print(f"RATIO pg_failover_vs_{TARGET_S:g}s {worst / TARGET_S:.2f}")
    # Issue 14's own target for a hung (SIGSTOPped) old primary, at default settings.
    print(f"RATIO pg_hung_failover_vs_{HUNG_TARGET_S:g}s "
          f"{statistics.median(hung) / HUNG_TARGET_S:.2f}")


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
