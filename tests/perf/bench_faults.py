"""Detection and recovery time for every cell of the fault matrix (tests/faults.py), as the
overview shows them. Prints numbers; asserts nothing.

    .venv/bin/python -m tests.perf.bench_faults --lab-dir .lab --runs 3

For each component and fault (clean stop, SIGKILL, SIGSTOP): the real TUI runs headless on
the lab's configuration at the product's refresh interval (2 s unless --refresh); the fault is
injected at a random point of the poll cycle; *detection* is from the moment the fault is in
place (the process has exited, or is stopped) to the overview's wrong-now list naming it (and
the panel reading UNREACHABLE where the whole backend is gone); *recovery* from the component
being back (started and ready, or SIGCONT) to its entry leaving the list. Each cell's bound
is two refreshes plus the backend's contact timeout. Median and max over --runs. No peer runs
in the lab, so the last line is ``RATIO faults_detect_vs_bound <x>``: the slowest detection of
any cell over its bound (issue 18; at most 1 means every fault was shown in time).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from pathlib import Path

from deploy.lab import ops
from deploy.lab.core import Lab
from tests.conftest import LabHandle
from tests.faults import FAULTS, GROUPS, TARGETS, CellResult, make_app, run_cell, settle
from tests.perf.bench_pg_switchover import machine


async def measure(handle: LabHandle, labels: list[str], faults: list[str], runs: int,
                  refresh: float) -> tuple[dict[tuple[str, str], list[CellResult]], float]:
    """Every cell's results, and the slowest detection over its bound."""
    results: dict[tuple[str, str], list[CellResult]] = {}
    worst = 0.0
    app = make_app(handle.config_path, refresh_interval=refresh)
    async with app.run_test(size=(80, 24)):
        await settle(app, handle)
        for t in [t for t in TARGETS if t.label in labels]:
            for fault in faults:
                for run in range(runs):
                    await asyncio.sleep(random.uniform(0, refresh))  # random poll phase
                    result = await run_cell(app, handle, t, fault, check_status=False)
                    results.setdefault((t.label, fault), []).append(result)
                    print(f"  {t.label:<22} {fault:<5} run {run + 1}: detected "
                          f"{result.detected.seconds:5.2f} s ({result.detected.polls} polls) "
                          f"recovered {result.recovered.seconds:5.2f} s "
                          f"({result.recovered.polls} polls)", flush=True)
        bounds = {s.name: 2 * refresh + s.contact_timeout for s in app.services}
    print()
    print(f"{'component':<22} {'fault':<5} {'detect med/max s':>17} {'recover med/max s':>18}"
          f" {'bound s':>8}  missed")
    for (label, fault), cells in results.items():
        t = next(t for t in TARGETS if t.label == label)
        det = [c.detected.seconds for c in cells]
        rec = [c.recovered.seconds for c in cells]
        missed = sum(not c.detected.seen for c in cells) + sum(not c.recovered.seen
                                                               for c in cells)
        print(f"{label:<22} {fault:<5} {statistics.median(det):8.2f} /{max(det):6.2f}"
              f" {statistics.median(rec):9.2f} /{max(rec):6.2f} {bounds[t.backend]:8.1f}"
              f"  {missed}")
        worst = max(worst, max(det) / bounds[t.backend])
    return results, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--refresh", type=float, default=2.0, help="refresh interval (s)")
    parser.add_argument("--targets", default=",".join(t.label for t in TARGETS),
                        help="comma-separated matrix rows (default all)")
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    lab = Lab.open(args.lab_dir)
    handle = LabHandle(lab, owned=False)
    print(f"machine: {machine()}")
    print(f"bringing up {', '.join(GROUPS)} in {args.lab_dir} ...", flush=True)
    ops.up(lab, list(GROUPS))
    labels = [label.strip() for label in args.targets.split(",") if label.strip()]
    _, worst = asyncio.run(measure(handle, labels, args.faults.split(","), args.runs,
                                   args.refresh))
    print(f"machine after: {machine()}")
    print(f"RATIO faults_detect_vs_bound {worst:.2f}")


if __name__ == "__main__":
    main()
