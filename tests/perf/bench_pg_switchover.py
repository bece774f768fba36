"""Switchover under load on the lab: the API service takes writes through nginx at a steady rate
while `sfops pg switchover --to pg-2 --yes` runs, then back to pg-1. Prints numbers; asserts
nothing.

    .venv/bin/python -m tests.perf.bench_pg_switchover --lab-dir /tmp/lab-pg --rate 50

Per switchover: the command's wall time (the CLI's Python start-up included) and the action's
own duration, acknowledged writes lost (ids the API acknowledged with 201 that are absent on
the new primary; must be 0), failed requests (non-201 or no answer) and the write outage
window (the longest gap between two successful writes that overlaps the switchover). The
writer offers a steady rate from several threads, so one request stuck on a stopping primary
does not hold back the others. Needs the lab's pg, api and nginx groups (started if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from deploy.lab import nginx as lab_nginx
from deploy.lab.core import Lab
from tests.conftest import LabHandle
from tests.integration.test_pg import reset_pg, sql, status

OUTAGE_TARGET_S = 1.0  # issue 18: today's switchover write outage, to keep


@dataclass
class Request:
    sent: float
    done: float
    ok: bool
    event_id: int | None = None
    error: str = ""


@dataclass
class SteadyWriter:
    """POSTs /events through nginx at ``rate`` per second on a fixed schedule."""

    url: str
    rate: float
    threads: int = 8
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = 0
        self._start = 0.0
        self._workers = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.threads)]

    def _next_slot(self) -> float:
        with self._lock:
            self._tick += 1
            return self._start + self._tick / self.rate

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                slot = self._next_slot()
                delay = slot - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                sent = time.monotonic()
                try:
                    response = client.post("/events", json={"bench": "switchover"})
                    ok = response.status_code == 201
                    record = Request(sent, time.monotonic(), ok,
                                     int(response.json()["id"]) if ok else None,
                                     "" if ok else f"HTTP {response.status_code}")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    record = Request(sent, time.monotonic(), False,
                                     error=type(exc).__name__)
                with self._lock:
                    self.requests.append(record)

    def start(self) -> None:
        self._start = time.monotonic()
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)


def acknowledged(requests: list[Request]) -> list[int]:
    return [r.event_id for r in requests if r.ok and r.event_id is not None]


def missing_on(handle: LabHandle, member: str, ids: list[int]) -> set[int]:
    rows = sql(handle, member, "SELECT id FROM events WHERE id = ANY(%s)", (ids,))
    return set(ids) - {row[0] for row in rows}


def outage(requests: list[Request], start: float, end: float) -> float:
    """The longest gap between consecutive successful writes that overlaps [start, end]."""
    done = sorted(r.done for r in requests if r.ok)
    worst = 0.0
    for before, after in pairwise(done):
        if after >= start and before <= end:
            worst = max(worst, after - before)
    return worst


def switchover(handle: LabHandle, writer: SteadyWriter, to: str) -> dict[str, Any]:
    before = len(writer.snapshot())
    started = time.monotonic()
    done = handle.sfops("pg", "switchover", "--to", to, "--yes", "--json", timeout=300)
    ended = time.monotonic()
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = {"outcome": f"no JSON (exit {done.returncode}): {done.stderr.strip()[-300:]}"}
    time.sleep(3)  # writes after the switchover, through the new primary
    requests = writer.snapshot()
    ids = acknowledged(requests)
    during = [r for r in requests[before:] if r.sent <= ended + 3]
    failures = [r for r in during if not r.ok]
    return {
        "to": to,
        "outcome": result.get("outcome"),
        "error": result.get("error"),
        "wall_s": ended - started,
        "action_s": result.get("duration_s"),
        "acknowledged_total": len(ids),
        "lost": len(missing_on(handle, to, ids)),
        "requests": len(during),
        "failed": len(failures),
        "failure_kinds": dict(Counter(r.error for r in failures)),
        "outage_s": outage(requests, started, ended),
    }


def machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip()
                     for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.node()} {platform.machine()} {os.cpu_count()} cores {model}; "
            f"load average {load}; python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds of writes before the first switchover")
    args = parser.parse_args()
    handle = LabHandle(Lab.open(args.lab_dir, progress=lambda message: None), owned=False)
    handle.ensure("pg", "api", "nginx")
    reset_pg(handle)
    url = f"http://127.0.0.1:{handle.port(lab_nginx.PORT_OFFSET)}"
    writer = SteadyWriter(url, args.rate)
    print(f"machine: {machine()}", flush=True)
    print(f"writer: {args.rate:.0f} POST /events per second through nginx", flush=True)
    writer.start()
    results = []
    try:
        time.sleep(args.settle)
        for to in ("pg-2", "pg-1"):
            results.append(switchover(handle, writer, to))
            last = results[-1]
            print(f"switchover to {to}: {last['outcome']}  wall {last['wall_s']:.2f} s  "
                  f"action {last['action_s'] or 0:.2f} s  outage {last['outage_s']:.2f} s  "
                  f"failed {last['failed']}/{last['requests']} {last['failure_kinds'] or ''}  "
                  f"acknowledged lost {last['lost']} of {last['acknowledged_total']}"
                  + (f"  error: {last['error']}" if last["error"] else ""), flush=True)
            time.sleep(2)
    finally:
        writer.stop()
    requests = writer.snapshot()
    ids = acknowledged(requests)
    primary = status(handle).get("primary")
    lost = len(missing_on(handle, primary, ids)) if primary else None
    elapsed = max(r.done for r in requests) - min(r.sent for r in requests)
    print(f"whole run: {len(requests)} requests in {elapsed:.1f} s "
          f"({len(requests) / elapsed:.1f}/s), {len(ids)} acknowledged, "
          f"{len(requests) - len(ids)} failed; acknowledged lost on the final primary "
          f"({primary}): {lost}")
    # No peer in the lab: the longest write outage against today's figure (issue 18 keeps
    # it, with 0 acknowledged writes lost — printed above).
    worst = max(r["outage_s"] for r in results)
    print(f"RATIO pg_switchover_outage_vs_{OUTAGE_TARGET_S:g}s {worst / OUTAGE_TARGET_S:.2f}")


if __name__ == "__main__":
    main()
