"""Faults the lab can inject into a running component, beside ``stop`` and ``stop --kill``:
``hang`` (SIGSTOP: the process is there, its sockets accept connections from the backlog,
nothing answers — the case that looks calm to a watch) and ``resume`` (SIGCONT).

A component's processes are its family (:func:`deploy.lab.procs.family`: the main pid, its
descendants and its process group — nginx's workers, PostgreSQL's backends): a hang that
stopped only the main process would leave workers answering and prove nothing. A hung
component can still be stopped: ``lab stop`` resumes the family before its stop signal.
"""

from __future__ import annotations

import signal
from pathlib import Path

from deploy.lab import procs, registry
from deploy.lab.core import Lab, LabError


def _signal_component(lab: Lab, name: str, signum: int) -> list[int]:
    component = registry.by_name(name)
    pid = component.pid(lab)
    if pid is None:
        raise LabError(f"{name} is not running")
    root = procs.identify(pid)
    stat = procs.read_stat(pid)
    if root is None or stat is None:
        raise LabError(f"{name} is not running")
    family = procs.family([root], pid if stat.pgrp == pid else None)
    procs.send(family, signum)
    return sorted(p.pid for p in family)


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
