"""Faults the lab can inject into a running component, beside ``stop`` and ``stop --kill``:
``hang`` (SIGSTOP: the process is there, its sockets accept connections from the backlog,
nothing answers — the case that looks calm to a watch) and ``resume`` (SIGCONT).

A component's processes are its main pid, everything in its process group and every
descendant (a postmaster restarted by ``pg_ctl`` leads no group; nginx's workers and
PostgreSQL's backends are children): a hang that stopped only the main process would leave
workers answering and prove nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from deploy.lab import registry
from deploy.lab.core import Lab, LabError


def _parents() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every process we can see."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def processes(root: int) -> list[int]:
    """``root``, its process group and all their descendants."""
    table = _parents()
    found = {root} | {pid for pid, (_, group) in table.items() if group == root}
    changed = True
    while changed:
        changed = False
        for pid, (parent, _) in table.items():
            if parent in found and pid not in found:
                found.add(pid)
                changed = True
    return sorted(found)


def _signal_component(lab: Lab, name: str, signum: int) -> list[int]:
    component = registry.by_name(name)
    pid = component.pid(lab)
    if pid is None:
        raise LabError(f"{name} is not running")
    pids = processes(pid)
    for each in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signum)
    return pids


def hang(lab: Lab, name: str) -> list[int]:
    """SIGSTOP every process of ``name``; returns the pids stopped."""
    lab.progress(f"{name}: hanging (SIGSTOP)")
    return _signal_component(lab, name, signal.SIGSTOP)


def resume(lab: Lab, name: str) -> list[int]:
    """SIGCONT every process of ``name`` (harmless when it was not stopped)."""
    lab.progress(f"{name}: resuming (SIGCONT)")
    return _signal_component(lab, name, signal.SIGCONT)


def hung(lab: Lab, name: str) -> bool:
    """Is the component's main process stopped (state T)?"""
    pid = registry.by_name(name).pid(lab)
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state in ("T", "t")
