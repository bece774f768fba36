"""The fault matrix, shared by the integration tests (tests/integration/test_fault_matrix.py)
and the benchmark (tests/perf/bench_faults.py).

For each component and each fault — clean stop, SIGKILL, SIGSTOP (hung) — the overview (the
real TUI, headless under Pilot, polling the real lab) must show the fault within two refreshes
of it having happened, and show the component back within two refreshes of its return.

"Within two refreshes" is counted in polls, not seconds, so it holds on a loaded machine too:
when the fault is in place, poll n+1 of the backend may have started before it, poll n+2 starts
after it and must show it (its contact probe, bounded by ``contact_timeout``, is what sees it).
The seconds are measured and printed by the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from textual.widgets import DataTable

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.service import Severity, wrong_now
from backends.services import build_services
from backends.snapshot import Health
from deploy.lab import faults, ops
from deploy.lab.core import LabError
from tui.app import SfopsApp
from tui.screens.overview import BackendPanel

FAULTS = ("stop", "kill", "hang")
REFRESH_INTERVAL = 1.0  # the matrix counts polls; a shorter cycle only makes it quicker
# A poll may have started just before the fault; the next one starts after it.
POLLS_ALLOWED = 2
SETTLE_TIMEOUT = 120.0  # seconds for the whole stack to read OK again after a cell


@dataclass(frozen=True)
class Target:
    label: str  # what the matrix row says
    components: tuple[str, ...]  # lab components the fault is applied to
    backend: str  # the sfops backend whose panel shows it
    alert: str  # the wrong-now entry that names it: "<source>:<key>"
    unreachable_backend: bool = False  # the whole backend reads UNREACHABLE
    # What must be ready again before the component counts as back: the API server needs a
    # moment to reconnect to a restarted etcd, and until it has, "not ready" is the truth.
    serves_through: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return {"nginx": "nginx", "postgres": "pg", "kafka": "kafka",
                "kubernetes": "k8s"}[self.backend]


TARGETS = (
    Target("nginx", ("nginx",), "nginx", "nginx:nginx-unreachable", unreachable_backend=True),
    Target("api-1", ("api-1",), "nginx", "nginx:member-failing:api-1"),
    Target("api-2", ("api-2",), "nginx", "nginx:member-failing:api-2"),
    Target("api-3", ("api-3",), "nginx", "nginx:member-failing:api-3"),
    Target("pg-1 (primary)", ("pg-1",), "postgres", "postgres:member-unreachable:pg-1"),
    Target("pg-2 (standby)", ("pg-2",), "postgres", "postgres:member-unreachable:pg-2"),
    Target("kafka-2 (one broker)", ("kafka-2",), "kafka", "kafka:broker-down:2"),
    Target("kafka (all brokers)", ("kafka-3", "kafka-2", "kafka-1"), "kafka",
           "kafka:kafka-unreachable", unreachable_backend=True),
    Target("kube-apiserver", ("kube-apiserver",), "kubernetes",
           "kubernetes:kubernetes-unreachable", unreachable_backend=True),
    Target("etcd", ("etcd",), "kubernetes", "kubernetes:kubernetes-unreachable",
           unreachable_backend=True, serves_through=("kube-apiserver",)),
)
GROUPS = ("pg", "kafka", "api", "nginx", "k8s")


def target(label: str) -> Target:
    return next(t for t in TARGETS if t.label == label or t.components[0] == label)


def make_app(config_path: Any, refresh_interval: float = REFRESH_INTERVAL) -> SfopsApp:
    config = load(config_path)
    config = replace(config, sfops=replace(config.sfops, refresh_interval=refresh_interval))
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    return SfopsApp(config, build_services(config), runner=runner, config_path=config_path)


# --------------------------------------------------------------------------- what the UI shows


def alert_keys(app: SfopsApp) -> set[str]:
    """Row keys of the rendered "What is wrong now" table ("<source>:<key>")."""
    overview = app.get_screen_stack_overview()
    assert overview is not None
    table = overview.query_one("#alerts", DataTable)
    return {str(key.value) for key in table.rows}


def panel_title(app: SfopsApp, backend: str) -> str:
    overview = app.get_screen_stack_overview()
    assert overview is not None
    panel = overview.query_one(f"#panel-{backend}", BackendPanel)
    title = panel.query_one(".panel-title")
    return str(title.render())


def shows_fault(app: SfopsApp, t: Target) -> bool:
    summary = app.summaries.get(t.backend)
    if summary is None or summary.health is Health.OK:
        return False  # a dead or hung component never reads OK
    if t.alert not in alert_keys(app):
        return False
    if t.unreachable_backend:
        return summary.health is Health.UNREACHABLE and "UNREACHABLE" in panel_title(app,
                                                                                      t.backend)
    return True


def shows_back(app: SfopsApp, t: Target) -> bool:
    snapshot = app.snapshots.get(t.backend)
    return (snapshot is not None and snapshot.ok and t.alert not in alert_keys(app)
            and app.summaries[t.backend].health is not Health.UNREACHABLE)


def all_ok(app: SfopsApp) -> bool:
    """Every panel OK and nothing above INFO in the wrong-now list (recent Kubernetes warning
    events, such as the NodeNotReady a long control-plane outage leaves, are INFO)."""
    summaries = app.current_summaries()
    return (all(s.health is Health.OK for s in summaries)
            and not [a for a in wrong_now(summaries) if a.severity > Severity.INFO])


def not_ok(app: SfopsApp) -> str:
    return "; ".join(f"{s.name} {s.health.value}: "
                     + ", ".join(a.message[:100] for a in s.alerts)
                     for s in app.summaries.values() if s.health is not Health.OK)


# --------------------------------------------------------------------------- faults


def inject(lab: Any, t: Target, fault: str) -> None:
    """Blocking: returns when the fault is in place (processes exited, or stopped)."""
    for name in t.components:
        if fault == "hang":
            faults.hang(lab.lab, name)
        else:
            ops.stop(lab.lab, name, kill=fault == "kill")


def restore(lab: Any, t: Target, fault: str) -> None:
    """Blocking: returns when the component is back (started and ready, or resumed)."""
    for name in reversed(t.components):
        if fault == "hang":
            faults.resume(lab.lab, name)
        else:
            ops.component(name).start(lab.lab)
    for name in reversed(t.components) if fault != "hang" else ():
        try:
            ops.component(name).wait_ready(lab.lab)
        except LabError:
            # Seen once: a Kafka node restarted right after a SIGKILL gave up registering
            # with the quorum ("unable to register with the controller quorum") and exited.
            # That is the lab's restart failing, not sfops: start it once more.
            ops.component(name).start(lab.lab)
            ops.component(name).wait_ready(lab.lab)
    for name in t.serves_through:
        ops.component(name).wait_ready(lab.lab)


@dataclass
class Observation:
    seen: bool
    polls: int  # polls of the backend completed after the event until it was seen
    seconds: float  # from the event to the overview showing it


async def observe(app: SfopsApp, t: Target, check: Callable[[SfopsApp, Target], bool],
                  *, polls_at_event: int, event_at: float,
                  max_polls: int = POLLS_ALLOWED, give_up: float = 60.0) -> Observation:
    """Wait until ``check`` holds, or the backend completed more than ``max_polls`` polls
    since the event (then it was not shown in time), or ``give_up`` seconds passed."""
    job = app.poller.jobs[t.backend]
    while True:
        polls = job.polls - polls_at_event
        try:
            seen = check(app, t)
        except Exception:  # the screen may be mid-update
            seen = False
        if seen:
            return Observation(True, polls, time.monotonic() - event_at)
        if polls > max_polls or time.monotonic() - event_at > give_up:
            return Observation(False, polls, time.monotonic() - event_at)
        await asyncio.sleep(0.02)


async def settle(app: SfopsApp, lab: Any, *, timeout: float = SETTLE_TIMEOUT) -> None:
    """Until every panel reads OK (after Kafka faults, leadership only returns when someone
    elects: the lab disables auto rebalance, as an operator would be told to do)."""
    deadline = time.monotonic() + timeout
    elected = 0.0
    while not all_ok(app):
        now = time.monotonic()
        summary = app.summaries.get("kafka")
        # Only the imbalance warning is an election's to fix; whatever else is wrong (a
        # broker catching up, another backend) is waited for, not acted on.
        if (summary is not None and now - elected > 15
                and any(a.key == "leader-imbalance" for a in summary.alerts)):
            elected = now
            await asyncio.to_thread(lab.sfops, "kafka", "elect-leaders", "--yes")
        if now > deadline:
            raise AssertionError(f"the stack did not read OK within {timeout:g} s: "
                                 f"{not_ok(app)}")
        await asyncio.sleep(0.2)


async def after_polls(app: SfopsApp, count: int, *, give_up: float = 60.0) -> None:
    """Until every backend has completed ``count`` more polls."""
    start = {name: job.polls for name, job in app.poller.jobs.items()}
    deadline = time.monotonic() + give_up
    while any(job.polls - start[name] < count for name, job in app.poller.jobs.items()):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def status_json(lab: Any) -> tuple[int, dict[str, Any]]:
    done = lab.sfops("status", "--json", timeout=60)
    return done.returncode, json.loads(done.stdout)


def status_shows(t: Target, code: int, data: dict[str, Any]) -> bool:
    backends = {b["name"]: b for b in data["backends"]}
    wrong = {f"{w['source']}:{w['key']}" for w in data["wrong_now"]}
    if code == 0 or t.alert not in wrong or backends[t.backend]["health"] == "ok":
        return False
    if t.unreachable_backend:
        return backends[t.backend]["health"] == "unreachable" and code == 5
    return True


@dataclass
class CellResult:
    target: str
    fault: str
    detected: Observation
    recovered: Observation
    status_detected: bool | None = None
    status_recovered: bool | None = None
    status_seen: list[dict[str, Any]] = field(default_factory=list)  # wrong_now of each run
    # What `sfops status --json` said while the fault was in place (for the failure message).
    status_during: dict[str, Any] = field(default_factory=dict)


async def run_cell(app: SfopsApp, lab: Any, t: Target, fault: str, *,
                   check_status: bool = True) -> CellResult:
    """One cell from an all-OK stack back to an all-OK stack."""
    job = app.poller.jobs[t.backend]
    status_detected = None
    during: dict[str, Any] = {}
    try:
        await asyncio.to_thread(inject, lab, t, fault)
        event_at, polls_at = time.monotonic(), job.polls
        detected = await observe(app, t, shows_fault, polls_at_event=polls_at,
                                 event_at=event_at)
        if check_status:
            code, data = await asyncio.to_thread(status_json, lab)
            status_detected = status_shows(t, code, data)
            during = {"exit_code": code, "wrong_now": data["wrong_now"],
                      "backend": next((b for b in data["backends"] if b["name"] == t.backend),
                                      None)}
    finally:
        await asyncio.to_thread(restore, lab, t, fault)
    event_at, polls_at = time.monotonic(), job.polls
    recovered = await observe(app, t, shows_back, polls_at_event=polls_at, event_at=event_at)
    await settle(app, lab)
    status_recovered = None
    seen: list[dict[str, Any]] = []
    if check_status:
        # One `sfops status` is one refresh: like the overview, it may take two to see the
        # stack OK (its first contact with each server is a cold one).
        # And the stack may move on after the overview read OK: a broker that caught up
        # makes its leadership electable, which is then (rightly) a warning. So when status
        # disagrees, the overview gets two more polls to see the same, and settles again
        # (electing where that is all that is left) before status is asked again.
        for _ in range(POLLS_ALLOWED + 1):
            code, data = await asyncio.to_thread(status_json, lab)
            seen.append({"exit_code": code, "wrong_now": data["wrong_now"]})
            status_recovered = code == 0 and data["health"] == "ok"
            if status_recovered:
                break
            await after_polls(app, POLLS_ALLOWED)
            await settle(app, lab)
    return CellResult(t.label, fault, detected, recovered, status_detected, status_recovered,
                      seen, during)
