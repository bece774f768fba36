"""SshExecutor against the lab's real sshd (Debian openssh-server, key-only user sfops-lab)."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from backends.config import SshExecutorConfig
from backends.executors import ExecutorError, SshExecutor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ssh_config(lab: Any) -> SshExecutorConfig:
    lab.ensure("sshd")
    executor = lab.config().executors["lab-ssh"]
    assert isinstance(executor, SshExecutorConfig)
    return executor


@pytest.fixture
async def ssh(ssh_config: SshExecutorConfig) -> AsyncIterator[SshExecutor]:
    executor = SshExecutor(ssh_config)
    yield executor
    await executor.close()


@pytest.fixture
async def remote_dir(ssh: SshExecutor) -> AsyncIterator[str]:
    result = await ssh.run(["mktemp", "-d", "/tmp/sfops-ssh-test.XXXXXX"], timeout=10,
                           check=True)
    path = result.stdout.strip()
    yield path
    await ssh.run(["rm", "-rf", path], timeout=10)


async def test_runs_argv_as_the_lab_user_without_shell_injection(
    ssh: SshExecutor, ssh_config: SshExecutorConfig
) -> None:
    result = await ssh.run(["whoami"], timeout=10)
    assert result.ok and result.stdout.strip() == ssh_config.user
    tricky = ["printf", "%s|", "a b", "$(id)", "x; echo pwned", "it's", "*"]
    result = await ssh.run(tricky, timeout=10)
    assert result.stdout == "a b|$(id)|x; echo pwned|it's|*|"


async def test_exit_status_stderr_and_stdin(ssh: SshExecutor) -> None:
    result = await ssh.run(["sh", "-c", "cat; echo oops >&2; exit 4"], timeout=10,
                           input="from stdin\n")
    assert (result.exit_status, result.stdout, result.stderr) == (4, "from stdin\n", "oops\n")
    with pytest.raises(ExecutorError, match=r"sh -c 'exit 2': exit status 2"):
        await ssh.run(["sh", "-c", "exit 2"], timeout=10, check=True)


async def test_timeout_then_connection_still_usable(ssh: SshExecutor) -> None:
    with pytest.raises(ExecutorError, match=r"timed out after 0\.5 s"):
        await ssh.run(["sleep", "30"], timeout=0.5)
    assert (await ssh.run(["echo", "alive"], timeout=10)).stdout == "alive\n"


async def test_connection_is_reused_and_reopened_after_a_drop(ssh: SshExecutor) -> None:
    await ssh.run(["true"], timeout=10)
    first = ssh._connection
    await ssh.run(["true"], timeout=10)
    assert ssh._connection is first
    assert first is not None
    first.close()  # the link drops
    await first.wait_closed()
    assert (await ssh.run(["echo", "back"], timeout=10)).stdout == "back\n"
    assert ssh._connection is not first


@pytest.mark.parametrize("use_sftp", [True, False], ids=["sftp", "shell"])
async def test_atomic_write_and_read(ssh: SshExecutor, remote_dir: str, use_sftp: bool) -> None:
    ssh.use_sftp = use_sftp
    if use_sftp:
        try:
            async with (await ssh._connect()).start_sftp_client():
                pass
        except asyncssh.ChannelOpenError:
            pytest.skip("the lab sshd offers no sftp subsystem (Subsystem sftp internal-sftp)")
    path = f"{remote_dir}/upstream.conf"
    await ssh.write_file(path, b"server 127.0.0.1:1;\n", mode=0o640)
    assert await ssh.read_file(path) == b"server 127.0.0.1:1;\n"
    mode = (await ssh.run(["stat", "-c", "%a", path], timeout=10)).stdout.strip()
    assert mode == "640"
    inode = (await ssh.run(["stat", "-c", "%i", path], timeout=10)).stdout
    await ssh.write_file(path, b"server 127.0.0.1:1 down;\n")  # keeps the mode
    assert await ssh.read_file(path) == b"server 127.0.0.1:1 down;\n"
    assert (await ssh.run(["stat", "-c", "%a", path], timeout=10)).stdout.strip() == "640"
    assert (await ssh.run(["stat", "-c", "%i", path], timeout=10)).stdout != inode  # renamed
    listing = (await ssh.run(["ls", "-A", remote_dir], timeout=10)).stdout.split()
    assert listing == ["upstream.conf"]  # no temp file left behind
    assert ssh.use_sftp is use_sftp
    await ssh.write_file(f"{remote_dir}/binary", bytes(range(256)))
    assert await ssh.read_file(f"{remote_dir}/binary") == bytes(range(256))
    with pytest.raises(ExecutorError, match=r"read .*/missing"):
        await ssh.read_file(f"{remote_dir}/missing")
    with pytest.raises(ExecutorError, match=r"write /nonexistent-dir/x"):
        await ssh.write_file("/nonexistent-dir/x", b"x")


async def test_unknown_host_key_is_rejected_never_accepted(
    ssh_config: SshExecutorConfig, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    wrong = tmp_path / "known_hosts_wrong"
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    wrong.write_text(f"[{ssh_config.host}]:{ssh_config.port} {other_key}")
    for known_hosts in (empty, wrong):
        executor = SshExecutor(dataclasses.replace(ssh_config, known_hosts=known_hosts))
        with pytest.raises(ExecutorError, match=r": connect: host key not verified"):
            await executor.run(["true"], timeout=10)
        await executor.close()
    assert empty.read_text() == ""  # nothing was learned


async def test_wrong_client_key_is_refused(ssh_config: SshExecutorConfig, tmp_path: Path) -> None:
    key = tmp_path / "id_other"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    key.chmod(stat.S_IRUSR | stat.S_IWUSR)
    executor = SshExecutor(dataclasses.replace(ssh_config, client_keys=(key,)))
    with pytest.raises(ExecutorError, match=r": connect: authentication failed"):
        await executor.run(["true"], timeout=10)
    await executor.close()
