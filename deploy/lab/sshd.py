"""Lab sshd: Debian's openssh-server on loopback ports, each with its own host key, and a key-only
operator user, so the SSH executor and the end-to-end tests use real SSH: `sshd` (the hosts'
sshd) and `sshd-jump` (a bastion the lab's SSH executors reach `sshd` through)."""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.lab.core import Component, Lab, LabError, run, write_atomic

SSHD = "/usr/sbin/sshd"
USER = "sfops-lab"
# The PostgreSQL members' OS user: the SSH executor reaches a DB host as the user that owns
# the data directory, as a real deployment would (same key; the account must not be locked).
PG_USER = "postgres"
PORT_OFFSET = 20
JUMP_PORT_OFFSET = 21


def _keys(lab: Lab) -> None:
    """Both sshds' host keys, the operator's client key, authorized_keys and the lab's
    known_hosts (both host keys: sfops verifies every hop)."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError as exc:
        raise LabError(f"sshd: user {USER} does not exist; run `make install` first") from exc
    if not Path(SSHD).exists():
        raise LabError(f"sshd: {SSHD} not found; run `make install` (openssh-server)")
    ssh_dir = lab.path("ssh")
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o755)  # noqa: S103 - sshd reads authorized_keys as the user
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    client_key = ssh_dir / "id_ed25519"
    keys = [(client_key, "sfops-lab-operator")]
    keys += [(ssh_dir / daemon.host_key_name, daemon.host_key_comment) for daemon in SSHDS]
    for key, comment in keys:
        if not key.exists():
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                what=f"sshd: ssh-keygen {key.name}",
            )
    # The operator's private key belongs to the operator (sfops over SSH runs as them).
    os.chown(client_key, entry.pw_uid, entry.pw_gid)
    os.chmod(client_key, 0o600)
    write_atomic(ssh_dir / "authorized_keys", (ssh_dir / "id_ed25519.pub").read_text())
    lines = []
    for daemon in SSHDS:
        host_pub = (ssh_dir / f"{daemon.host_key_name}.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{lab.port(daemon.port_offset)} {host_pub[0]} {host_pub[1]}\n")
    write_atomic(ssh_dir / "known_hosts", "".join(lines))


class Sshd(Component):
    """The lab's DB/app host sshd: users sfops-lab and postgres, commands and SFTP."""

    name = "sshd"
    group = "sshd"
    ready_timeout = 15.0
    port_offset = PORT_OFFSET
    host_key_name = "host_ed25519"
    host_key_comment = "sfops-lab-host"
    config_name = "sshd_config"

    def dir(self, lab: Lab) -> Path:
        return lab.path("ssh")

    def ports(self, lab: Lab) -> Sequence[int]:
        return (lab.port(self.port_offset),)

    def prepare(self, lab: Lab) -> None:
        _keys(lab)
        ssh_dir = self.dir(lab)
        write_atomic(ssh_dir / self.config_name, "\n".join(
            [
                f"Port {lab.port(self.port_offset)}",
                "ListenAddress 127.0.0.1",
                f"HostKey {ssh_dir / self.host_key_name}",
                f"PidFile {ssh_dir / (self.name + '.pid')}",
                f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}",
                "PermitRootLogin no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                # The lab directory may live under /tmp (tests), whose sticky world-writable
                # mode StrictModes rejects; the key files themselves are 0600/0644.
                "StrictModes no",
                "X11Forwarding no",
                "PrintMotd no",
                "ClientAliveInterval 5",
                "ClientAliveCountMax 3",
                *self.policy(lab),
                "",
            ]
        ))

    def policy(self, lab: Lab) -> list[str]:
        return [
            f"AllowUsers {USER} {PG_USER}",
            # The SSH executor moves files over SFTP (atomic rename on the host).
            "Subsystem sftp internal-sftp",
            "AcceptEnv LANG LC_* TERM NO_COLOR COLORTERM",
        ]

    def argv(self, lab: Lab) -> list[str]:
        return [SSHD, "-D", "-e", "-f", str(self.dir(lab) / self.config_name)]

    def ready(self, lab: Lab) -> bool:
        with socket.create_connection(("127.0.0.1", lab.port(self.port_offset)),
                                      timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-2.0")


class JumpSshd(Sshd):
    """A bastion: the lab's SSH executors reach ``sshd`` through it (sfops verifies its host
    key too). It forwards only to ``sshd``'s port and runs no commands, as a locked-down
    jump host would."""

    name = "sshd-jump"
    port_offset = JUMP_PORT_OFFSET
    host_key_name = "host_jump_ed25519"
    host_key_comment = "sfops-lab-jump-host"
    config_name = "sshd_config_jump"

    def policy(self, lab: Lab) -> list[str]:
        return [
            f"AllowUsers {USER}",
            "AllowTcpForwarding local",
            f"PermitOpen 127.0.0.1:{lab.port(PORT_OFFSET)}",
            "PermitTTY no",
            "ForceCommand /bin/false",
        ]


SSHDS: list[Sshd] = [Sshd(), JumpSshd()]
COMPONENTS: list[Component] = list(SSHDS)


def sfops_config(lab: Lab) -> dict[str, Any]:
    ssh_dir = lab.path("ssh")

    def executor(user: str, port_offset: int = PORT_OFFSET,
                 jump: list[str] | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "ssh",
            "host": "127.0.0.1",
            "port": lab.port(port_offset),
            "user": user,
            "client_keys": [str(ssh_dir / "id_ed25519")],
            "known_hosts": str(ssh_dir / "known_hosts"),
            "connect_timeout": 5.0,
        }
        if jump:
            entry["jump"] = jump
        return entry

    return {
        "executors": {
            # The bastion; every other lab executor goes through it (a jump-host chain with
            # host keys verified at each hop is the lab's default path).
            "lab-jump": executor(USER, JUMP_PORT_OFFSET),
            "lab-ssh": executor(USER, jump=["lab-jump"]),
            # The PostgreSQL members' host steps (pg_ctl, standby.signal) as their os_user.
            "lab-ssh-postgres": executor(PG_USER, jump=["lab-jump"]),
        }
    }
