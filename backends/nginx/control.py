"""Host-level access to one nginx: its files, ``nginx -t``, reload, worker processes.

Everything goes through an :class:`~backends.executors.Executor`, so the same code works on
this host and over SSH. Reads use :func:`call_read` (retried, behind a breaker); writes and
signals use :func:`call_write` (never retried).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from backends.executors import (
    CommandResult,
    Executor,
    ExecutorError,
    LocalExecutor,
    cancel_bound,
    file_bound,
    run_bound,
)
from backends.nginx.accesslog import FileState, parse_stat
from backends.nginx.config import NginxConfig
from backends.resilience import CircuitBreaker, RetryPolicy, call_read, call_write

COMMAND_TIMEOUT = 10.0
FILE_READ_POLICY = RetryPolicy(attempts=2, initial_backoff=0.1, deadline=5.0)


@dataclass(frozen=True)
class WorkerProcess:
    pid: int
    shutting_down: bool  # an old worker finishing in-flight requests after a reload


def parse_workers(ps_output: str) -> list[WorkerProcess]:
    """``ps -o pid=,args= --ppid MASTER`` → the master's worker processes."""
    workers: list[WorkerProcess] = []
    for line in ps_output.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit() and "worker process" in args:
            workers.append(WorkerProcess(int(pid), "shutting down" in args))
    return workers


def _worker_ages(ps_output: str) -> list[tuple[int, str]]:
    """``ps -o pid=,etimes=,args=`` → (seconds since start, args) of each worker process."""
    ages: list[tuple[int, str]] = []
    for line in ps_output.splitlines():
        fields = line.split(None, 2)
        if (len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit()
                and "worker process" in fields[2]):
            ages.append((int(fields[1]), fields[2]))
    return ages


@dataclass(frozen=True)
class ReloadProgress:
    """How far a graceful reload has got, judged by the master's workers against the
    generation of workers that ran before it was sent."""

    new: tuple[int, ...]  # started since the reload and serving: the new configuration
    previous: tuple[int, ...]  # the earlier generation, still running (told to quit or not)

    @property
    def new_workers_up(self) -> bool:
        return bool(self.new)

    @property
    def took_effect(self) -> bool:
        """Every request nginx accepts from now on is routed by the new configuration.

        New workers alone are not enough: the master forks them, sleeps 100 ms and only
        then tells the old ones to quit (ngx_master_process_cycle), and the old ones keep
        accepting, under the old configuration, until they read that message. Only when
        the whole previous generation has exited can no request take the old route."""
        return bool(self.new) and not self.previous


def reload_progress(previous_generation: Collection[int],
                    workers: Iterable[WorkerProcess]) -> ReloadProgress:
    """Classify ``workers`` (one ``ps``) against the pids that ran before the reload.

    A pid not in the previous generation that is already shutting down belongs to neither:
    it was started by a reload after ours (someone else's) and is leaving again."""
    previous = tuple(sorted(w.pid for w in workers if w.pid in previous_generation))
    new = tuple(sorted(w.pid for w in workers
                       if w.pid not in previous_generation and not w.shutting_down))
    return ReloadProgress(new=new, previous=previous)


