"""The lab's core: components that run as real local processes under one state directory.

A component is a long-running foreground process (never self-daemonising) that the lab
spawns in its own session, with its output in ``<dir>/logs/<name>.log`` and its pid in
``<dir>/run/<name>.pid``. Readiness is always probed (a query, an HTTP request, a metadata
call), never assumed after a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.lab import procs

DEFAULT_PORT_BASE = 15400
STATE_FILE = "lab.json"


class LabError(RuntimeError):
    """A lab operation failed; the message names the component and the cause."""


@dataclass(frozen=True)
class LabSettings:
    """Choices fixed when the lab directory is first created (kept in ``lab.json``)."""

    port_base: int = DEFAULT_PORT_BASE
    k8s_nodes: int = 3
    k8s_pods: int = 0  # > 0: scale mode for benchmarks

    def to_json(self) -> dict[str, Any]:
        return {"port_base": self.port_base, "k8s_nodes": self.k8s_nodes, "k8s_pods": self.k8s_pods}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabSettings:
        return cls(
            port_base=int(data.get("port_base", DEFAULT_PORT_BASE)),
            k8s_nodes=int(data.get("k8s_nodes", 3)),
            k8s_pods=int(data.get("k8s_pods", 0)),
        )


Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Lab:
    """A lab directory and its settings. Paths are absolute."""

    dir: Path
    settings: LabSettings = field(default_factory=LabSettings)
    progress: Progress = print_progress

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        port_base: int | None = None,
        k8s_nodes: int | None = None,
        k8s_pods: int | None = None,
        progress: Progress = print_progress,
    ) -> Lab:
        """Open (or create) a lab directory. Settings given here override stored ones."""
        directory = directory.resolve()
        state = directory / STATE_FILE
        stored: dict[str, Any] = {}
        if state.exists():
            try:
                stored = json.loads(state.read_text())
            except (OSError, ValueError) as exc:
                raise LabError(f"{state}: unreadable lab state ({exc})") from exc
        settings = LabSettings.from_json(stored)
        overrides = {
            k: v
            for k, v in (("port_base", port_base), ("k8s_nodes", k8s_nodes), ("k8s_pods", k8s_pods))
            if v is not None
        }
        if overrides:
            settings = LabSettings.from_json({**settings.to_json(), **overrides})
        lab = cls(dir=directory, settings=settings, progress=progress)
        return lab

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # noqa: S103 - other lab users (postgres, sfops-lab) traverse it
        # Merge: lab.json also records which groups were brought up (deploy.lab.ops).
        path = self.dir / STATE_FILE
        try:
            stored = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            stored = {}
        stored.update(self.settings.to_json())
        write_atomic(path, json.dumps(stored, indent=2) + "\n")

    # -- layout -------------------------------------------------------------------------
    def port(self, offset: int) -> int:
        """Ports are ``port_base + offset``; each component group owns a range of offsets."""
        return self.settings.port_base + offset

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def log_path(self, name: str) -> Path:
        return self.path("logs", f"{name}.log")

    def pid_path(self, name: str) -> Path:
        return self.path("run", f"{name}.pid")

    @property
    def config_path(self) -> Path:
        return self.path("sfops.toml")


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# Popen objects of processes started by this Python process, so they can be reaped (a test
# session that starts and kills components must not accumulate zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    """The process has not exited (a zombie leader whose threads still run has not)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    return procs.pid_running(pid)


