"""Lab operations behind ``sfops lab``: up, status, start, stop, down."""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Iterable
from typing import Any

import tomli_w

from deploy.lab import registry
from deploy.lab.core import Component, Lab, LabError, write_atomic

OPERATOR_USER = "sfops-lab"


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
    write_config(lab)
    lab.progress(
        f"lab up: {total} component(s) ready in {time.monotonic() - started_all:.1f}s; "
        f"config at {lab.config_path}"
    )
    return status(lab)


def start(lab: Lab, name: str) -> dict[str, Any]:
    component = registry.by_name(name)
    lab.progress(f"{name}: starting")
    component.start(lab)
    waited = component.wait_ready(lab)
    lab.progress(f"{name}: ready ({waited:.1f}s)")
    return component.status(lab)


def stop(lab: Lab, name: str, *, kill: bool = False) -> dict[str, Any]:
    component = registry.by_name(name)
    lab.progress(f"{name}: {'killing (SIGKILL)' if kill else 'stopping'}")
    component.stop(lab, kill=kill)
    return component.status(lab)


def down(lab: Lab) -> list[dict[str, Any]]:
    components = list(reversed(registry.all_components()))
    running = [c for c in components if c.running(lab)]
    for index, component in enumerate(running, 1):
        lab.progress(f"[{index}/{len(running)}] {component.name}: stopping")
        component.stop(lab)
    return status(lab)


def status(lab: Lab) -> list[dict[str, Any]]:
    return [c.status(lab) for c in registry.all_components()]


def component(name: str) -> Component:
    return registry.by_name(name)


def write_config(lab: Lab) -> None:
    """Write ``<lab>/sfops.toml``: a complete sfops configuration for this lab."""
    config: dict[str, Any] = {
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
    header = (
        "# sfops configuration for the lab in this directory, written by `sfops lab up`.\n"
        "# Regenerated on every `lab up`; copy it elsewhere before editing by hand.\n"
    )
    write_atomic(lab.config_path, header + tomli_w.dumps(config))
    _prepare_sfops_dirs(lab)


def _prepare_sfops_dirs(lab: Lab) -> None:
    """sfops's audit log and state live in <lab>/sfops; the lab's operator user (who runs sfops
    over SSH in the end-to-end tests) must be able to write there too."""
    for path in (lab.path("sfops"), lab.path("sfops", "state")):
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
