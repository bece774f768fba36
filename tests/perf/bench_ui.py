"""UI responsiveness while a backend hangs: key-press-to-screen latency (until the new screen
is active, before it is painted) and the worst
event-loop delay, with every backend healthy and with nginx SIGSTOPped (a hung backend).

    python -m tests.perf.bench_ui --lab-dir .lab [--seconds 10]

Prints numbers; asserts nothing (the test suite checks only that the UI keeps answering).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.services import build_services
from deploy.lab import registry
from deploy.lab.core import Lab
from tui.app import SfopsApp


async def measure(app: SfopsApp, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    app.loop_lag_max = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        # Post the key as the terminal driver would; Pilot.press also waits for the screen
        # to settle, which would be measured too.
        app.simulate_key("question_mark")
        while type(app.screen).__name__ != "HelpScreen":
            await asyncio.sleep(0.002)
        latencies.append(time.monotonic() - started)
        app.simulate_key("escape")
        while type(app.screen).__name__ != "OverviewScreen":
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)
    return latencies, app.loop_lag_max


def report(label: str, latencies: list[float], lag: float) -> None:
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(f"{label:<28} key->screen median {statistics.median(ordered) * 1000:6.1f} ms  "
          f"p95 {p95 * 1000:6.1f} ms  n={len(ordered):3d}  worst loop delay {lag * 1000:6.1f} ms")


async def main(lab_dir: Path, seconds: float) -> None:
    lab = Lab.open(lab_dir)
    config = load(lab.config_path)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    app = SfopsApp(config, build_services(config), runner=runner)
    nginx_pid = registry.by_name("nginx").pid(lab)
    async with app.run_test(size=(80, 24)):
        while len(app.snapshots) < len(app.services):
            await asyncio.sleep(0.1)
        report("all backends healthy", *await measure(app, seconds))
        if nginx_pid is None:
            print("nginx is not running in this lab: skipping the hung-backend run")
            return
        os.killpg(nginx_pid, signal.SIGSTOP)
        try:
            report("nginx hung (SIGSTOP)", *await measure(app, seconds))
        finally:
            os.killpg(nginx_pid, signal.SIGCONT)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lab-dir", type=Path, default=Path(".lab"))
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    asyncio.run(main(options.lab_dir, options.seconds))
