from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends import executors as executors_module
from backends.actions import CheckResult, WorstCase
from backends.config import LocalExecutorConfig, SshExecutorConfig
from backends.executors import (
    CommandResult,
    Executor,
    ExecutorError,
    LocalExecutor,
    SshExecutor,
    cancel_bound,
    executor_from_config,
    file_bound,
    run_bound,
)


@pytest.fixture
def local() -> LocalExecutor:
    return LocalExecutor()


async def test_run_returns_status_and_output(local: LocalExecutor) -> None:
    result = await local.run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                               "sys.exit(3)"],
        timeout=10,
    )
    assert result == CommandResult(
        (sys.executable, "-c", result.argv[2]), 3, "out\n", "err\n"
    )
    assert not result.ok


async def test_argv_is_not_a_shell_string(local: LocalExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await local.run(["echo", f"x; touch {marker}", "$(id)"], timeout=5)
    assert result.stdout == f"x; touch {marker} $(id)\n"
    assert not marker.exists()
    with pytest.raises(TypeError):
        await local.run("echo hi", timeout=5)  # type: ignore[arg-type]


async def test_input_is_passed_on_stdin(local: LocalExecutor) -> None:
    result = await local.run(["cat"], timeout=5, input="secret on stdin\n")
    assert result.stdout == "secret on stdin\n"


async def test_check_raises_naming_host_and_command(local: LocalExecutor) -> None:
    with pytest.raises(ExecutorError) as info:
        await local.run(["sh", "-c", "echo broken include >&2; exit 1"], timeout=5, check=True)
    assert str(info.value) == (
        "local: sh -c 'echo broken include >&2; exit 1': exit status 1: broken include"
    )


async def test_missing_binary_is_an_executor_error(local: LocalExecutor) -> None:
    with pytest.raises(ExecutorError, match=r"^local: /nonexistent/nginx -t: No such file"):
        await local.run(["/nonexistent/nginx", "-t"], timeout=5)


async def test_timeout_kills_the_process_and_its_children(
    local: LocalExecutor, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=r"timed out after 0.3 s"):
        await local.run(
            ["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.3
        )
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the child of the timed-out command is still alive")


async def test_cancellation_kills_the_process(local: LocalExecutor, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(local.run(["sh", "-c", f"echo $$ > {pidfile}; sleep 30"],
                                         timeout=60))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_write_file_is_atomic_and_keeps_mode(local: LocalExecutor, tmp_path: Path) -> None:
    target = tmp_path / "upstream.conf"
    target.write_bytes(b"server a;\n")
    target.chmod(0o640)
    await local.write_file(target, b"server a down;\n")
    assert target.read_bytes() == b"server a down;\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert await local.read_file(target) == b"server a down;\n"
    await local.write_file(target, b"x", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstream.conf"]  # no temp left


async def test_write_file_replaces_by_rename(
    local: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    old_inode = target.stat().st_ino
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        assert Path(dst).read_bytes() == b"old"  # the target is untouched until the rename
        assert Path(src).read_bytes() == b"new"
        replaced.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(executors_module.os, "replace", spy)
    await local.write_file(target, b"new")
    assert len(replaced) == 1 and Path(replaced[0][0]).parent == tmp_path
    assert target.stat().st_ino != old_inode


async def test_failed_write_leaves_target_and_no_temp(
    local: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(executors_module.os, "replace", broken)
    with pytest.raises(ExecutorError, match=rf"^local: write {target}: No space left on device"):
        await local.write_file(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


async def test_read_missing_file(local: LocalExecutor, tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="No such file"):
        await local.read_file(tmp_path / "missing")


async def test_executor_from_config() -> None:
    local = executor_from_config(LocalExecutorConfig(name="local"))
    assert isinstance(local, LocalExecutor) and isinstance(local, Executor)
    ssh = executor_from_config(SshExecutorConfig(
        name="box", host="127.0.0.1", port=1, user="op", known_hosts=Path("/nonexistent"),
        connect_timeout=1.0,
    ))
    assert isinstance(ssh, SshExecutor) and isinstance(ssh, Executor)
    assert ssh.host == "op@127.0.0.1:1"
    with pytest.raises(ExecutorError, match=r"^op@127.0.0.1:1: connect: "):
        await ssh.run(["true"], timeout=2)
    await ssh.close()
    await local.close()


async def test_ssh_sftp_write_and_read_against_in_process_server(tmp_path: Path) -> None:
    """The SFTP path against asyncssh's own server (the lab's sshd covers the rest)."""
    import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(str(client_key_path))
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=authorized, sftp_factory=True,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}"
    )
    config = SshExecutorConfig(
        name="t", host="127.0.0.1", port=port, user="op", known_hosts=known_hosts,
        client_keys=(client_key_path,), connect_timeout=5.0,
    )
    ssh = SshExecutor(config)
    try:
        target = tmp_path / "data" / "upstream.conf"
        target.parent.mkdir()
        target.write_bytes(b"old")
        target.chmod(0o640)
        await ssh.write_file(str(target), b"new\x00bytes")
        assert ssh.use_sftp
        assert target.read_bytes() == b"new\x00bytes"
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        assert await ssh.read_file(str(target)) == b"new\x00bytes"
        assert [p.name for p in target.parent.iterdir()] == ["upstream.conf"]
        with pytest.raises(ExecutorError, match=r"^op@127.0.0.1:\d+: read .*missing"):
            await ssh.read_file(str(tmp_path / "missing"))
    finally:
        await ssh.close()
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- stopping, bounds


def _running(pid: int) -> bool:
    """Not exited (a zombie waiting for init to reap it has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def _assert_gone(pid: int) -> None:
    for _ in range(200):
        if not _running(pid):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"process {pid} still runs")


async def test_timeout_terms_first_then_kills_what_ignores_it(
    local: LocalExecutor, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    local.kill_grace = 0.3
    with pytest.raises(ExecutorError, match=r"timed out after 0.3 s; killed \(SIGKILL to "
                                            r"process group \d+ after 0.3 s\)"):
        await local.run(["sh", "-c", f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait"],
                        timeout=0.3)
    await _assert_gone(int(pidfile.read_text()))


async def test_timeout_stops_a_child_that_outlived_the_command(
    local: LocalExecutor, tmp_path: Path
) -> None:
    """The command exited, its background child holds its output open: the group is still
    signalled (the leader's exit does not end the stop)."""
    pidfile = tmp_path / "pid"
    with pytest.raises(ExecutorError, match=r"timed out after 0.5 s; stopped \(SIGTERM"):
        await local.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}"], timeout=0.5)
    await _assert_gone(int(pidfile.read_text()))


async def test_an_abandoned_local_write_leaves_the_file_alone(
    local: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write past its deadline (a hung disk) is abandoned before its rename."""
    target = tmp_path / "f"
    target.write_bytes(b"old")
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(executors_module.os, "fsync", slow_fsync)
    local.file_timeout = 0.2
    with pytest.raises(ExecutorError, match=r"not finished within 0.2 s; abandoned"):
        await local.write_file(target, b"new")
    release.set()
    for _ in range(200):
        if sorted(p.name for p in tmp_path.iterdir()) == ["f"]:
            break
        await asyncio.sleep(0.02)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the temp file removed
    assert target.read_bytes() == b"old"


async def test_a_peer_that_never_answers_bounds_the_connection(tmp_path: Path) -> None:
    """A listening socket that accepts (the kernel does) and never sends a banner."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        ssh = SshExecutor(SshExecutorConfig(
            name="hung", host="127.0.0.1", port=port, user="op",
            known_hosts=known_hosts, connect_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(ExecutorError, match=r"^op@127.0.0.1:\d+: connect: no answer within "
                                                r"0.5 s \(\[executors.hung\] connect_timeout\)"):
            await ssh.run(["true"], timeout=5)
        print(f"connect to a silent peer gave up after {time.monotonic() - started:.2f} s")
        await ssh.close()


class _HangingSftp:
    """An SFTP server whose open() never returns (the host hangs mid-transfer)."""

    @staticmethod
    def factory() -> type:
        import asyncssh

        class Hanging(asyncssh.SFTPServer):
            async def open(self, path: bytes, pflags: int, attrs: object) -> object:
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            async def stat(self, path: bytes) -> object:
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

        return Hanging


async def test_a_hung_sftp_transfer_is_bounded_and_the_connection_closed(
    tmp_path: Path
) -> None:
    import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(str(client_key_path))
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=authorized, sftp_factory=_HangingSftp.factory(),
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    ssh = SshExecutor(SshExecutorConfig(
        name="t", host="127.0.0.1", port=port, user="op", known_hosts=known_hosts,
        client_keys=(client_key_path,), connect_timeout=5.0))
    ssh.file_timeout = 0.3
    target = tmp_path / "upstream.conf"
    target.write_bytes(b"old")
    try:
        with pytest.raises(ExecutorError, match=r"read .*: not finished within 0.3 s; "
                                                r"connection closed$"):
            await ssh.read_file(str(target))
        assert ssh._connection is None
        with pytest.raises(ExecutorError, match=r"write .*: not finished within 0.3 s; "
                                                r"connection closed \(the file is unchanged"):
            await ssh.write_file(str(target), b"new", mode=0o644)
        assert target.read_bytes() == b"old"
        assert ssh.use_sftp  # a hang is not "no sftp subsystem"
    finally:
        await ssh.close()
        server.close()
        await server.wait_closed()


def test_run_and_file_bounds_add_up_each_step() -> None:
    local = LocalExecutor()
    assert run_bound(local, 10) == 10 + local.kill_grace + 1.0
    assert file_bound(local) == local.file_timeout
    assert cancel_bound(local) == local.kill_grace + 1.0
    ssh = SshExecutor(SshExecutorConfig(name="b", host="h", user="u", known_hosts=Path("/k"),
                                        connect_timeout=5.0))
    # connect, the deadline, reconnecting after a loss, the stop, the channel's close
    assert run_bound(ssh, 10) == 5 + 10 + 5 + ssh.stop_timeout + ssh.close_timeout
    assert run_bound(ssh, 1) == 5 + ssh.channel_timeout + 5 + ssh.stop_timeout + ssh.close_timeout
    assert file_bound(ssh) == run_bound(ssh, ssh.file_timeout)
    assert cancel_bound(ssh) == ssh.channel_timeout + ssh.stop_timeout + ssh.close_timeout

    class Other:
        host = "other"

    assert run_bound(Other(), 7) == 7  # type: ignore[arg-type]


def test_worst_case_line() -> None:
    worst = WorstCase((("drain timeout", 60.0), ("reload", 10.0), ("none", 0.0),
                       ("verify", 4.6)), "each host step ≤ 13 s")
    assert worst.seconds == pytest.approx(74.6)
    assert str(worst) == ("75 s: drain timeout 60 s + reload 10 s + verify 5 s "
                          "(each host step ≤ 13 s)")
    assert worst.check() == CheckResult.passed("worst case", str(worst))


class _FakeHost:
    """asyncssh's own server playing a host: a command reports pid 4242 behind its marker
    after ``delay`` and then runs until its channel closes (or, with ``drop``, the
    connection is cut); the stop script's target pids are recorded."""

    def __init__(self, *, delay: float = 0.0, drop: bool = False) -> None:
        self.delay, self.drop = delay, drop
        self.exec_seen = asyncio.Event()
        self.stopped: list[str] = []

    async def handle(self, process: Any) -> None:
        argv = shlex.split(process.command)
        if "sfops-stop" in argv:
            self.stopped.append(argv[argv.index("sfops-stop") + 1])
            process.stdout.write("terminated\n")
            process.exit(0)
            return
        assert argv[:3] == ["exec", "sh", "-c"]
        marker = argv[4]
        self.exec_seen.set()
        await asyncio.sleep(self.delay)
        process.stderr.write(f"{marker} 4242\n")
        if self.drop:
            await asyncio.sleep(0.2)  # the pid line goes out before the cut
            process.channel.get_connection().abort()
            return
        with contextlib.suppress(Exception):
            await process.wait_closed()


@contextlib.asynccontextmanager
async def _fake_host(tmp_path: Path, host: _FakeHost) -> AsyncIterator[SshExecutor]:
    import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(str(client_key_path))
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=authorized, process_factory=host.handle,
    )
    port = server.sockets[0].getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    ssh = SshExecutor(SshExecutorConfig(
        name="t", host="127.0.0.1", port=port, user="op", known_hosts=known_hosts,
        client_keys=(client_key_path,), connect_timeout=5.0))
    try:
        yield ssh
    finally:
        await ssh.close()
        server.close()
        await server.wait_closed()


async def test_a_cancellation_while_the_command_starts_still_stops_it(tmp_path: Path) -> None:
    """Cancelled after the host started it but before its pid arrived: the stop waits for
    the pid (within the channel timeout) and then signals the group."""
    host = _FakeHost(delay=0.3)
    async with _fake_host(tmp_path, host) as ssh:
        task = asyncio.create_task(ssh.run(["sleep", "600"], timeout=60))
        await host.exec_seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert host.stopped == ["4242"]


async def test_a_deadline_while_the_command_starts_still_stops_it(tmp_path: Path) -> None:
    host = _FakeHost(delay=0.3)
    async with _fake_host(tmp_path, host) as ssh:
        with pytest.raises(ExecutorError, match=r"timed out after 0.1 s; stopped on the host "
                                                r"\(SIGTERM to process group 4242\)"):
            await ssh.run(["sleep", "600"], timeout=0.1)
        assert host.stopped == ["4242"]


async def test_a_command_whose_connection_is_lost_is_stopped_after_a_reconnect(
    tmp_path: Path
) -> None:
    host = _FakeHost(drop=True)
    async with _fake_host(tmp_path, host) as ssh:
        with pytest.raises(ExecutorError, match=r"connection lost while it ran; stopped on "
                                                r"the host \(SIGTERM to process group 4242\)"):
            await ssh.run(["sleep", "600"], timeout=60)
        assert host.stopped == ["4242"]
