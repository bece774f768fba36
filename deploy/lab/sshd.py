"""Lab sshd: Debian's openssh-server on a loopback port with its own host key and a key-only
operator user, so the SSH executor and the end-to-end tests use real SSH."""

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


class Sshd(Component):
    name = "sshd"
    group = "sshd"
    ready_timeout = 15.0

    def dir(self, lab: Lab) -> Path:
        return lab.path("ssh")

    def ports(self, lab: Lab) -> Sequence[int]:
        return (lab.port(PORT_OFFSET),)

    def prepare(self, lab: Lab) -> None:
        try:
            entry = pwd.getpwnam(USER)
        except KeyError as exc:
            raise LabError(f"sshd: user {USER} does not exist; run `make install` first") from exc
        if not Path(SSHD).exists():
            raise LabError(f"sshd: {SSHD} not found; run `make install` (openssh-server)")
        ssh_dir = self.dir(lab)
        ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(ssh_dir, 0o755)  # noqa: S103 - sshd reads authorized_keys as the user
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        host_key = ssh_dir / "host_ed25519"
        client_key = ssh_dir / "id_ed25519"
        for key, comment in ((host_key, "sfops-lab-host"), (client_key, "sfops-lab-operator")):
            if not key.exists():
                run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    what=f"sshd: ssh-keygen {key.name}",
                )
        # The operator's private key belongs to the operator (sfops over SSH runs as them).
        os.chown(client_key, entry.pw_uid, entry.pw_gid)
        os.chmod(client_key, 0o600)
        write_atomic(ssh_dir / "authorized_keys", (ssh_dir / "id_ed25519.pub").read_text())
        host_pub = (ssh_dir / "host_ed25519.pub").read_text().split()
        port = lab.port(PORT_OFFSET)
        write_atomic(ssh_dir / "known_hosts", f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        write_atomic(
            ssh_dir / "sshd_config",
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {ssh_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}",
                    f"AllowUsers {USER} {PG_USER}",
                    "PermitRootLogin no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    # The lab directory may live under /tmp (tests), whose sticky world-writable
                    # mode StrictModes rejects; the key files themselves are 0600/0644.
                    "StrictModes no",
                    "X11Forwarding no",
                    # The SSH executor moves files over SFTP (atomic rename on the host).
                    "Subsystem sftp internal-sftp",
                    "PrintMotd no",
                    "AcceptEnv LANG LC_* TERM NO_COLOR COLORTERM",
                    "ClientAliveInterval 5",
                    "ClientAliveCountMax 3",
                    "",
                ]
            ),
        )

    def argv(self, lab: Lab) -> list[str]:
        return [SSHD, "-D", "-e", "-f", str(self.dir(lab) / "sshd_config")]

    def ready(self, lab: Lab) -> bool:
        with socket.create_connection(("127.0.0.1", lab.port(PORT_OFFSET)), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-2.0")


COMPONENTS: list[Component] = [Sshd()]


def sfops_config(lab: Lab) -> dict[str, Any]:
    ssh_dir = lab.path("ssh")

    def executor(user: str) -> dict[str, Any]:
        return {
            "type": "ssh",
            "host": "127.0.0.1",
            "port": lab.port(PORT_OFFSET),
            "user": user,
            "client_keys": [str(ssh_dir / "id_ed25519")],
            "known_hosts": str(ssh_dir / "known_hosts"),
            "connect_timeout": 5.0,
        }

    return {
        "executors": {
            "lab-ssh": executor(USER),
            # The PostgreSQL members' host steps (pg_ctl, standby.signal) as their os_user.
            "lab-ssh-postgres": executor(PG_USER),
        }
    }
