"""Benchmark: sfops's Kubernetes slice vs a kubectl poller, on the lab's scale mode.

    sfops lab --dir /tmp/lab-k8s-scale --port-base 29000 up --only k8s \\
        --k8s-nodes 500 --k8s-pods 5000
    .venv/bin/python tests/perf/bench_k8s.py --lab /tmp/lab-k8s-scale [--steady 60]

Prints (same cluster, same run):
  * start → complete pod table: sfops's initial sync (LIST in pages + watches) until every
    pod is in the snapshot and rendered into rows; and the headless TUI until its drill-down
    table holds every pod row;
  * memory: RSS growth of this process for the synced store and snapshot;
  * key-press → screen latency while the table updates (cursor moves in the headless TUI);
  * API requests (and bytes) per minute at steady state: sfops's watches vs a periodic
    ``kubectl get pods -A -o json`` at the same refresh interval;
  * a full LIST by ``kubectl get pods -A -o json`` vs sfops's initial sync of pods alone.
Not a pytest module (file name does not start with test_): it is run by hand or by CI perf jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from backends.kubernetes.config import KubernetesConfig  # noqa: E402
from backends.kubernetes.informer import PODS, Informer  # noqa: E402
from backends.kubernetes.objects import pod_from_json  # noqa: E402
from backends.kubernetes.service import KubernetesService, make_client  # noqa: E402
from tui.render.kubernetes import cluster_rows  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def section_from_lab(lab_dir: Path) -> tuple[KubernetesConfig, Path]:
    import tomllib

    data = tomllib.loads((lab_dir / "sfops.toml").read_text())
    raw = data["kubernetes"]
    section = KubernetesConfig(kubeconfig=Path(raw["kubeconfig"]), context=raw.get("context"),
                               namespaces=tuple(raw.get("namespaces") or ("default",)))
    return section, Path(raw["kubeconfig"])


def kubectl_bin() -> str:
    from deploy.lab.k8s_pki import bin_dir

    return str(bin_dir() / "kubectl")


def kubectl_list(kubeconfig: Path) -> tuple[float, int, int]:
    started = time.monotonic()
    out = subprocess.run([kubectl_bin(), f"--kubeconfig={kubeconfig}", "get", "pods", "-A",
                          "-o", "json"], capture_output=True, check=True).stdout
    elapsed = time.monotonic() - started
    return elapsed, len(out), len(json.loads(out)["items"])


async def sync_pods_only(section: KubernetesConfig) -> tuple[float, int]:
    client = make_client(section)
    informer = Informer(client, PODS, None, pod_from_json)
    started = time.monotonic()
    await informer.relist()
    elapsed = time.monotonic() - started
    await client.close()
    return elapsed, len(informer.items)


async def full_table(section: KubernetesConfig, want_pods: int, steady: float,
                     refresh: float) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_mb()
    service = KubernetesService(section, make_client(section))
    started = time.monotonic()
    service.start()
    while True:
        await service.wait_synced(60)
        status = service.current()
        if status.synced and status.pod_count >= want_pods:
            break
        await asyncio.sleep(0.05)
    synced_at = time.monotonic() - started
    rows = cluster_rows(status, datetime.now(UTC))
    table_at = time.monotonic() - started
    gc.collect()
    rss_after = rss_mb()
    requests_at_sync = service.client.stats.total
    bytes_at_sync = service.client.stats.bytes_received

    # Steady state: poll() every refresh interval as the TUI would; count API requests.
    t0 = time.monotonic()
    r0, b0 = service.client.stats.total, service.client.stats.bytes_received
    poll_times = []
    while time.monotonic() - t0 < steady:
        p0 = time.monotonic()
        await service.poll()
        poll_times.append(time.monotonic() - p0)
        await asyncio.sleep(refresh)
    minutes = (time.monotonic() - t0) / 60
    result = {
        "pods": status.pod_count, "deployments": len(status.deployments),
        "nodes": len(status.nodes), "rows": len(rows),
        "sync_s": synced_at, "table_s": table_at,
        "rss_mb": rss_after - rss_before,
        "initial_requests": requests_at_sync, "initial_mb": bytes_at_sync / 1e6,
        "steady_requests_per_min": (service.client.stats.total - r0) / minutes,
        "steady_mb_per_min": (service.client.stats.bytes_received - b0) / 1e6 / minutes,
        "poll_ms_median": statistics.median(poll_times) * 1000 if poll_times else 0.0,
        "poll_ms_max": max(poll_times) * 1000 if poll_times else 0.0,
        "informers": len(service.informers),
    }
    await service.close()
    return result


def kubectl_poller(kubeconfig: Path, seconds: float, refresh: float) -> dict[str, float]:
    """`kubectl get pods -A -o json` every ``refresh`` seconds (after the previous finished)."""
    started = time.monotonic()
    count, total_bytes, times = 0, 0, []
    while time.monotonic() - started < seconds:
        elapsed, size, _ = kubectl_list(kubeconfig)
        count += 1
        total_bytes += size
        times.append(elapsed)
        time.sleep(max(0.0, refresh - elapsed))
    minutes = (time.monotonic() - started) / 60
    return {"requests_per_min": count / minutes, "mb_per_min": total_bytes / 1e6 / minutes,
            "list_s_median": statistics.median(times)}


async def tui_table(config_path: Path, section: KubernetesConfig, want_pods: int,
                    steady: float, *, first_rows_only: bool = False) -> dict[str, float]:
    """Headless TUI from construction: the Kubernetes screen opened at once; when its first
    pod rows are shown, when every row is; the worst event-loop delay during that fill and
    then at steady state (the table updating from watches) while the cursor moves."""
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.config import SfopsConfig, SfopsSettings
    from backends.kubernetes.service import KubernetesService
    from tui.app import SfopsApp
    from tui.virtualtable import VirtualTable

    started = time.monotonic()
    config = SfopsConfig(path=config_path, executors={}, sections={"kubernetes": section},
                         sfops=SfopsSettings(
        refresh_interval=2.0, audit_log=Path("/tmp/sfops-bench-audit.jsonl"),
        state_dir=Path("/tmp/sfops-bench-state")))
    service = KubernetesService(section, make_client(section))
    runner = ActionRunner(AuditLog(Path("/tmp/sfops-bench-audit.jsonl")), read_only=True)
    app = SfopsApp(config, [service], runner=runner)
    result: dict[str, float] = {}

    # First pod rows on screen: the first time the table renders a pod's line for the
    # compositor (not merely its Deployments' rows and the nodes' title, which alone made
    # two rows before any pod had arrived). Timed where it happens, not by a loop that waits
    # behind ``pilot.press``: the Pilot waits for the app to go idle, and an app still
    # syncing is not idle, which had added up to seconds to this figure.
    pod_row_rendered = asyncio.Event()
    render_line = VirtualTable.render_line

    def timed_render_line(self: VirtualTable, y: int) -> Any:
        index = round(self.scroll_y) + y - 1
        if not pod_row_rendered.is_set() and 0 <= index < self.row_count \
                and self.keys[index].startswith("pod:"):
            result["first_rows_s"] = time.monotonic() - started
            pod_row_rendered.set()
        return render_line(self, y)

    VirtualTable.render_line = timed_render_line  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("1")
            await pod_row_rendered.wait()
            if first_rows_only:
                return result
            return await _fill_and_steady(app, pilot, started, want_pods, steady, result)
    finally:
        VirtualTable.render_line = render_line  # type: ignore[method-assign]


async def _fill_and_steady(app: Any, pilot: Any, started: float, want_pods: int,
                           steady: float, result: dict[str, float]) -> dict[str, float]:
    from tui.virtualtable import VirtualTable

    def rows() -> int:
        try:
            return app.screen.query_one("#table", VirtualTable).row_count
        except Exception:
            return 0

    while rows() < want_pods:
        if time.monotonic() - started > 300:
            print(f"(headless TUI: only {rows()} rows after 300 s)")
            return {}
        await asyncio.sleep(0.005)
    result["tui_table_s"] = time.monotonic() - started
    result["loop_lag_fill_ms"] = app.loop_lag_max * 1000
    app.loop_lag_max = 0.0
    table = app.screen.query_one("#table", VirtualTable)
    latencies = []
    end = time.monotonic() + steady
    while time.monotonic() < end or len(latencies) < 20:
        before = table.cursor_row
        t0 = time.monotonic()
        await pilot.press("down" if len(latencies) % 100 < 50 else "up")
        while table.cursor_row == before:
            await asyncio.sleep(0.001)
        latencies.append(time.monotonic() - t0)
        await asyncio.sleep(0.2)
    result["key_latency_ms_median"] = statistics.median(latencies) * 1000
    result["key_latency_ms_max"] = max(latencies) * 1000
    result["loop_lag_steady_ms"] = app.loop_lag_max * 1000
    return result


POD_ROW = "└ ".encode()  # a pod's row under its Deployment (no border of sfops draws "└")


def terminal_first_rows(config_path: Path, timeout: float = 60.0) -> dict[str, float]:
    """`sfops --read-only` as a person starts it: a new process in a pseudo-terminal
    (120x40), so Python's start, the imports and reading the kubeconfig count too. `1` is
    typed once it has written its first byte (the earliest a person could); times from the
    process's start to that first byte and to the first pod row reaching the terminal."""
    from tests.perf.bench_paint import Terminal

    started = time.monotonic()
    term = Terminal(config_path, 120, 40)
    try:
        first = term.first_byte(0, timeout)
        if first is None:
            return {}
        index = term.mark()
        term.write(b"1")
        row = term.wait_for(POD_ROW, index, timeout)
    finally:
        term.close()
    result = {"first_byte_s": first - started}
    if row is not None:
        result["first_rows_s"] = row - started
    return result


