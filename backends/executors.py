"""Run host-level commands and file edits locally or over SSH.

Commands are argv lists, never shell strings: locally they go straight to execve, and over SSH
(where the remote side always runs a shell) each argument is quoted with ``shlex.join``. File
writes are atomic on the target host (temporary file in the same directory, then rename), so a
reader — nginx reloading, say — sees either the old or the new file, never half of one.

Every step is bounded, and a command that overruns is *stopped*, not abandoned:

- A command runs in its own process group (locally ``start_new_session``; over SSH the
  session's process, which OpenSSH starts as a session leader, ``exec``\\ s a tiny wrapper
  that reports its pid and then ``exec``\\ s the command). At its deadline, or when the caller
  cancels it, the group gets SIGTERM, then SIGKILL after :data:`KILL_GRACE` s if anything is
  left; over SSH the signals are sent from a second channel (closing a channel does not stop
  the remote process: without a pty sshd sends no SIGHUP), and the first channel is closed.
- Over SSH, connecting is bounded by the executor's ``connect_timeout``, opening a channel and
  starting the command by :data:`CHANNEL_TIMEOUT`, the stop by :data:`STOP_TIMEOUT`, and a
  whole file transfer (SFTP or the shell fallback) by :data:`FILE_TIMEOUT`. A host that does
  not answer within one of those has its connection closed (the next call opens a new one),
  and the error says whether the command may still be running there.
- Nothing is retried here: a write that timed out is reported, never repeated.

:func:`run_bound` and :func:`file_bound` give the longest one call can take, stop included;
the actions build their stated worst case from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol, TypeVar, runtime_checkable

import asyncssh

from backends.config import ExecutorConfig, LocalExecutorConfig, SshExecutorConfig
from backends.secrets import child_environment, redact_known

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
KILL_GRACE = 2.0  # SIGTERM to a command's process group, then SIGKILL this much later
CHANNEL_TIMEOUT = 10.0  # SSH: open a session channel, start the command, learn its pid
STOP_TIMEOUT = 8.0  # SSH: a second channel, SIGTERM, the grace (ps each 0.1 s), SIGKILL
CLOSE_TIMEOUT = 1.0  # SSH: for the host to acknowledge closing a stopped command's channel
FILE_TIMEOUT = 30.0  # one whole read_file or write_file
CLEANUP_TIMEOUT = 2.0  # an abandoned SFTP transfer removing its temporary file
POLL_INTERVAL = 0.05


class ExecutorError(Exception):
    """A command or file operation failed; names the host and the command, never secrets
    (callers pass secrets on stdin, not in argv)."""

    def __init__(self, host: str, command: str, detail: str) -> None:
        self.host = host
        self.command = command
        self.detail = redact_known(detail)  # a command's stderr may quote what it was given
        super().__init__(f"{host}: {command}: {self.detail}")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int  # -N when killed by signal N (as subprocess does)
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@runtime_checkable
class Executor(Protocol):
    host: str  # for messages: "local" or "user@host:port"

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - every command carries its budget
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult: ...

    async def read_file(self, path: str | os.PathLike[str]) -> bytes: ...

    async def write_file(
        self, path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
    ) -> None: ...

    async def close(self) -> None: ...


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv:
        raise TypeError("argv must be a non-empty list of arguments, not a shell string")
    return tuple(str(a) for a in argv)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _finish(host: str, argv: tuple[str, ...], result: CommandResult, check: bool) -> CommandResult:
    if check and not result.ok:
        tail = result.stderr.strip().splitlines()[-3:]
        raise ExecutorError(
            host, shlex.join(argv), f"exit status {result.exit_status}: {' / '.join(tail)}"
        )
    return result


def run_bound(executor: Executor, timeout: float) -> float:
    """The longest ``executor.run(argv, timeout=timeout)`` can take, stopping a command that
    overran included (an executor that does not say: ``timeout``)."""
    bound = getattr(executor, "run_bound", None)
    return float(bound(timeout)) if callable(bound) else timeout


def file_bound(executor: Executor) -> float:
    """The longest one ``read_file`` or ``write_file`` can take."""
    bound = getattr(executor, "file_bound", None)
    return float(bound()) if callable(bound) else FILE_TIMEOUT


def cancel_bound(executor: Executor) -> float:
    """The longest a call takes to return once cancelled (a caller's own timeout): the stop
    of its command on the host, or the cleanup of its transfer."""
    bound = getattr(executor, "cancel_bound", None)
    return float(bound()) if callable(bound) else 0.0


# --------------------------------------------------------------------------- local


class LocalExecutor:
    host = "local"

    def __init__(self) -> None:
        self.kill_grace = KILL_GRACE
        self.file_timeout = FILE_TIMEOUT

    def run_bound(self, timeout: float) -> float:
        """The command up to its deadline, then SIGTERM and the grace before SIGKILL."""
        return timeout + self.kill_grace + 1.0  # + reaping it

    def file_bound(self) -> float:
        return self.file_timeout

    def cancel_bound(self) -> float:
        return self.kill_grace + 1.0

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - every command carries its budget
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        args = _check_argv(argv)
        command = shlex.join(args)
        data = _bytes(input)
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group: a stop reaches its children too
                # No secret in a child's environment: what it starts (pg_ctl → the
                # postmaster, nginx) keeps that environment for its whole life.
                env=child_environment(),
            )
        except OSError as exc:
            raise ExecutorError(self.host, command, exc.strerror or str(exc)) from None
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate(data)
        except TimeoutError:
            note = await asyncio.shield(_stop_local(process, self.kill_grace))
            raise ExecutorError(self.host, command,
                                f"timed out after {timeout:g} s; {note}") from None
        except asyncio.CancelledError:
            await asyncio.shield(_stop_local(process, self.kill_grace))
            raise
        result = CommandResult(args, process.returncode or 0, _text(stdout), _text(stderr))
        return _finish(self.host, args, result, check)

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        what = f"read {path}"
        task = asyncio.ensure_future(asyncio.to_thread(_read_bytes, os.fspath(path)))
        # The thread cannot be stopped; a read left behind changes nothing.
        try:
            done, _ = await asyncio.wait({task}, timeout=self.file_timeout)
        except asyncio.CancelledError:
            task.add_done_callback(_consume)
            raise
        if not done:
            task.add_done_callback(_consume)
            raise ExecutorError(self.host, what, f"not finished within {self.file_timeout:g} s")
        try:
            return task.result()
        except OSError as exc:
            raise ExecutorError(self.host, what, exc.strerror or str(exc)) from None

    async def write_file(
        self, path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
    ) -> None:
        what = f"write {path}"
        abandoned = threading.Event()  # checked right before the rename
        task = asyncio.ensure_future(
            asyncio.to_thread(_write_atomic, os.fspath(path), data, mode, abandoned))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.file_timeout)
        except asyncio.CancelledError:
            abandoned.set()
            task.add_done_callback(_consume)
            raise
        if not done:
            abandoned.set()
            task.add_done_callback(_consume)
            raise ExecutorError(self.host, what,
                                f"not finished within {self.file_timeout:g} s; abandoned (the "
                                "file is unchanged unless its rename had already begun)")
        try:
            task.result()
        except OSError as exc:
            raise ExecutorError(self.host, what, exc.strerror or str(exc)) from None

    async def close(self) -> None:
        return None


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome (no 'exception was never retrieved' noise)."""
    if not task.cancelled():
        task.exception()


def _group_alive(pgid: int) -> bool:
    """A member of process group ``pgid`` still runs. Zombies do not count: an orphaned
    child's exit may wait for a lazy init to reap it (read from /proc where there is one)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return True
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _stop_local(process: asyncio.subprocess.Process, grace: float) -> str:
    """SIGTERM the command's process group, SIGKILL what is left after ``grace``; reap it.
    The group outlives its leader when a child holds on, so it is signalled even when the
    leader has exited (its id cannot be reused while any member remains)."""
    pgid = process.pid
    loop = asyncio.get_running_loop()
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        note = "it had already exited"
    except PermissionError:
        note = "it could not be signalled (permission denied)"
    else:
        note = f"stopped (SIGTERM to process group {pgid})"
        deadline = loop.time() + grace
        while _group_alive(pgid):
            if loop.time() >= deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                note = f"killed (SIGKILL to process group {pgid} after {grace:g} s)"
                break
            await asyncio.sleep(POLL_INTERVAL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()
    return note


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write_atomic(path: str, data: bytes, mode: int | None,
                  abandoned: threading.Event | None = None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    owner: tuple[int, int] | None = None
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    if mode is None:
        mode = current.st_mode & 0o7777 if current is not None else 0o644  # keep permissions
    if current is not None and os.geteuid() == 0:
        # Root editing a file another user owns (the lab's nginx runs as its operator):
        # the replacement keeps the owner, or that user could no longer rewrite it.
        owner = (current.st_uid, current.st_gid)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        if abandoned is not None and abandoned.is_set():
            # The caller gave up (deadline or cancellation): the file must stay as it was.
            raise InterruptedError("abandoned before the rename")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- ssh

# The remote side of every command. OpenSSH runs the session's command as a session (and so
# process group) leader; the login shell ``exec``s this, which keeps that pid, prints it on
# stderr behind a per-run marker ($0), and ``exec``s the command, still with that pid. The
# command and everything it starts (unless it makes its own session) share that group.
_PID_SCRIPT = 'printf "%s %s\\n" "$0" "$$" >&2; exec "$@"'

# Stops the group $1 (or process $1 if it leads no group): SIGTERM, then SIGKILL once $2
# tenths of a second have passed with anything left. Prints what it did. "Left" ignores
# zombies (an orphan's exit may wait for a lazy init to reap it); without ps, kill -0 decides.
_STOP_SCRIPT = """pg=$1 tenths=$2
if kill -0 -"$pg" 2>/dev/null; then t=-$pg
elif kill -0 "$pg" 2>/dev/null; then t=$pg
else echo gone; exit 0; fi
running() {
  if [ "$t" = "-$pg" ] && command -v ps >/dev/null 2>&1; then
    ps -e -o pgid= -o stat= 2>/dev/null |
      awk -v g="$pg" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
  else
    kill -0 "$t" 2>/dev/null
  fi
}
kill -TERM "$t" 2>/dev/null || { echo gone; exit 0; }
n=0
while running; do
  if [ "$n" -ge "$tenths" ]; then kill -KILL "$t" 2>/dev/null; echo killed; exit 0; fi
  sleep 0.1
  n=$((n + 1))
done
echo terminated
"""


@dataclass
class _Started:
    process: asyncssh.SSHClientProcess[bytes]
    pid: int | None  # the command's process group on the host (None: the wrapper never ran)
    noise: bytes  # stderr written before the wrapper ran (a login shell's rc files, say)


class SshExecutor:
    """One reused asyncssh connection per host; reconnects on the next call after a drop.
    A command interrupted by a drop is reported, never re-run (it may not be idempotent)."""

    def __init__(self, config: SshExecutorConfig, *, use_sftp: bool = True) -> None:
        self.config = config
        self.use_sftp = use_sftp  # falls back to cat/mv when the host offers no sftp
        self.host = f"{config.user}@{config.host}:{config.port}"
        self.channel_timeout = CHANNEL_TIMEOUT
        self.stop_timeout = STOP_TIMEOUT
        self.close_timeout = CLOSE_TIMEOUT
        self.kill_grace = KILL_GRACE
        self.file_timeout = FILE_TIMEOUT
        self._connection: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    def run_bound(self, timeout: float) -> float:
        """Connecting, starting it and its deadline (whichever is longer), then stopping it
        (after a lost connection: reconnecting first) and closing its channel."""
        connect = self.config.connect_bound
        return (connect + max(timeout, self.channel_timeout) + connect + self.stop_timeout
                + self.close_timeout)

    def file_bound(self) -> float:
        """SFTP: connecting, the transfer, its cleanup; the shell fallback is a command."""
        sftp = self.config.connect_bound + self.file_timeout + CLEANUP_TIMEOUT
        return max(sftp, self.run_bound(self.file_timeout))

    def cancel_bound(self) -> float:
        """A start in flight finishing, then the stop and the channel's close (a transfer's
        cleanup is shorter)."""
        return max(self.channel_timeout + self.stop_timeout + self.close_timeout,
                   CLEANUP_TIMEOUT)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            self._connection = None
            self._connection = await connect_route(self.config)
            return self._connection

    def _drop(self, connection: asyncssh.SSHClientConnection | None = None) -> None:
        """Close ``connection`` (default: the current one); the next call reconnects."""
        if connection is None or connection is self._connection:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _drop_if_lost(self, exc: BaseException,
                      connection: asyncssh.SSHClientConnection | None = None) -> None:
        if isinstance(exc, asyncssh.DisconnectError | asyncssh.ConnectionLost | OSError):
            self._drop(connection)

    # -- commands

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - every command carries its budget
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        args = _check_argv(argv)
        status, stdout, stderr = await self._exec(args, timeout, _bytes(input),
                                                  shlex.join(args))
        result = CommandResult(args, status, _text(stdout), _text(stderr))
        return _finish(self.host, args, result, check)

    async def _exec(self, args: tuple[str, ...], timeout: float,  # noqa: ASYNC109
                    data: bytes | None, what: str) -> tuple[int, bytes, bytes]:
        """Run ``args`` on the host within ``timeout`` s; stop it there if it overruns or the
        caller cancels. Returns (exit status, stdout, stderr)."""
        connection = await self._connect()
        marker = f"sfops-run-{uuid.uuid4().hex[:16]}"
        remote = "exec " + shlex.join(["sh", "-c", _PID_SCRIPT, marker, *args])
        start = asyncio.ensure_future(self._start(connection, remote, data, marker, what))
        try:
            async with asyncio.timeout(timeout):
                started = await asyncio.shield(start)
                stdout, stderr = await started.process.communicate()
        except TimeoutError:
            note = await asyncio.shield(self._stop(connection, start))
            raise ExecutorError(self.host, what,
                                f"timed out after {timeout:g} s; {note}") from None
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(connection, start))
            raise
        except (OSError, asyncssh.Error) as exc:
            self._drop(connection)
            raise ExecutorError(self.host, what, f"{_ssh_reason(exc)} (connection closed; "
                                "the command may have run, or still run, on the host)") from None
        process = started.process
        if process.exit_status is None and process.exit_signal is None:
            # The channel ended without an exit status: the connection went while it ran.
            self._drop(connection)
            note = await asyncio.shield(self._stop_after_loss(started.pid))
            raise ExecutorError(self.host, what, f"connection lost while it ran; {note}")
        status = process.exit_status
        if status is None or status < 0:
            signal_info = process.exit_signal  # (name, core_dumped, message, language)
            status = -_signal_number(signal_info[0] if signal_info else None)
        return status, stdout or b"", started.noise + (stderr or b"")

    async def _start(self, connection: asyncssh.SSHClientConnection, remote: str,
                     data: bytes | None, marker: str, what: str) -> _Started:
        """Open a channel, start the wrapped command and read its pid, within
        ``channel_timeout`` (a task of its own: a caller giving up meanwhile still gets the
        pid to stop it with)."""
        process: asyncssh.SSHClientProcess[bytes] | None = None
        prefix = marker.encode() + b" "
        try:
            async with asyncio.timeout(self.channel_timeout):
                if data:
                    process = await connection.create_process(remote, input=data,
                                                              encoding=None)
                else:  # stdin at EOF at once, as locally (DEVNULL)
                    process = await connection.create_process(
                        remote, stdin=asyncio.subprocess.DEVNULL, encoding=None)
                noise = b""
                while True:
                    line = await process.stderr.readline()
                    if line.startswith(prefix):
                        pid = line[len(prefix):].strip()
                        return _Started(process, int(pid) if pid.isdigit() else None, noise)
                    if not line:  # EOF before the wrapper spoke: it never ran
                        return _Started(process, None, noise)
                    noise += line
        except TimeoutError:
            if process is not None:
                process.close()
            self._drop(connection)
            raise ExecutorError(self.host, what, f"no answer within {self.channel_timeout:g} s "
                                "to starting it (connection closed; had it started, it may "
                                "still be running on the host)") from None
        except (OSError, asyncssh.Error) as exc:
            if process is not None:
                process.close()
            self._drop_if_lost(exc, connection)
            raise ExecutorError(self.host, what, _ssh_reason(exc)) from None
        except BaseException:
            if process is not None:
                process.close()
            raise

    async def _stop(self, connection: asyncssh.SSHClientConnection,
                    start: asyncio.Future[_Started]) -> str:
        """Stop a command that overran or whose caller gave up: SIGTERM its process group
        from a second channel, SIGKILL after the grace, close its channel. Says what
        happened, for the error message."""
        try:
            started = await start  # bounded by channel_timeout in _start
        except ExecutorError as exc:
            return exc.detail
        except (Exception, asyncio.CancelledError):
            return "it was not started"
        process = started.process
        try:
            if process.exit_status is not None or process.exit_signal is not None:
                return "it had just finished"
            if started.pid is None:
                return "its process on the host is unknown (channel closed; it may still run)"
            return await self._signal_group(connection, started.pid)
        finally:
            process.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.close_timeout):
                    await process.wait_closed()

    async def _stop_after_loss(self, pid: int | None) -> str:
        """A command whose connection was lost may run on unobserved: reconnect (bounded by
        connect_timeout) and stop its process group."""
        if pid is None:
            return "it may still be running on the host"
        try:
            connection = await self._connect()
        except ExecutorError as exc:
            return (f"could not reconnect to stop it ({exc.detail}); process group {pid} may "
                    "still be running on the host")
        return await self._signal_group(connection, pid)

    async def _signal_group(self, connection: asyncssh.SSHClientConnection, pid: int) -> str:
        tenths = max(1, round(self.kill_grace * 10))
        argv = ["sh", "-c", _STOP_SCRIPT, "sfops-stop", str(pid), str(tenths)]
        try:
            async with asyncio.timeout(self.stop_timeout):
                done = await connection.run(shlex.join(argv), check=False,
                                            stdin=asyncio.subprocess.DEVNULL,
                                            errors="replace")
        except TimeoutError:
            self._drop(connection)
            return (f"could not stop it: no answer within {self.stop_timeout:g} s (connection "
                    f"closed; process group {pid} may still be running on the host)")
        except (OSError, asyncssh.Error) as exc:
            self._drop_if_lost(exc, connection)
            return (f"could not stop it ({_ssh_reason(exc)}; process group {pid} may still be "
                    "running on the host)")
        said = _text(done.stdout).strip()
        if said == "gone":
            return "it had already exited"
        if said == "terminated":
            return f"stopped on the host (SIGTERM to process group {pid})"
        if said == "killed":
            return (f"killed on the host (SIGKILL to process group {pid} after "
                    f"{self.kill_grace:g} s)")
        return (f"stopping it on the host failed (exit {done.exit_status}: "
                f"{_text(done.stderr).strip() or said}); process group {pid} may still run")

    # -- files

    async def _bounded(self, connection: asyncssh.SSHClientConnection, what: str,
                       work: Awaitable[T], *, write: bool) -> T:
        """``work`` within ``file_timeout``. On expiry or cancellation it is cancelled, given
        CLEANUP_TIMEOUT to remove its temporary file, and the connection is closed (a
        transfer that hangs has a connection that hangs)."""
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.file_timeout)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(connection, task))
            raise
        if not done:
            await asyncio.shield(self._abandon(connection, task))
            after = (" (the file is unchanged unless its rename had been sent)" if write
                     else "")
            raise ExecutorError(self.host, what, f"not finished within {self.file_timeout:g} "
                                f"s; connection closed{after}")
        return task.result()

    async def _abandon(self, connection: asyncssh.SSHClientConnection,
                       task: asyncio.Future[Any]) -> None:
        task.cancel()
        await asyncio.wait({task}, timeout=CLEANUP_TIMEOUT)
        task.add_done_callback(_consume)
        self._drop(connection)

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        remote = os.fspath(path)
        what = f"read {path}"
        connection = await self._connect()
        try:
            if self.use_sftp:
                try:
                    return await self._bounded(connection, what,
                                               _sftp_read(connection, remote), write=False)
                except asyncssh.ChannelOpenError:
                    self.use_sftp = False  # the host has no sftp subsystem: use cat instead
            status, stdout, stderr = await self._exec(
                ("cat", "--", remote), self.file_timeout, None, what)
        except (OSError, asyncssh.Error) as exc:
            self._drop_if_lost(exc, connection)
            raise ExecutorError(self.host, what, _ssh_reason(exc)) from None
        if status != 0:
            raise ExecutorError(self.host, what, _text(stderr).strip())
        return stdout

    async def write_file(
        self, path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
    ) -> None:
        remote = os.fspath(path)
        what = f"write {path}"
        connection = await self._connect()
        try:
            if self.use_sftp:
                try:
                    await self._bounded(connection, what,
                                        _sftp_write(connection, remote, data, mode), write=True)
                    return
                except asyncssh.ChannelOpenError:
                    self.use_sftp = False
            argv = ("sh", "-c", _WRITE_SCRIPT, "sfops-write", remote,
                    f"{mode:o}" if mode else "")
            # Empty data still needs a stdin at EOF: DEVNULL does that (no input given).
            status, _, stderr = await self._exec(argv, self.file_timeout, data, what)
        except (OSError, asyncssh.Error) as exc:
            self._drop_if_lost(exc, connection)
            raise ExecutorError(self.host, what, _ssh_reason(exc)) from None
        if status != 0:
            raise ExecutorError(self.host, what, _text(stderr).strip())

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.close_timeout):
                    await connection.wait_closed()


async def _sftp_read(connection: asyncssh.SSHClientConnection, path: str) -> bytes:
    async with connection.start_sftp_client() as sftp, sftp.open(path, "rb") as file:
        data = await file.read()
    return data if isinstance(data, bytes) else data.encode()


async def _sftp_write(
    connection: asyncssh.SSHClientConnection, path: str, data: bytes, mode: int | None
) -> None:
    target = PurePosixPath(path)
    tmp = str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"))
    async with connection.start_sftp_client() as sftp:
        if mode is None:
            try:
                mode = ((await sftp.stat(path)).permissions or 0o644) & 0o7777
            except asyncssh.SFTPNoSuchFile:
                mode = 0o644
        try:
            async with sftp.open(tmp, "wb") as file:
                await file.write(data)
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await file.fsync()
            await sftp.chmod(tmp, mode)
            # POSIX rename replaces the target atomically (plain SFTP rename refuses).
            await sftp.posix_rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await sftp.remove(tmp)
            raise


# For hosts without an sftp subsystem: the same temp-file-then-rename, with the path and mode
# passed as positional parameters ($1, $2), never spliced into the script.
_WRITE_SCRIPT = """set -e
target=$1
mode=$2
[ -n "$mode" ] || mode=$(stat -c %a -- "$target" 2>/dev/null || echo 644)
tmp=$(mktemp "$(dirname -- "$target")/.$(basename -- "$target").XXXXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod "$mode" "$tmp"
sync -- "$tmp" 2>/dev/null || true
mv -f -- "$tmp" "$target"
trap - EXIT
"""


async def connect_route(config: SshExecutorConfig) -> asyncssh.SSHClientConnection:
    """A connection to ``config``'s host through its jump hosts (``config.route``), each hop
    a connection of its own with its own ``known_hosts``, keys and ``connect_timeout``, and
    the keepalives of a direct connection; the next hop is reached through a TCP channel of
    the one before (asyncssh's ``tunnel=``). Each connection owns the one it runs through, so
    closing the returned one closes the chain. Raises :class:`ExecutorError` naming the hop
    and, for a host key or a timeout, the key in the configuration."""
    target = f"{config.user}@{config.host}:{config.port}"
    previous: asyncssh.SSHClientConnection | None = None
    try:
        for hop in (*config.route, config):
            what = ("connect" if hop is config else
                    f"connect via jump host {hop.name} ({hop.user}@{hop.host}:{hop.port})")
            connection = await _connect_one(hop, previous, target, what)
            if previous is not None:
                connection.set_tunnel(previous)  # closed with it (as asyncssh does itself)
            previous = connection
    except BaseException:
        if previous is not None:
            previous.close()
        raise
    assert previous is not None
    return previous


async def _connect_one(cfg: SshExecutorConfig, tunnel: asyncssh.SSHClientConnection | None,
                       target: str, what: str) -> asyncssh.SSHClientConnection:
    try:
        # connect_timeout covers TCP, key exchange and authentication in asyncssh; the outer
        # bound makes sure of it (a peer that accepts and never speaks).
        async with asyncio.timeout(cfg.connect_timeout):
            return await asyncssh.connect(
                cfg.host,
                port=cfg.port,
                tunnel=tunnel or (),
                username=cfg.user,
                # Host keys are checked against this file only; an unknown or changed key
                # fails the connection. There is deliberately no accept-new mode.
                known_hosts=str(cfg.known_hosts),
                client_keys=[str(k) for k in cfg.client_keys] or (),
                connect_timeout=cfg.connect_timeout,
                config=[],  # ~/.ssh/config must not redirect or weaken a configured host
                agent_path=None if cfg.client_keys else (),
                keepalive_interval=15,
                keepalive_count_max=3,
            )
    except TimeoutError:
        raise ExecutorError(target, what, f"no answer within {cfg.connect_timeout:g} s "
                            f"([executors.{cfg.name}] connect_timeout)") from None
    except (OSError, asyncssh.Error) as exc:
        reason = _ssh_reason(exc)
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            reason += f"; [executors.{cfg.name}] known_hosts = {cfg.known_hosts}"
        raise ExecutorError(target, what, reason) from None


def _ssh_reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"host key not verified against known_hosts ({exc.reason})"
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"authentication failed ({exc.reason})"
    if isinstance(exc, asyncssh.Error):
        return f"{type(exc).__name__}: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _signal_number(name: str | None) -> int:
    if not name:
        return 1
    try:
        return int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 1


def executor_from_config(config: ExecutorConfig) -> Executor:
    if isinstance(config, LocalExecutorConfig):
        return LocalExecutor()
    return SshExecutor(config)
