"""SshExecutor against the lab's real sshd (Debian openssh-server, key-only user sfops-lab)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from backends.config import SshExecutorConfig
from backends.executors import ExecutorError, SshExecutor
from deploy.lab import procs

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


# --------------------------------------------------------------------------- remote steps stop
#
# The lab's sshd runs on this machine, so "on the host" is /proc here: a process counts as
# running until it has exited (a zombie waiting for init to reap it does not count).


def _command_that_hangs(marker: str, pidfile: str, *, ignore_term: bool = False) -> list[str]:
    """A shell (its command line carries ``marker``) and a background child that both sleep;
    their pids go to ``pidfile``. With ``ignore_term`` both ignore SIGTERM."""
    script = ("trap '' TERM; " if ignore_term else "") + (
        'sleep 600 & echo $! > "$1"; echo $$ >> "$1"; wait')
    return ["sh", "-c", script, marker, pidfile]


def _marked(marker: str) -> list[int]:
    """Running processes whose command line contains ``marker`` (pgrep, on the host)."""
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True,
                           check=False).stdout.split()
    return [pid for pid in map(int, found) if procs.pid_running(pid)]


async def _pids_from(pidfile: Path) -> list[int]:
    for _ in range(500):
        lines = pidfile.read_text().split() if pidfile.exists() else []
        if len(lines) == 2:
            return [int(pid) for pid in lines]
        await asyncio.sleep(0.02)
    pytest.fail(f"the remote command never wrote its pids to {pidfile}")


async def _assert_stopped(pids: list[int], marker: str) -> None:
    """Everything the command started is gone: its pids and anything carrying its marker.
    (Polled: init may take a moment to reap the orphaned child.)"""
    for _ in range(200):
        running = [pid for pid in pids if procs.pid_running(pid)] + _marked(marker)
        if not running:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"still running on the host after the stop: {running}")


async def test_a_command_past_its_deadline_is_stopped_on_the_host(
    ssh: SshExecutor, remote_dir: str
) -> None:
    marker = f"sfops-test-{uuid.uuid4().hex}"
    pidfile = f"{remote_dir}/pids"
    with pytest.raises(ExecutorError, match=r"timed out after 1 s; stopped on the host "
                                            r"\(SIGTERM to process group \d+\)"):
        await ssh.run(_command_that_hangs(marker, pidfile), timeout=1)
    pids = await _pids_from(Path(pidfile))
    await _assert_stopped(pids, marker)
    assert (await ssh.run(["echo", "alive"], timeout=10)).stdout == "alive\n"


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace(
    ssh: SshExecutor, remote_dir: str
) -> None:
    marker = f"sfops-test-{uuid.uuid4().hex}"
    pidfile = f"{remote_dir}/pids"
    ssh.kill_grace = 0.5
    with pytest.raises(ExecutorError, match=r"timed out after 1 s; killed on the host "
                                            r"\(SIGKILL to process group \d+ after 0.5 s\)"):
        await ssh.run(_command_that_hangs(marker, pidfile, ignore_term=True), timeout=1)
    await _assert_stopped(await _pids_from(Path(pidfile)), marker)


async def test_cancelling_a_remote_command_stops_it_on_the_host(
    ssh: SshExecutor, remote_dir: str
) -> None:
    marker = f"sfops-test-{uuid.uuid4().hex}"
    pidfile = f"{remote_dir}/pids"
    task = asyncio.create_task(ssh.run(_command_that_hangs(marker, pidfile), timeout=600))
    pids = await _pids_from(Path(pidfile))
    assert all(procs.pid_running(pid) for pid in pids) and _marked(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_stopped(pids, marker)
    assert (await ssh.run(["echo", "alive"], timeout=10)).stdout == "alive\n"


async def test_a_caller_timeout_around_the_command_stops_it_too(
    ssh: SshExecutor, remote_dir: str
) -> None:
    """What the actions do: the executor's run inside their own (shorter) timeout."""
    marker = f"sfops-test-{uuid.uuid4().hex}"
    pidfile = f"{remote_dir}/pids"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await ssh.run(_command_that_hangs(marker, pidfile), timeout=600)
    await _assert_stopped(await _pids_from(Path(pidfile)), marker)


