"""Lab operations behind ``sfops lab``: up, status, start, stop, down."""

from __future__ import annotations

import json
import os
import pwd
import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import tomli_w

from deploy.lab import procs, registry
from deploy.lab.core import Component, Lab, LabError, write_atomic
from deploy.lab.procs import StopResult

OPERATOR_USER = "sfops-lab"
# While components are stopping, say which and for how long this often.
HEARTBEAT_SECONDS = 2.0


def up(lab: Lab, only: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Start the selected components (idempotent) and write the lab's sfops.toml."""
    components = registry.select(only)
    lab.save()
    groups = _enabled_groups(lab) | {c.group for c in components}
    _save_enabled_groups(lab, groups)
    total = len(components)
    started_all = time.monotonic()
    for index, component in enumerate(components, 1):
        step = f"[{index}/{total}] {component.name}"
        if component.running(lab):
            lab.progress(f"{step}: already running (pid {component.pid(lab)}), checking readiness")
        else:
            lab.progress(f"{step}: starting")
        component.start(lab)
        waited = component.wait_ready(lab)
        component.after_ready(lab)
        lab.progress(f"{step}: ready ({waited:.1f}s) at {component.address(lab)}")
    _api_follows_kafka(lab)
    write_config(lab)
    lab.progress(
        f"lab up: {total} component(s) ready in {time.monotonic() - started_all:.1f}s; "
        f"config at {lab.config_path}"
    )
    return status(lab)


def _api_follows_kafka(lab: Lab) -> None:
    """API workers started before Kafka publish no events; once the lab runs Kafka they are
    restarted (one at a time: nginx keeps the others) so the whole write path is there."""
    module = registry.group_module("api")
    if module is None:
        return
    for worker in module.without_kafka(lab):
        lab.progress(f"{worker.name}: restarting so it publishes to Kafka (started before it)")
        stop(lab, worker.name)
        start(lab, worker.name)


def start(lab: Lab, name: str) -> dict[str, Any]:
    component = registry.by_name(name)
    lab.progress(f"{name}: starting")
    component.start(lab)
    waited = component.wait_ready(lab)
    lab.progress(f"{name}: ready ({waited:.1f}s)")
    return component.status(lab)


def stop(lab: Lab, name: str, *, kill: bool = False) -> dict[str, Any]:
    """Stop one component; returns its status row with ``stop``: how it stopped."""
    component = registry.by_name(name)
    report = _stop(lab, [[[component]]], kill=kill)
    return {**component.status(lab), "stop": report["stopped"][0]}


def down(lab: Lab) -> dict[str, Any]:
    """Stop every running component; return once all their processes have exited.

    Groups stop concurrently, except that a group waits for the groups that use it
    (``registry.USED_BY``); inside a group, components stop in its ``STOP_WAVES``. The report:
    ``stopped`` (each component's :class:`StopResult` as JSON), ``killed`` (components that
    had to be SIGKILLed), ``left`` (still running: should never happen), ``components``."""
    running = [c for c in registry.all_components() if c.running(lab)]
    groups: dict[str, list[Component]] = {}
    for component in running:
        groups.setdefault(component.group, []).append(component)
    plan = {group: registry.stop_waves(group, members) for group, members in groups.items()}
    report = _stop(lab, list(plan.values()), after={
        index: [list(plan).index(user) for user in registry.USED_BY.get(group, ())
                if user in plan]
        for index, group in enumerate(plan)})
    if report["stopped"]:
        lab.progress(_summary_line("lab down", report))
    return report


def _summary_line(what: str, report: dict[str, Any]) -> str:
    line = f"{what}: {len(report['stopped'])} component(s) stopped in {report['seconds']:.1f}s"
    if report["killed"]:
        line += f"; had to SIGKILL: {', '.join(report['killed'])}"
    if report["left"]:
        line += f"; STILL RUNNING: {', '.join(report['left'])}"
    return line


def _stop(lab: Lab, chains: list[list[list[Component]]], *, kill: bool = False,
          after: dict[int, list[int]] | None = None) -> dict[str, Any]:
    """Run ``chains`` concurrently (each a list of waves; a wave's components stop together),
    chain ``i`` starting once the chains in ``after[i]`` are done. Shows a line when each
    component starts and ends stopping and, while any is still stopping, every
    HEARTBEAT_SECONDS which ones and for how long."""
    started = time.monotonic()
    total = sum(len(wave) for chain in chains for wave in chain)
    lock = threading.Lock()
    results: list[StopResult] = []
    stopping: dict[str, tuple[float, float]] = {}  # name -> (started, grace)
    done = [threading.Event() for _ in chains]

    def say(message: str) -> None:
        with lock:
            lab.progress(message)

    def stop_one(component: Component) -> None:
        grace, note = (0.0, "") if kill else component.stop_grace(lab)
        with lock:
            stopping[component.name] = (time.monotonic(), grace)
        how = "killing (SIGKILL)" if kill else (
            f"stopping ({signal.Signals(component.stop_signal).name}, SIGKILL after "
            f"{grace:.0f}s{': ' + note if note else ''})")
        if component.running(lab):
            say(f"{component.name}: {how}")
        try:
            # Reaping is awaited once for all at the end: the next wave need not wait for it.
            result = component.stop(lab, kill=kill, wait_for_reaping=False)
        finally:
            with lock:
                stopping.pop(component.name, None)
        with lock:
            results.append(result)
            count = len(results)
        say(f"[{count}/{total}] {result.describe()}")

    def run_chain(index: int) -> None:
        try:
            for before in (after or {}).get(index, ()):
                done[before].wait()
            for wave in chains[index]:
                if len(wave) == 1:
                    stop_one(wave[0])
                    continue
                with ThreadPoolExecutor(len(wave)) as pool:
                    for future in [pool.submit(stop_one, c) for c in wave]:
                        future.result()
        finally:
            done[index].set()  # even on failure: a chain waiting for this one must not hang

    with ThreadPoolExecutor(max(1, len(chains))) as pool:
        futures = [pool.submit(run_chain, i) for i in range(len(chains))]
        while wait(futures, timeout=HEARTBEAT_SECONDS).not_done:
            with lock:
                waiting = sorted(stopping.items())
                count = len(results)
            if waiting:
                now = time.monotonic()
                say(f"{count}/{total} stopped; waiting for " + ", ".join(
                    f"{name} ({now - since:.0f}s" + (f" of {grace:.0f}s)" if grace else ")")
                    for name, (since, grace) in waiting))
        for future in futures:
            future.result()  # a LabError (or a bug) in a stop surfaces here
    results = procs.wait_reaped(results)
    for result in results:
        if result.unreaped:
            lab.progress(f"{result.name}: exited, but not yet reaped by its parent: pid "
                         f"{', '.join(map(str, result.unreaped))}")
    return {
        "seconds": round(time.monotonic() - started, 3),
        "stopped": [r.to_json() for r in results],
        "killed": [r.name for r in results if r.had_to_kill],
        "left": [r.name for r in results if r.left],
        "components": status(lab),
    }


def status(lab: Lab) -> list[dict[str, Any]]:
    return [c.status(lab) for c in registry.all_components()]


def component(name: str) -> Component:
    return registry.by_name(name)


# The lab's environments: every section is shared, so both are the same stack; the second
# proves switching (`sfops --env lab-readonly`, key E in the TUI). "lab" stays the default:
# everything that loads the lab's sfops.toml without --env gets it.
LAB_ENV = "lab"
LAB_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    LAB_ENV: {},
    "lab-readonly": {"read_only": True, "colour": "cyan"},
}