def first_rows_only(lab: Path, section: KubernetesConfig, runs: int) -> None:
    """Only the start → first pod rows figures, ``runs`` times each (to compare changes)."""
    make_client(section)  # the kubeconfig's loader imported, as in a full run before the TUI
    in_terminal: list[float] = []
    for run in range(runs):
        tui = asyncio.run(tui_table(lab / "sfops.toml", section, 1, 0.0, first_rows_only=True))
        term = terminal_first_rows(lab / "sfops.toml")
        if "first_rows_s" in term:
            in_terminal.append(term["first_rows_s"])
        print(f"run {run + 1}: headless TUI start → first pod rows {tui['first_rows_s']:.2f} s; "
              f"sfops in a terminal: first byte {term.get('first_byte_s', float('nan')):.2f} s, "
              f"first pod rows {term.get('first_rows_s', float('nan')):.2f} s; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    if in_terminal:
        median = statistics.median(in_terminal)
        print(f"sfops in a terminal, process start → first pod rows: median {median:.2f} s, "
              f"min {min(in_terminal):.2f} s, max {max(in_terminal):.2f} s, n={len(in_terminal)} "
              f"(target ≤ 1 s)")
        print(f"RATIO k8s_first_rows_vs_1s {median:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", type=Path, required=True)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state")
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--no-tui", action="store_true")
    parser.add_argument("--first-rows", type=int, metavar="RUNS", default=0,
                        help="only measure start → first pod rows (headless and in a "
                        "terminal), this many times")
    args = parser.parse_args()
    section, kubeconfig = section_from_lab(args.lab)
    print(f"cluster: {args.lab} namespaces {', '.join(section.namespaces)}")
    if args.first_rows:
        first_rows_only(args.lab, section, args.first_rows)
        return

    k_time, k_bytes, k_pods = kubectl_list(kubeconfig)
    print(f"kubectl get pods -A -o json: {k_pods} pods, {k_bytes / 1e6:.1f} MB in {k_time:.2f} s")
    s_time, s_pods = asyncio.run(sync_pods_only(section))
    print(f"sfops initial sync of pods (LIST in pages of 500, converted): {s_pods} pods in "
          f"{s_time:.2f} s")
    # The pod table covers the configured namespaces (the lab lists all of them).
    want = s_pods if len(section.namespaces) > 1 else 1
    result = asyncio.run(full_table(section, min(want, s_pods), args.steady, args.refresh))
    print(f"sfops start → complete pod table: {result['pods']} pods, {result['deployments']} "
          f"deployments, {result['nodes']} nodes synced in {result['sync_s']:.2f} s, "
          f"{result['rows']} rows rendered at {result['table_s']:.2f} s "
          f"({result['informers']} informers, {result['initial_requests']} requests, "
          f"{result['initial_mb']:.1f} MB)")
    print(f"sfops memory for store + snapshot: +{result['rss_mb']:.0f} MB RSS")
    print(f"sfops steady state ({args.steady:.0f} s, poll every {args.refresh:g} s): "
          f"{result['steady_requests_per_min']:.1f} requests/min, "
          f"{result['steady_mb_per_min']:.2f} MB/min; poll() median "
          f"{result['poll_ms_median']:.1f} ms, max {result['poll_ms_max']:.1f} ms")
    poller = kubectl_poller(kubeconfig, args.steady, args.refresh)
    print(f"kubectl poller (get pods -A -o json every {args.refresh:g} s): "
          f"{poller['requests_per_min']:.1f} requests/min, {poller['mb_per_min']:.1f} MB/min, "
          f"each LIST {poller['list_s_median']:.2f} s median")
    ratio = result["sync_s"] / k_time
    if not args.no_tui:
        tui = asyncio.run(tui_table(args.lab / "sfops.toml", section, result["rows"],
                                    min(args.steady, 30.0)))
        if tui:
            ratio = tui["tui_table_s"] / k_time
            print(f"headless TUI start → first pod rows {tui['first_rows_s']:.2f} s (target "
                  f"≤ 1 s), every row {tui['tui_table_s']:.2f} s = {ratio:.2f}x kubectl's "
                  f"{k_time:.2f} s (target ≤ 0.5x); worst event-loop delay during the fill "
                  f"{tui['loop_lag_fill_ms']:.0f} ms, at steady state "
                  f"{tui['loop_lag_steady_ms']:.0f} ms (target ≤ 100 ms); key press → cursor "
                  f"moved: median {tui['key_latency_ms_median']:.0f} ms, max "
                  f"{tui['key_latency_ms_max']:.0f} ms")
        term = terminal_first_rows(args.lab / "sfops.toml")
        print(f"sfops --read-only in a terminal (process start, 120x40, `1` typed at its first "
              f"byte): first byte {term.get('first_byte_s', float('nan')):.2f} s, first pod "
              f"rows {term.get('first_rows_s', float('nan')):.2f} s (target ≤ 1 s)")
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"RATIO k8s_table_vs_kubectl {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