async def test_exit_status_stderr_and_signal_are_kept_through_the_wrapper(
    ssh: SshExecutor,
) -> None:
    """Its pid line is not part of its stderr; its own stderr and exit status are kept."""
    result = await ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    result = await ssh.run(["sh", "-c", "kill -TERM $$"], timeout=10)
    assert result.exit_status == -15  # killed by a signal, as locally


def _sshd_family(lab: Any) -> set[procs.ProcessId]:
    """The lab sshd's per-connection processes and what they run (not the listener)."""
    master = lab.pid("sshd")
    assert master is not None
    root = procs.identify(master)
    assert root is not None
    return procs.family([root], None) - {root}


async def test_a_hung_host_bounds_commands_and_transfers(
    ssh: SshExecutor, lab: Any, remote_dir: str
) -> None:
    """Every process serving the open connection is SIGSTOPped (the host hangs): a command
    and a file transfer each end within their bound, the connection is closed, and the next
    call, on a new connection, works."""
    ssh.channel_timeout = ssh.stop_timeout = ssh.file_timeout = 1.0
    path = f"{remote_dir}/f"
    await ssh.write_file(path, b"before")
    for step in ("run", "read", "write"):
        await ssh.run(["true"], timeout=10)  # a live connection to hang
        hung = _sshd_family(lab)
        procs.send(hung, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(ExecutorError) as info:
                if step == "run":
                    await ssh.run(["true"], timeout=30)
                elif step == "read":
                    await ssh.read_file(path)
                else:
                    await ssh.write_file(path, b"after")
        finally:
            procs.send(hung, signal.SIGCONT)
        print(f"hung host, {step}: {info.value.detail} after {time.monotonic() - started:.2f} s")
        assert ("no answer within 1 s" in info.value.detail
                or "not finished within 1 s" in info.value.detail)
        assert "connection closed" in info.value.detail
        assert ssh._connection is None
    assert await ssh.read_file(path) == b"before"  # the abandoned write changed nothing


# --------------------------------------------------------------------------- the jump host
#
# The lab's SSH executors reach `sshd` through `sshd-jump` (executor lab-jump): a bastion that
# forwards to sshd's port only and runs no command. Every test above already went through it.


def _jump_logins(lab: Any) -> int:
    path = lab.lab.log_path("sshd-jump")
    return path.read_text(errors="replace").count("Accepted publickey") if path.exists() else 0


async def test_the_lab_executor_reaches_its_host_through_the_jump_host(
    ssh_config: SshExecutorConfig, lab: Any
) -> None:
    assert ssh_config.jump == ("lab-jump",)
    assert [(hop.name, hop.port) for hop in ssh_config.route] == [("lab-jump", lab.port(21))]
    assert ssh_config.connect_bound == sum(h.connect_timeout for h in ssh_config.route) + \
        ssh_config.connect_timeout
    before = _jump_logins(lab)
    executor = SshExecutor(ssh_config)
    try:
        assert (await executor.run(["whoami"], timeout=10)).stdout.strip() == ssh_config.user
    finally:
        await executor.close()
    assert _jump_logins(lab) == before + 1  # one login at the bastion, then the host


async def test_the_jump_host_runs_no_command_itself(lab: Any) -> None:
    """The bastion only forwards (ForceCommand /bin/false, PermitOpen sshd's port)."""
    jump = lab.config().executors["lab-jump"]
    executor = SshExecutor(jump)
    try:
        result = await executor.run(["echo", "hello"], timeout=10)
    finally:
        await executor.close()
    assert result.exit_status != 0 and "hello" not in result.stdout


async def test_an_unknown_jump_host_key_is_refused_and_nothing_runs(
    ssh_config: SshExecutorConfig, tmp_path: Path, lab: Any
) -> None:
    jump = ssh_config.route[0]
    lines = Path(jump.known_hosts).read_text().splitlines()
    without_jump = tmp_path / "known_hosts_without_jump"
    without_jump.write_text("".join(f"{line}\n" for line in lines
                                    if f"]:{jump.port} " not in line))
    assert without_jump.read_text().count("\n") == 1  # the host's key is still there
    config = dataclasses.replace(
        ssh_config, route=(dataclasses.replace(jump, known_hosts=without_jump),))
    marker = f"/tmp/sfops-jump-marker-{uuid.uuid4().hex}"
    executor = SshExecutor(config)
    with pytest.raises(ExecutorError) as info:
        await executor.run(["touch", marker], timeout=10)
    await executor.close()
    message = str(info.value)
    print(message)
    assert message.startswith(f"{executor.host}: connect via jump host lab-jump "
                              f"(sfops-lab@127.0.0.1:{jump.port}): host key not verified")
    assert f"[executors.lab-jump] known_hosts = {without_jump}" in message
    assert not Path(marker).exists()
    assert without_jump.read_text().count("\n") == 1  # nothing was learned


async def test_an_unknown_host_key_behind_the_jump_host_names_the_host(
    ssh_config: SshExecutorConfig, tmp_path: Path
) -> None:
    """The jump host verified, the host behind it not: the error is the host's own."""
    lines = Path(ssh_config.known_hosts).read_text().splitlines()
    without_host = tmp_path / "known_hosts_without_host"
    without_host.write_text("".join(f"{line}\n" for line in lines
                                    if f"]:{ssh_config.port} " not in line))
    executor = SshExecutor(dataclasses.replace(ssh_config, known_hosts=without_host))
    with pytest.raises(ExecutorError, match=r": connect: host key not verified .*"
                       r"\[executors.lab-ssh\] known_hosts"):
        await executor.run(["true"], timeout=10)
    await executor.close()


async def test_a_hung_jump_host_is_bounded_by_its_own_connect_timeout(
    ssh_config: SshExecutorConfig, lab: Any
) -> None:
    """A SIGSTOPped bastion accepts TCP (the kernel does) and says nothing: the hop's
    connect_timeout ends the attempt, and the error names that key."""
    jump = dataclasses.replace(ssh_config.route[0], connect_timeout=1.0)
    executor = SshExecutor(dataclasses.replace(ssh_config, route=(jump,)))
    master = lab.pid("sshd-jump")
    assert master is not None
    os.kill(master, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ExecutorError, match=r"connect via jump host lab-jump .*: no answer "
                           r"within 1 s \(\[executors.lab-jump\] connect_timeout\)"):
            await executor.run(["true"], timeout=10)
        print(f"hung jump host: gave up after {time.monotonic() - started:.2f} s")
    finally:
        os.kill(master, signal.SIGCONT)
        await executor.close()
    again = SshExecutor(ssh_config)
    try:
        assert (await again.run(["true"], timeout=10)).ok
    finally:
        await again.close()


async def test_a_host_lock_is_held_through_the_jump_host(
    ssh: SshExecutor, ssh_config: SshExecutorConfig, remote_dir: str
) -> None:
    """The flock process of a host lock (backends/locks.py) runs on the host behind the jump
    host; while it holds the file, nobody else can lock it there."""
    from backends.locks import Holder, HostFlockLocks, HostLockFile, LockKey

    path = f"{remote_dir}/.data.sfops-lock"
    key = LockKey("jump-test", "jump test", (HostLockFile(ssh_config, path, label="host"),))
    grant = await HostFlockLocks().acquire(key, Holder("tester", "here", "test.lock"))
    try:
        busy = await ssh.run(["flock", "-n", path, "true"], timeout=10)
        assert busy.exit_status != 0  # held on the host
        assert "tester@here" in (await ssh.read_file(path)).decode()
    finally:
        await grant.release()
    assert (await ssh.run(["flock", "-n", path, "true"], timeout=10)).ok