def write_config(lab: Lab) -> None:
    """Write ``<lab>/sfops.toml``: a complete sfops configuration for this lab."""
    config: dict[str, Any] = {
        "default_env": LAB_ENV,
        "sfops": {
            "refresh_interval": 2.0,
            "audit_log": str(lab.path("sfops", "audit.jsonl")),
            "state_dir": str(lab.path("sfops", "state")),
        },
        "executors": {"local": {"type": "local"}},
    }
    for group in registry.GROUP_MODULES:
        if group not in _enabled_groups(lab):
            continue
        module = registry.group_module(group)
        if module is None:
            continue
        _merge(config, module.sfops_config(lab))
    config["environments"] = {name: dict(table) for name, table in LAB_ENVIRONMENTS.items()}
    header = (
        "# sfops configuration for the lab in this directory, written by `sfops lab up`.\n"
        "# Regenerated on every `lab up`; copy it elsewhere before editing by hand.\n"
    )
    write_atomic(lab.config_path, header + tomli_w.dumps(config))
    _prepare_sfops_dirs(lab)


def _prepare_sfops_dirs(lab: Lab) -> None:
    """sfops's audit log and state live in <lab>/sfops; the lab's operator user (who runs sfops
    over SSH in the end-to-end tests) must be able to write there too."""
    state = lab.path("sfops", "state")  # each environment's state_dir is a directory in it
    for path in (lab.path("sfops"), state, *(state / env for env in LAB_ENVIRONMENTS)):
        path.mkdir(parents=True, exist_ok=True)
    try:
        entry = pwd.getpwnam(OPERATOR_USER)
    except KeyError:
        return
    for root, dirs, files in os.walk(lab.path("sfops")):
        for item in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(item, entry.pw_uid, entry.pw_gid)


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _enabled_groups(lab: Lab) -> set[str]:
    try:
        data = json.loads(lab.path("lab.json").read_text())
    except (OSError, ValueError):
        return set()
    return set(data.get("groups", []))


def _save_enabled_groups(lab: Lab, groups: set[str]) -> None:
    path = lab.path("lab.json")
    data = json.loads(path.read_text()) if path.exists() else {}
    data["groups"] = sorted(groups, key=list(registry.GROUP_MODULES).index)
    write_atomic(path, json.dumps(data, indent=2) + "\n")


__all__ = ["LabError", "down", "start", "status", "stop", "up", "write_config"]
