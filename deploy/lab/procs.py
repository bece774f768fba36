"""Processes of a lab component as the kernel sees them (``/proc``), and stopping all of them.

A component is more than its pid: PostgreSQL and nginx fork workers, and a postmaster restarted
by ``pg_ctl`` need not lead the process group the lab made for it. "Stopped" therefore means
every process of the family has exited: the main pid, its descendants, and every member of the
process group it leads.

"Exited" is read from ``/proc``, not from ``kill(pid, 0)``: an exited process that its parent
(often init, which reaps lazily) has not reaped yet is a zombie and still answers ``kill(0)``,
although it holds no memory, socket or file any more. A zombie *thread group leader* whose other
threads still run (a JVM tearing down) is not exited, though: ``/proc/<pid>/stat`` shows ``Z``
for the leader alone, so the thread count tells the two apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PROC = Path("/proc")
POLL_SECONDS = 0.05
# Finding new descendants means reading every /proc/<pid>/stat: do it less often than checking
# the known ones, or the wait itself loads a 2-core machine.
RESCAN_SECONDS = 0.5
# Processes that outlive their main process (orphaned workers) get this long, not the whole
# stop timeout: nothing is left to shut them down cleanly.
ORPHAN_GRACE_SECONDS = 2.0
# SIGKILL cannot be ignored, but a process in uninterruptible sleep dies only when the I/O ends.
KILL_WAIT_SECONDS = 15.0
# Exited lab processes are usually init's children (the `lab up` that started them has
# returned); an init that reaps lazily leaves them as zombies for a moment (about 1.5 s with the
# firecracker init here), which `ps` and `kill -0` still show. Waiting that long costs little
# (components stop in parallel) and makes "down" mean gone by every measure; past it, the zombie
# is named.
REAP_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    threads: int
    start_ticks: int  # since boot: tells a reused pid from the process we saw

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X") and self.threads <= 1


@dataclass(frozen=True)
class ProcessId:
    """One process, pinned by its start time so a recycled pid is never signalled."""

    pid: int
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    try:
        return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[17]),
                        int(fields[19]))
    except (IndexError, ValueError):
        return None


def identify(pid: int) -> ProcessId | None:
    stat = read_stat(pid)
    return None if stat is None or stat.exited else ProcessId(pid, stat.start_ticks)


def is_running(process: ProcessId) -> bool:
    stat = read_stat(process.pid)
    return stat is not None and stat.start_ticks == process.start_ticks and not stat.exited


def pid_running(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and not stat.exited


def all_stats() -> list[ProcStat]:
    stats = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            stats.append(stat)
    return stats


def family(roots: Iterable[ProcessId], group: int | None) -> set[ProcessId]:
    """The running ``roots``, their running descendants, and the running members of process
    group ``group`` (the group the main process led when it was found; members keep that group
    id after their leader is gone)."""
    stats = [s for s in all_stats() if not s.exited]
    children: dict[int, list[ProcStat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    found = {root for root in roots if is_running(root)}
    # From every known process, not only the main one: an orphaned worker is init's child
    # now, but what it forks is still ours.
    pending = [p.pid for p in found]
    while pending:
        for child in children.get(pending.pop(), ()):
            process = ProcessId(child.pid, child.start_ticks)
            if process not in found:
                found.add(process)
                pending.append(child.pid)
    if group is not None:
        found.update(ProcessId(s.pid, s.start_ticks) for s in stats if s.pgrp == group)
    return found


def send(processes: Iterable[ProcessId], sig: int) -> None:
    for process in processes:
        # Checked just before the signal, so a pid recycled meanwhile is left alone.
        if is_running(process):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, sig)


@dataclass(frozen=True)
class StopResult:
    """How one component stopped. ``killed``: processes that outlived the grace period and were
    SIGKILLed (the component *had to be killed*); ``left``: still running even after that."""

    name: str
    was_running: bool = True
    pid: int | None = None
    processes: int = 0  # every process waited for (main, workers, children)
    seconds: float = 0.0
    requested_kill: bool = False  # `lab stop --kill`: a crash on purpose
    grace_seconds: float = 0.0
    killed: tuple[int, ...] = ()
    left: tuple[int, ...] = ()
    unreaped: tuple[int, ...] = ()  # exited, but their parent has not collected them yet
    note: str = ""  # why a kill was expected (e.g. Kafka's last node has no quorum)
    exited: tuple[ProcessId, ...] = field(default=(), repr=False, compare=False)

    @property
    def had_to_kill(self) -> bool:
        return bool(self.killed) and not self.requested_kill

    @property
    def outcome(self) -> str:
        if not self.was_running:
            return "not running"
        if self.left:
            return "still running"
        if self.requested_kill:
            return "killed on request"
        return "killed" if self.killed else "stopped"

    def describe(self) -> str:
        if not self.was_running:
            return f"{self.name}: not running"
        what = f"{self.name}: {self.outcome} in {self.seconds:.1f}s"
        what += f" ({self.processes} process{'es' if self.processes != 1 else ''})"
        if self.had_to_kill:
            what += (f"; SIGKILLed {len(self.killed)} process(es) still running after "
                     f"{self.grace_seconds:.0f}s (pid {', '.join(map(str, self.killed))})")
            if self.note:
                what += f": {self.note}"
        if self.left:
            what += f"; STILL RUNNING after SIGKILL: pid {', '.join(map(str, self.left))}"
        if self.unreaped:
            what += (f"; exited but not yet reaped by their parent: pid "
                     f"{', '.join(map(str, self.unreaped))}")
        return what

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "had_to_kill": self.had_to_kill,
            "pid": self.pid,
            "processes": self.processes,
            "seconds": round(self.seconds, 3),
            "grace_seconds": self.grace_seconds,
            "killed_pids": list(self.killed),
            "left_pids": list(self.left),
            "unreaped_pids": list(self.unreaped),
            "note": self.note,
        }


@dataclass
class _Tracker:
    root: ProcessId
    group: int | None
    seen: set[ProcessId] = field(default_factory=set)
    scanned: float = 0.0

    def running(self, *, rescan: bool = False) -> set[ProcessId]:
        now = time.monotonic()
        if rescan or now - self.scanned >= RESCAN_SECONDS:
            self.seen |= family(self.seen | {self.root}, self.group)
            self.scanned = now
        return {p for p in self.seen if is_running(p)}


def stop_family(
    name: str,
    pid: int,
    *,
    stop_signal: int = signal.SIGTERM,
    grace_seconds: float = 30.0,
    kill: bool = False,
    note: str = "",
    cap: Callable[[], tuple[float, str] | None] | None = None,
    on_exit: Callable[[int], None] = lambda pid: None,
    wait_for_reaping: bool = True,
) -> StopResult:
    """Stop process ``pid`` and its family; return when every one of them has exited.

    ``stop_signal`` goes to the main process only (it shuts its workers down itself); whatever
    is still running ``grace_seconds`` later — or ``ORPHAN_GRACE_SECONDS`` after the main process
    exited — is SIGKILLed and named in the result. ``cap``, asked while waiting, may shorten the
    grace: ``(seconds from now, why)`` once the component knows it cannot finish cleanly.
    ``kill``: SIGKILL the whole family at once. ``on_exit`` is called with each exited pid (the
    lab reaps its own children there); then (unless ``wait_for_reaping`` is off: the caller
    will call :func:`wait_reaped` for several stops at once) the stop waits briefly for init
    to reap the rest, so no ``<defunct>`` entry outlives the stop either."""
    started = time.monotonic()
    root = identify(pid)
    if root is None:
        return StopResult(name, was_running=False, pid=pid)
    stat = read_stat(pid)
    group = pid if stat is not None and stat.pgrp == pid else None
    tracker = _Tracker(root, group)
    running = tracker.running(rescan=True)
    if kill:
        _kill(running, group)
    else:
        # A hung (SIGSTOPped, `lab hang`) process keeps a SIGTERM pending until it runs
        # again: resume the family first, or a clean stop would wait out its whole grace.
        send(running, signal.SIGCONT)
        send([root], stop_signal)
    deadline = started + (KILL_WAIT_SECONDS if kill else grace_seconds)
    asked = started
    while running:
        now = time.monotonic()
        if not kill and not is_running(root):
            deadline = min(deadline, now + ORPHAN_GRACE_SECONDS)
        if not kill and cap is not None and now - asked >= RESCAN_SECONDS:
            asked = now
            if (shorter := cap()) is not None and now + shorter[0] < deadline:
                deadline, note = now + shorter[0], shorter[1]
        if now >= deadline:
            break
        running = _wait_step(tracker)
    killed: tuple[int, ...] = ()
    waited = time.monotonic() - started
    if running and not kill:
        killed = tuple(sorted(p.pid for p in running))
        _kill(running, group)
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while running and time.monotonic() < deadline:
            running = _wait_step(tracker)
    exited = tuple(p for p in tracker.seen if not is_running(p))
    for process in exited:
        on_exit(process.pid)
    result = StopResult(
        name,
        pid=pid,
        processes=len(tracker.seen),
        seconds=time.monotonic() - started,
        requested_kill=kill,
        grace_seconds=0.0 if kill else waited if killed else grace_seconds,
        killed=killed,
        left=tuple(sorted(p.pid for p in running)),
        note=note,
        exited=exited,
    )
    return wait_reaped([result])[0] if wait_for_reaping else result


def wait_reaped(results: list[StopResult]) -> list[StopResult]:
    """Wait (up to REAP_WAIT_SECONDS, all together) until init has reaped the processes these
    stops saw exit; the results name any still waiting. Zombies of a live parent (the program
    that started the lab, which reaps when it polls) are named at once, not waited for."""
    deadline = time.monotonic() + REAP_WAIT_SECONDS
    while True:
        unreaped = [p for r in results for p in r.exited if _present(p)]
        if not unreaped or time.monotonic() >= deadline:
            break
        if not any(_reaped_by_init(p) for p in unreaped):
            break
        time.sleep(POLL_SECONDS)
    pending = {p.pid for p in unreaped}
    return [replace(r, unreaped=tuple(sorted(p.pid for p in r.exited if p.pid in pending)))
            for r in results]


def _reaped_by_init(process: ProcessId) -> bool:
    stat = read_stat(process.pid)
    return stat is not None and stat.start_ticks == process.start_ticks and stat.ppid == 1


def _present(process: ProcessId) -> bool:
    """Still in the process table (a zombie not yet reaped counts)."""
    stat = read_stat(process.pid)
    return stat is not None and stat.start_ticks == process.start_ticks


def _wait_step(tracker: _Tracker) -> set[ProcessId]:
    time.sleep(POLL_SECONDS)
    # Before declaring the family gone, look once more for a child forked since the last scan.
    return tracker.running() or tracker.running(rescan=True)


def _kill(processes: set[ProcessId], group: int | None) -> None:
    stats = [read_stat(p.pid) for p in processes if is_running(p)]
    # The whole group at once (also a process forked after our last scan), but only while one
    # of ours is still in it: the id of an emptied group may name someone else's by now.
    if group is not None and any(s is not None and s.pgrp == group for s in stats):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    send(processes, signal.SIGKILL)
