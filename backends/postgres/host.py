"""Host-level steps on one member through its executor: pg_ctl, pg_controldata, pg_rewind,
``standby.signal`` and the recovery settings in ``postgresql.auto.conf``.

Every command runs as the member's ``os_user`` (PostgreSQL refuses to run as root, and files
it must read are created by that user, with its umask). The executor runs argv lists, never
shell strings; the ``sh -c`` scripts used here are constants that take paths as
positional arguments. Passwords travel on stdin into a 0600 passfile, never on a command line.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from psycopg.conninfo import make_conninfo

from backends.config import ExecutorConfig, SshExecutorConfig
from backends.executors import CommandResult, Executor, ExecutorError
from backends.postgres.config import PostgresMember

# The configuration files pg_rewind would overwrite with the source's copies (carrying the
# source's port, socket directory, cluster_name...): kept aside and put back (Patroni does
# the same).
CONFIG_FILES = ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf")
RECOVERY_KEYS = ("primary_conninfo", "primary_slot_name")
CLEAN_STATES = ("shut down", "shut down in recovery")

# Atomic write as the target user: temp file in the same directory, then rename.
_WRITE_SCRIPT = 'umask 077; cat > "$1.sfops-tmp" && mv -f "$1.sfops-tmp" "$1"'

# How long kill_server waits for a SIGKILLed server's processes to exit. It normally takes
# milliseconds; only a process in uninterruptible I/O (a hung NFS or disk) takes longer, and
# the SIGKILL already forbids it to run again, so waiting longer would prove nothing more.
KILL_WAIT_SECONDS = 5

# kill_server's script (constant; $1 the data directory, $2 seconds to wait). Prints "none"
# (no server runs from $1), "killed PID" (exit 0: all exited; exit 4: SIGKILLed, not all
# exited yet), or why it could not (exit 3: cannot tell which process is the server, 5: kill
# failed). /proc/PID/stat after "comm) " reads: state ppid pgrp ...; Z/X is exited. Every
# postmaster child calls setsid() (a group of its own), so the postmaster's process group is
# not the server: its descendants are found by parent pid, each one stopped as soon as it is
# found (a stopped process forks nothing), until a scan finds no new one; then all die.
_KILL_SCRIPT = r"""
dir=$1 limit=$2
fields() { read -r line < "/proc/$1/stat" && echo "${line##*") "}"; } 2>/dev/null
alive() { case $(fields "$1") in ''|Z*|X*) return 1;; esac; }
descendants() {
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null < "$f" || continue
        set -- ${line##*") "}
        p=${f#/proc/}; echo "${p%/stat} $2"
    done | awk -v root="$pid" '{ parent[$1] = $2 } END {
        found[root] = 1
        do { more = 0
             for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; more = 1 }
        } while (more)
        for (p in found) if (p != root) print p }'
}
[ -r /proc/self/stat ] || { echo "no /proc on this host: cannot identify the postmaster"; exit 3; }
pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null)
case $pid in ''|*[!0-9]*) echo none; exit 0;; esac
alive "$pid" || { echo none; exit 0; }
here=$(cd "$dir" && pwd -P) || { echo "cannot resolve $dir"; exit 3; }
if cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null); then
    [ "$cwd" = "$here" ] || { echo none; exit 0; }
else
    alive "$pid" || { echo none; exit 0; }
    started=$(sed -n 3p "$dir/postmaster.pid")
    set -- $(fields "$pid")
    since=$(( $(awk '/^btime/ { print $2 }' /proc/stat) + ${20} / $(getconf CLK_TCK) ))
    case $started in ''|*[!0-9]*) started=0;; esac
    if [ $((since - started)) -gt 5 ] || [ $((started - since)) -gt 5 ]; then
        echo "pid $pid: cannot read its working directory and it did not start when" \
             "postmaster.pid says (started $since, file $started): cannot tell it is the server"
        exit 3
    fi
fi
kill -s STOP "$pid" || { echo "kill -STOP $pid failed"; exit 5; }
stopped="" rounds=0
while [ "$rounds" -lt 20 ]; do
    new=""
    for c in $(descendants); do
        case " $stopped " in *" $c "*) ;; *) new="$new $c" ;; esac
    done
    [ -z "$new" ] && break
    kill -s STOP $new 2>/dev/null
    stopped="$stopped$new" rounds=$((rounds + 1))
done
set -- $(fields "$pid")
if [ "$3" = "$pid" ]; then kill -s KILL -- "-$pid" 2>/dev/null; fi
kill -s KILL "$pid" 2>/dev/null || ! alive "$pid" || { echo "kill of pid $pid failed"; exit 5; }
[ -n "$stopped" ] && kill -s KILL $stopped 2>/dev/null
n=0
for p in $pid $stopped; do
    while alive "$p"; do
        [ "$n" -ge $((limit * 20)) ] && { echo "killed $pid"; exit 4; }
        sleep 0.05; n=$((n + 1))
    done
