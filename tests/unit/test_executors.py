from __future__ import annotations

import asyncio
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from backends import executors as executors_module
from backends.config import LocalExecutorConfig, SshExecutorConfig
from backends.executors import (
    CommandResult,
    Executor,
    ExecutorError,
    LocalExecutor,
    SshExecutor,
    executor_from_config,
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