class NginxControl:
    def __init__(self, config: NginxConfig, executor: Executor,
                 breaker: CircuitBreaker | None = None) -> None:
        self.config = config
        self.executor = executor
        self.breaker = breaker or CircuitBreaker(f"nginx host {executor.host}")
        self._run_as = _local_owner(config, executor)

    # -- commands

    def nginx_argv(self, *args: str) -> list[str]:
        argv = [str(self.config.nginx_binary)]
        if self.config.prefix is not None:
            argv += ["-p", str(self.config.prefix)]
        # -e stderr: never touch the compiled-in /var/log/nginx/error.log (maybe not ours).
        argv += ["-c", str(self.config.config_file), "-e", "stderr", *args]
        if self._run_as is not None:
            # We are root on the nginx host and nginx belongs to another user: run as that
            # user. Run as root, `nginx -t` chowns the temp directories to `nobody` (the
            # default `user`), which breaks an unprivileged master's workers.
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        return argv

    async def _command(self, argv: Sequence[str], what: str, *, write: bool) -> CommandResult:
        async def run() -> CommandResult:
            return await self.executor.run(argv, timeout=COMMAND_TIMEOUT)

        if write:
            return await call_write(run, what=what, timeout=COMMAND_TIMEOUT + 2,
                                    breaker=self.breaker)
        return await call_read(run, FILE_READ_POLICY, what=what, timeout=COMMAND_TIMEOUT + 2,
                               breaker=self.breaker)

    async def test_config(self) -> CommandResult:
        """``nginx -t`` (a read: it changes nothing, so it may be retried on transport errors)."""
        return await self._command(self.nginx_argv("-t", "-q"), "nginx -t", write=False)

    async def reload(self) -> CommandResult:
        return await self._command(self.nginx_argv("-s", "reload"), "nginx -s reload",
                                   write=True)

    # -- worst cases (an action adds them up into its stated worst case)

    def command_bound(self) -> float:
        """One command (nginx -t, reload, ps, stat, dd), a read's retry included: its own
        deadline and stop, or the outer timeout and the stop it triggers, whichever is
        sooner; a retried read starts no new attempt after the policy's deadline."""
        once = min(run_bound(self.executor, COMMAND_TIMEOUT),
                   COMMAND_TIMEOUT + 2 + cancel_bound(self.executor))
        return (FILE_READ_POLICY.deadline or 0.0) + once

    def file_step_bound(self) -> float:
        """One read or write of the upstream or pid file, a read's retry included."""
        once = min(file_bound(self.executor), COMMAND_TIMEOUT + cancel_bound(self.executor))
        return (FILE_READ_POLICY.deadline or 0.0) + once

    def step_bound(self) -> float:
        """The longest of any one host step."""
        return max(self.command_bound(), self.file_step_bound())

    # -- files

    async def read_upstream(self) -> bytes:
        path = self.config.upstream_file

        async def read() -> bytes:
            return await self.executor.read_file(path)

        return await call_read(read, FILE_READ_POLICY, what=f"read {path}",
                               timeout=COMMAND_TIMEOUT, breaker=self.breaker)

    async def write_upstream(self, data: bytes) -> None:
        path = self.config.upstream_file

        async def write() -> None:
            await self.executor.write_file(path, data)

        await call_write(write, what=f"write {path}", timeout=COMMAND_TIMEOUT,
                         breaker=self.breaker)

    # -- processes

    async def master_pid(self) -> int | None:
        """The running master's pid from the pid file (None when not configured/absent)."""
        if self.config.pid_file is None:
            return None
        path = self.config.pid_file

        async def read() -> bytes:
            return await self.executor.read_file(path)

        try:
            data = await call_read(read, FILE_READ_POLICY, what=f"read {path}",
                                   timeout=COMMAND_TIMEOUT, breaker=self.breaker)
        except ExecutorError:
            return None
        text = data.decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None

    async def workers(self) -> list[WorkerProcess] | None:
        """The master's workers (old ones "shutting down" included); None when unknown."""
        master = await self.master_pid()
        if master is None:
            return None
        result = await self._command(
            ["ps", "-o", "pid=,args=", "--ppid", str(master)], "ps", write=False
        )
        # ps exits 1 when nothing matched: a master without workers (or gone) is not an error.
        return parse_workers(result.stdout)

    async def upstream_vs_running(self) -> tuple[int, int] | None:
        """(the upstream file's mtime, when the running generation of workers started), in
        epoch seconds of the nginx host, or None when either is unknown. A file modified
        after its workers started holds something nginx does not run (yet)."""
        master = await self.master_pid()
        if master is None:
            return None
        ps = await self._command(["ps", "-o", "pid=,etimes=,args=", "--ppid", str(master)],
                                 "ps", write=False)
        ages = [age for age, args in _worker_ages(ps.stdout) if "shutting down" not in args]
        if not ages:
            return None
        path = os.fspath(self.config.upstream_file)
        stat = await self._command(["stat", "-L", "-c", "%Y", path], f"stat {path}",
                                   write=False)
        now = await self._command(["date", "+%s"], "date", write=False)
        mtime, clock = stat.stdout.strip(), now.stdout.strip()
        if not (stat.ok and now.ok and mtime.isdigit() and clock.isdigit()):
            return None
        return int(mtime), int(clock) - max(ages)  # the oldest current worker: the reload

    # -- access log

    async def stat(self, path: str | os.PathLike[str]) -> FileState:
        result = await self._command(["stat", "-L", "-c", "%i %s", os.fspath(path)],
                                     f"stat {path}", write=False)
        if not result.ok:
            raise ExecutorError(self.executor.host, f"stat {path}",
                                result.stderr.strip() or f"exit {result.exit_status}")
        return parse_stat(result.stdout)

    async def read_range(self, path: str | os.PathLike[str], offset: int, count: int) -> bytes:
        """``count`` bytes of ``path`` from ``offset`` (dd: no shell, bounded, works remotely)."""
        if count <= 0:
            return b""
        result = await self._command(
            ["dd", f"if={os.fspath(path)}", "iflag=skip_bytes,count_bytes",
             f"skip={offset}", f"count={count}", "bs=65536", "status=none"],
            f"read {path}", write=False,
        )
        if not result.ok:
            raise ExecutorError(self.executor.host, f"read {path}",
                                result.stderr.strip() or f"exit {result.exit_status}")
        return result.stdout.encode("utf-8", "replace")


def _local_owner(config: NginxConfig, executor: Executor) -> str | None:
    """The user to run nginx commands as when we are root on the nginx host itself."""
    if not isinstance(executor, LocalExecutor) or os.geteuid() != 0:
        return None
    target = config.prefix or config.config_file
    try:
        uid = os.stat(target).st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