done
echo "killed $pid"
"""


REWIND_SERVICE = "sfops-rewind"


@dataclass(frozen=True)
class RewindSource:
    """How pg_rewind on a member's host reaches the source server: a conninfo with neither
    a secret nor a path on sfops's host (host, port, user, dbname, connect_timeout, sslmode),
    the passfile line, the files to copy to the member's host for the run (conninfo keyword
    → a file on sfops's host: sslrootcert, sslcert, sslkey), settings passed as they are
    (``sslrootcert=system``) and a client key's passphrase."""

    conninfo: str
    passfile_text: str
    files: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    sslpassword: str | None = None

    def __repr__(self) -> str:  # never the password or the passphrase
        return f"RewindSource({self.conninfo!r}, files={sorted(self.files)})"


class HostError(Exception):
    """A host step failed; names the member and the command."""


class Killed(NamedTuple):
    """What :meth:`MemberHost.kill_server` did: the postmaster's pid, and whether it had
    exited when the wait ended."""

    pid: str
    exited: bool


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def quote_setting(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def passfile_line(host: str, port: int, user: str, password: str) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(host)}:{port}:*:{esc(user)}:{esc(password)}\n"


def with_recovery_settings(auto_conf: str, settings: dict[str, str]) -> str:
    """``postgresql.auto.conf`` text with ``settings`` replacing any earlier values."""
    keys = "|".join(re.escape(k) for k in settings)
    pattern = re.compile(rf"^\s*({keys})\s*=")
    lines = [line for line in auto_conf.splitlines() if not pattern.match(line)]
    if not lines:
        lines = ["# Do not edit this file manually!",
                 "# It will be overwritten by the ALTER SYSTEM command."]
    lines += [f"{key} = {quote_setting(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def parse_controldata(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


class MemberHost:
    def __init__(self, member: PostgresMember, executor: Executor,
                 executor_config: ExecutorConfig | None = None) -> None:
        if member.data_dir is None:
            raise HostError(f"{member.name}: no data_dir configured; host steps impossible")
        self.member = member
        self.name = member.name
        self.executor = executor
        self.data_dir = PurePosixPath(str(member.data_dir))
        self.bin_dir = PurePosixPath(str(member.bin_dir)) if member.bin_dir else None
        self._prefix = self._user_prefix(executor_config)

    def _user_prefix(self, config: ExecutorConfig | None) -> list[str]:
        os_user = self.member.os_user
        if not os_user:
            return []
        if isinstance(config, SshExecutorConfig):
            return [] if config.user == os_user else ["sudo", "-n", "-u", os_user, "--"]
        if _current_user() == os_user:
            return []
        if os.geteuid() == 0:
            return ["runuser", "-u", os_user, "--"]
        return ["sudo", "-n", "-u", os_user, "--"]

    @property
    def command_prefix(self) -> tuple[str, ...]:
        """What every command on this host runs under (``sudo -n -u os_user --``, or none)."""
        return tuple(self._prefix)

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name) if self.bin_dir else name

    @property
    def log_file(self) -> str:
        return str(self.data_dir.parent / f"{self.name}.postgres.log")

    def path(self, name: str) -> str:
        return str(self.data_dir / name)

    async def run(self, argv: Sequence[str], *, timeout: float = 60.0,  # noqa: ASYNC109
                  input: str | None = None, check: bool = True) -> CommandResult:
        try:
            return await self.executor.run([*self._prefix, *argv], timeout=timeout,
                                           input=input, check=check)
        except ExecutorError as exc:
            raise HostError(f"{self.name}: {exc}") from None

    async def reachable(self) -> str | None:
        """None when commands run on the member's host, else why not."""
        try:
            await self.executor.run(["true"], timeout=10.0, check=True)
        except ExecutorError as exc:
            return str(exc)
        return None

    # -- files ---------------------------------------------------------------------------
    async def read_text(self, path: str) -> str | None:
        result = await self.run(["cat", path], check=False, timeout=15.0)
        return result.stdout if result.ok else None

    async def write_text(self, path: str, text: str) -> None:
        await self.run(["sh", "-c", _WRITE_SCRIPT, "sh", path], input=text, timeout=15.0)

    async def remove(self, path: str) -> None:
        await self.run(["rm", "-f", path], timeout=15.0)

    async def exists(self, path: str) -> bool:
        return (await self.run(["test", "-e", path], check=False, timeout=15.0)).ok

    async def write_standby_signal(self) -> None:
        await self.run(["touch", self.path("standby.signal")], timeout=15.0)

    async def remove_standby_signal(self) -> None:
        await self.remove(self.path("standby.signal"))

    # -- server process ------------------------------------------------------------------
    async def running(self) -> bool:
        result = await self.run([self.binary("pg_ctl"), "status", "-D", str(self.data_dir)],
                                check=False, timeout=15.0)
        return result.exit_status == 0

    async def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:  # noqa: ASYNC109
        if not await self.running():
            return
        await self.run([self.binary("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode,
                        "-w", "-t", str(int(timeout))], timeout=timeout + 10)

    async def kill_server(self, wait_seconds: int = KILL_WAIT_SECONDS) -> Killed | None:
        """SIGKILL the server running from this data directory and wait up to
        ``wait_seconds`` for its processes to exit (fencing a former primary before a
        promotion). None when no server runs from it.

        The postmaster and every descendant (backends, workers, an archive_command's shell)
        are SIGSTOPped as they are found, so none forks a process the kill would miss, then
        SIGKILLed. SIGKILL ends a SIGSTOPped process too and cannot be caught or undone: from
        then on none of them runs another instruction, even if it is resumed or still in
        uninterruptible I/O.

        The pid in ``postmaster.pid`` is trusted only when that process's working directory
        is this data directory (the postmaster changes into it at start): a stale file whose
        pid now belongs to another process means no server runs here, and that process is
        left alone. Where the working directory cannot be read (a server whose group differs
        from ``os_user``'s, as the lab's), the process must have started within 5 s of the
        start time ``postmaster.pid`` records, else this fails rather than guess. Reading
        either needs ``/proc`` (Linux); without it this fails."""
        result = await self.run(["sh", "-c", _KILL_SCRIPT, "sh", str(self.data_dir),
                                 str(int(wait_seconds))],
                                timeout=wait_seconds + 10.0, check=False)
        words = result.stdout.split()
        if result.exit_status == 0 and words == ["none"]:
            return None
        if result.exit_status in (0, 4) and len(words) >= 2 and words[0] == "killed":
            return Killed(pid=words[1], exited=result.exit_status == 0)
        detail = " / ".join(line.strip() for line in (result.stdout + result.stderr)
                            .splitlines() if line.strip())
        raise HostError(f"{self.name}: could not kill the server of {self.data_dir} "
                        f"(exit {result.exit_status}): {detail or 'no output'}")

    async def start(self) -> None:
        """Start without waiting (a standby is not "ready" until it has caught up); the
        caller probes readiness itself."""
        await self.run([self.binary("pg_ctl"), "start", "-D", str(self.data_dir), "-l",
                        self.log_file, "-W"], timeout=30.0)

    async def log_tail(self, lines: int = 5) -> str:
        result = await self.run(["tail", "-n", str(lines), self.log_file], check=False)
        return " / ".join(line.strip() for line in result.stdout.splitlines() if line.strip())

    async def controldata(self) -> dict[str, str]:
        result = await self.run(["env", "LC_ALL=C", self.binary("pg_controldata"), "-D",
                                 str(self.data_dir)], timeout=15.0)
        return parse_controldata(result.stdout)

    # -- recovery configuration ----------------------------------------------------------
    async def set_recovery(self, settings: dict[str, str]) -> None:
        path = self.path("postgresql.auto.conf")
        current = await self.read_text(path) or ""
        await self.write_text(path, with_recovery_settings(current, settings))

    async def save_config_files(self) -> dict[str, str]:
        saved: dict[str, str] = {}
        for name in CONFIG_FILES:
            text = await self.read_text(self.path(name))
            if text is not None:
                saved[name] = text
        return saved

    async def restore_config_files(self, saved: dict[str, str]) -> None:
        for name, text in saved.items():
            await self.write_text(self.path(name), text)

    async def rewind(self, source: RewindSource,
                     timeout: float = 600.0) -> str:  # noqa: ASYNC109
        """pg_rewind from a running source. The password goes into a temporary 0600 passfile
        beside the data directory; the CA and a client certificate and key (files on sfops's
        host) are copied there too, as this member's ``os_user`` with umask 077 (libpq
        refuses a key anyone else may read); a key passphrase goes into a temporary service
        file (libpq takes it from a conninfo or a service file only: never a command line).
        All are removed afterwards."""
        stem = str(self.data_dir.parent / f".{self.name}.sfops-rewind")
        written: list[str] = []
        extra: dict[str, str] = dict(source.settings)
        prefix: list[str] = []
        try:
            written.append(f"{stem}.pgpass")
            await self.write_text(f"{stem}.pgpass", source.passfile_text)
            extra["passfile"] = f"{stem}.pgpass"
            for keyword, local in source.files.items():
                text = await asyncio.to_thread(Path(local).read_text, encoding="utf-8")
                written.append(f"{stem}.{keyword}")
                await self.write_text(f"{stem}.{keyword}", text)
                extra[keyword] = f"{stem}.{keyword}"
            if source.sslpassword is not None:
                written.append(f"{stem}.service")
                await self.write_text(f"{stem}.service",
                                      f"[{REWIND_SERVICE}]\nsslpassword={source.sslpassword}\n")
                extra["service"] = REWIND_SERVICE
                prefix = ["env", f"PGSERVICEFILE={stem}.service"]
            result = await self.run(
                [*prefix, self.binary("pg_rewind"), "--target-pgdata", str(self.data_dir),
                 "--source-server", make_conninfo(source.conninfo, **extra)],
                timeout=timeout, check=False)
        finally:
            if written:
                await self.run(["rm", "-f", *written], timeout=15.0)
        output = (result.stdout + result.stderr).strip()
        if not result.ok:
            tail = " / ".join(output.splitlines()[-3:])
            raise HostError(f"{self.name}: pg_rewind failed (exit {result.exit_status}): {tail}")
        return output