def reap(pid: int) -> None:
    """Collect the exit status of a process this Python process started (no zombie stays)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Component:
    """One lab process. Subclasses set ``name``/``group`` and implement ``argv`` and ``ready``.

    ``prepare`` does one-time, idempotent set-up (initdb, keys, config files) and may run
    short-lived commands; ``ports`` lists the ports that must be free before starting, so a
    collision gives a clear error instead of a confusing crash log.
    """

    name: str = ""
    group: str = ""
    user: str | None = None  # run as this user (postgres refuses to run as root)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    ready_timeout: float = 60.0

    def ports(self, lab: Lab) -> Sequence[int]:
        return ()

    def address(self, lab: Lab) -> str:
        ports = self.ports(lab)
        return f"127.0.0.1:{ports[0]}" if ports else ""

    def prepare(self, lab: Lab) -> None:
        """One-time set-up; must be idempotent."""

    def argv(self, lab: Lab) -> list[str]:
        raise NotImplementedError

    def env(self, lab: Lab) -> dict[str, str]:
        return {}

    def cwd(self, lab: Lab) -> Path:
        return lab.dir

    def ready(self, lab: Lab) -> bool:
        """One readiness probe; must return quickly (bounded by its own timeouts)."""
        raise NotImplementedError

    def after_ready(self, lab: Lab) -> None:
        """Work that needs the component serving (create topics, apply manifests)."""

    # -- process management --------------------------------------------------------------
    def pid(self, lab: Lab) -> int | None:
        path = lab.pid_path(self.name)
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def running(self, lab: Lab) -> bool:
        return self.pid(lab) is not None

    def start(self, lab: Lab) -> int:
        if (pid := self.pid(lab)) is not None:
            return pid
        busy = [p for p in self.ports(lab) if port_in_use(p)]
        if busy:
            raise LabError(
                f"{self.name}: port {', '.join(map(str, busy))} on 127.0.0.1 is already in use "
                f"by another process; choose another --port-base (now {lab.settings.port_base})"
            )
        self.prepare(lab)
        log = lab.log_path(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        lab.pid_path(self.name).parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env(lab)}
        with open(log, "ab") as out:
            out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            out.flush()
            proc = subprocess.Popen(
                self.argv(lab),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd(lab),
                env=env,
                start_new_session=True,
                user=self.user,
            )
        _CHILDREN[proc.pid] = proc
        write_atomic(lab.pid_path(self.name), f"{proc.pid}\n")
        return proc.pid

    def wait_ready(self, lab: Lab, timeout: float | None = None) -> float:
        """Probe until ready; returns seconds waited. Fails fast if the process died."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        started = time.monotonic()
        while True:
            if not self.running(lab):
                raise LabError(f"{self.name}: exited during start-up; {tail_log(lab, self.name)}")
            try:
                if self.ready(lab):
                    return time.monotonic() - started
            except Exception:  # noqa: S110 - a failed probe only means "not ready yet"
                pass
            if time.monotonic() > deadline:
                raise LabError(
                    f"{self.name}: not ready after {timeout or self.ready_timeout:.0f}s; "
                    f"{tail_log(lab, self.name)}"
                )
            time.sleep(0.2)

    def stop_grace(self, lab: Lab) -> tuple[float, str]:
        """Seconds a clean stop may take before the rest is SIGKILLed, and why a kill would be
        expected (empty: it would be a surprise). Pure: the lab also calls it to show the plan."""
        return self.stop_timeout, ""

    def stop(self, lab: Lab, *, kill: bool = False,
             wait_for_reaping: bool = True) -> procs.StopResult:
        """Stop the component; return once every process of it has exited (the main process,
        its workers and children, its process group), SIGKILLing what outlives the grace
        period. ``kill``: SIGKILL them all at once, a crash. See procs.stop_family."""
        pid = self.pid(lab)
        if pid is None:
            return procs.StopResult(self.name, was_running=False)
        grace, note = self.stop_grace(lab)
        return procs.stop_family(self.name, pid, stop_signal=self.stop_signal,
                                 grace_seconds=grace, kill=kill, note=note,
                                 cap=lambda: self.stop_grace_cap(lab), on_exit=reap,
                                 wait_for_reaping=wait_for_reaping)

    def stop_grace_cap(self, lab: Lab) -> tuple[float, str] | None:
        """Asked while a stop waits: ``(seconds from now, why)`` when the component can no
        longer stop cleanly and the rest of its grace would only be wasted."""
        return None

    def status(self, lab: Lab) -> dict[str, Any]:
        pid = self.pid(lab)
        return {
            "name": self.name,
            "group": self.group,
            "state": "running" if pid is not None else "stopped",
            "pid": pid,
            "address": self.address(lab),
        }


def tail_log(lab: Lab, name: str, lines: int = 8) -> str:
    path = lab.log_path(name)
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return f"no log at {path}"
    return f"last lines of {path}:\n  " + "\n  ".join(text)


def run(
    argv: Sequence[str],
    *,
    what: str,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a short command; on failure raise LabError naming ``what`` with its output."""
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: timed out after {timeout:.0f}s") from exc
    except OSError as exc:
        raise LabError(f"{what}: cannot run {argv[0]} ({exc})") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise LabError(f"{what}: exit {done.returncode}: {output}")
    return done.stdout
