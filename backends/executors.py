"""Run host-level commands and file edits locally or over SSH.

Commands are argv lists, never shell strings: locally they go straight to execve, and over SSH
(where the remote side always runs a shell) each argument is quoted with ``shlex.join``. File
writes are atomic on the target host (temporary file in the same directory, then rename), so a
reader — nginx reloading, say — sees either the old or the new file, never half of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol, runtime_checkable

import asyncssh

from backends.config import ExecutorConfig, LocalExecutorConfig, SshExecutorConfig

DEFAULT_TIMEOUT = 30.0


class ExecutorError(Exception):
    """A command or file operation failed; names the host and the command, never secrets
    (callers pass secrets on stdin, not in argv)."""

    def __init__(self, host: str, command: str, detail: str) -> None:
        self.host = host
        self.command = command
        self.detail = detail
        super().__init__(f"{host}: {command}: {detail}")


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


def _finish(host: str, argv: tuple[str, ...], result: CommandResult, check: bool) -> CommandResult:
    if check and not result.ok:
        tail = result.stderr.strip().splitlines()[-3:]
        raise ExecutorError(
            host, shlex.join(argv), f"exit status {result.exit_status}: {' / '.join(tail)}"
        )
    return result


# --------------------------------------------------------------------------- local


class LocalExecutor:
    host = "local"

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
        data = input.encode() if isinstance(input, str) else input
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # own process group: a timeout kills its children too
            )
        except OSError as exc:
            raise ExecutorError(self.host, command, exc.strerror or str(exc)) from None
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate(data)
        except TimeoutError:
            await _kill(process)
            raise ExecutorError(self.host, command, f"timed out after {timeout:g} s") from None
        except asyncio.CancelledError:
            await asyncio.shield(_kill(process))
            raise
        result = CommandResult(args, process.returncode or 0, _text(stdout), _text(stderr))
        return _finish(self.host, args, result, check)

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        try:
            return await asyncio.to_thread(_read_bytes, os.fspath(path))
        except OSError as exc:
            raise ExecutorError(self.host, f"read {path}", exc.strerror or str(exc)) from None

    async def write_file(
        self, path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
    ) -> None:
        try:
            await asyncio.to_thread(_write_atomic, os.fspath(path), data, mode)
        except OSError as exc:
            raise ExecutorError(self.host, f"write {path}", exc.strerror or str(exc)) from None

    async def close(self) -> None:
        return None


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write_atomic(path: str, data: bytes, mode: int | None) -> None:
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


class SshExecutor:
    """One reused asyncssh connection per host; reconnects on the next call after a drop.
    A command interrupted by a drop is reported, never re-run (it may not be idempotent)."""

    def __init__(self, config: SshExecutorConfig, *, use_sftp: bool = True) -> None:
        self.config = config
        self.use_sftp = use_sftp  # falls back to cat/mv when the host offers no sftp
        self.host = f"{config.user}@{config.host}:{config.port}"
        self._connection: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed():
                return self._connection
            self._connection = None
            cfg = self.config
            try:
                self._connection = await asyncssh.connect(
                    cfg.host,
                    port=cfg.port,
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
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise ExecutorError(self.host, "connect", _ssh_reason(exc)) from None
            return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - every command carries its budget
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        args = _check_argv(argv)
        command = shlex.join(args)  # the remote side runs a shell: quote every argument
        connection = await self._connect()
        try:
            completed = await connection.run(
                command, input=_text(input) if input is not None else None,
                check=False, timeout=timeout, errors="replace",
            )
        except asyncssh.TimeoutError:
            raise ExecutorError(self.host, command, f"timed out after {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            self._drop()
            raise ExecutorError(self.host, command, _ssh_reason(exc)) from None
        status = completed.exit_status
        if status is None or status < 0:
            signal_info = completed.exit_signal  # (name, core_dumped, message, language)
            status = -_signal_number(signal_info[0] if signal_info else None)
        result = CommandResult(args, status, _text(completed.stdout), _text(completed.stderr))
        return _finish(self.host, args, result, check)

    async def read_file(self, path: str | os.PathLike[str]) -> bytes:
        remote = os.fspath(path)
        connection = await self._connect()
        try:
            if self.use_sftp:
                try:
                    return await _sftp_read(connection, remote)
                except asyncssh.ChannelOpenError:
                    self.use_sftp = False  # the host has no sftp subsystem: use cat instead
            return await self._shell_read(connection, remote)
        except (OSError, asyncssh.Error) as exc:
            self._drop_if_lost(exc)
            raise ExecutorError(self.host, f"read {path}", _ssh_reason(exc)) from None

    async def write_file(
        self, path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
    ) -> None:
        remote = os.fspath(path)
        connection = await self._connect()
        try:
            if self.use_sftp:
                try:
                    await _sftp_write(connection, remote, data, mode)
                    return
                except asyncssh.ChannelOpenError:
                    self.use_sftp = False
            await self._shell_write(connection, remote, data, mode)
        except (OSError, asyncssh.Error) as exc:
            self._drop_if_lost(exc)
            raise ExecutorError(self.host, f"write {path}", _ssh_reason(exc)) from None

    def _drop_if_lost(self, exc: BaseException) -> None:
        if isinstance(exc, asyncssh.DisconnectError | asyncssh.ConnectionLost):
            self._drop()

    async def _shell_read(self, connection: asyncssh.SSHClientConnection, path: str) -> bytes:
        completed = await connection.run(
            shlex.join(["cat", "--", path]), encoding=None, check=False, timeout=DEFAULT_TIMEOUT
        )
        if completed.exit_status != 0:
            raise ExecutorError(self.host, f"read {path}", _text(completed.stderr).strip())
        stdout = completed.stdout
        return stdout if isinstance(stdout, bytes) else _text(stdout).encode()

    async def _shell_write(
        self, connection: asyncssh.SSHClientConnection, path: str, data: bytes, mode: int | None
    ) -> None:
        argv = ["sh", "-c", _WRITE_SCRIPT, "sfops-write", path, f"{mode:o}" if mode else ""]
        completed = await connection.run(
            shlex.join(argv), input=data, encoding=None, check=False, timeout=DEFAULT_TIMEOUT
        )
        if completed.exit_status != 0:
            raise ExecutorError(self.host, f"write {path}", _text(completed.stderr).strip())

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            with contextlib.suppress(Exception):
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
