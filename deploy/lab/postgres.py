"""Lab PostgreSQL: pg-1 (initial primary) and pg-2 (initial streaming replica).

Members are named by identity, not role: roles change on failover. The primary is initialised
and the replica seeded by the very scripts deploy/compose.yaml uses (deploy/postgres/*.sh).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from deploy.lab import tls
from deploy.lab.core import Component, Lab, LabError, pid_alive, run, write_atomic

PG_BIN = Path(os.environ.get("SFOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SCRIPTS = Path(__file__).resolve().parent.parent / "postgres"
OS_USER = "postgres"
# Password files in <lab>/secrets/pg-<role>.
ROLES = ("replicator", "streamforge", "sfops", "sfops_monitor")
MEMBERS = {"pg-1": 10, "pg-2": 11}  # name -> port offset
# Not part of the lab's stack (the product runs a primary and one replica): a third member a
# test seeds from the primary when it needs two candidates (tests/integration/test_locks.py).
SPARE_MEMBERS = {"pg-3": 12}
TLS_MARKER = "# sfops lab: TLS"
# pg_hba.conf host rules (initdb's and init-primary.sh's) made TLS-only.
HOST_RULE = re.compile(r"^host(\s)", re.MULTILINE)
# A primary_conninfo written before the lab ran TLS (no sslmode): the quoted value, less its
# closing quote.
CONNINFO_WITHOUT_TLS = re.compile(r"^(primary_conninfo = '(?:(?!sslmode=)[^'\n]|'')*)'\s*$",
                                  re.MULTILINE)


def secret_path(lab: Lab, role: str) -> Path:
    return lab.path("secrets", f"pg-{role}")


def ensure_secrets(lab: Lab) -> None:
    """Random per-lab passwords, 0600. Owned by the lab's operator user when it exists so
    ``sfops`` run over SSH as that user can read its own password."""
    for role in ROLES:
        path = secret_path(lab, role)
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    owner = _uid("sfops-lab")
    if owner is not None:
        os.chown(lab.path("secrets"), owner, -1)
        for role in ROLES:
            os.chown(secret_path(lab, role), owner, -1)
    os.chmod(lab.path("secrets"), 0o700)


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _chown_postgres(path: Path) -> None:
    entry = pwd.getpwnam(OS_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class PostgresMember(Component):
    group = "pg"
    user = OS_USER
    # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would wait for every client to leave).
    stop_signal = signal.SIGINT
    ready_timeout = 90.0

    def __init__(self, name: str) -> None:
        self.name = name

    def port_number(self, lab: Lab) -> int:
        return lab.port({**MEMBERS, **SPARE_MEMBERS}[self.name])

    def ports(self, lab: Lab) -> Sequence[int]:
        return (self.port_number(lab),)

    def data_dir(self, lab: Lab) -> Path:
        return lab.path(self.name, "data")

    def socket_dir(self, lab: Lab) -> Path:
        return lab.path(self.name, "run")

    def pid(self, lab: Lab) -> int | None:
        # postmaster.pid is the truth: sfops's own actions may restart a member with pg_ctl.
        try:
            pid = int((self.data_dir(lab) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return super().pid(lab)
        return pid if pid_alive(pid) else super().pid(lab)

    def argv(self, lab: Lab) -> list[str]:
        return [str(PG_BIN / "postgres"), "-D", str(self.data_dir(lab))]

    def env(self, lab: Lab) -> dict[str, str]:
        # A HOME postgres owns: over TLS its WAL receiver's libpq looks for a client
        # certificate in ~/.postgresql, and an unreadable one (root's HOME, inherited from
        # the lab) fails the connection where a missing one would not.
        return {"HOME": str(lab.path(self.name))}

    def ready(self, lab: Lab) -> bool:
        with psycopg.connect(
            host=str(self.socket_dir(lab)),
            port=self.port_number(lab),
            user="postgres",
            dbname="postgres",
            connect_timeout=2,
        ) as conn:
            conn.execute("SELECT 1")
        return True

    def superuser_conninfo(self, lab: Lab) -> dict[str, Any]:
        return {
            "host": str(self.socket_dir(lab)),
            "port": self.port_number(lab),
            "user": "postgres",
            "dbname": "postgres",
            "connect_timeout": 3,
        }

    def _layout(self, lab: Lab) -> None:
        ensure_secrets(lab)
        self._remove_stale_pidfile(lab)
        for path in (lab.path(self.name), self.socket_dir(lab)):
            path.mkdir(parents=True, exist_ok=True)
            _chown_postgres(path)
        lab.log_path(self.name).parent.mkdir(parents=True, exist_ok=True)
        # postgres runs as its own user and writes its log through our file; it must be able
        # to open its pid and log files.
        passfile = lab.path(self.name, "replication.pgpass")
        password = secret_path(lab, "replicator").read_text().strip()
        write_atomic(passfile, f"*:*:*:replicator:{password}\n", mode=0o600)
        _chown_postgres(passfile)
        # TLS: a server certificate signed by the services' CA (the key owned by postgres,
        # 0600: the server refuses any other).
        tls.server_certificate(lab, self.name, owner=OS_USER)

    def _secure(self, lab: Lab) -> None:
        """The lab runs TLS: every host connection (clients, sfops, replication, pg_rewind)
        is ``hostssl`` in pg_hba.conf, local-socket trust stays for the lab's superuser. Also
        brings a cluster made before the lab ran TLS up to date (idempotent)."""
        data = self.data_dir(lab)
        conf = data / "postgresql.conf"
        if conf.exists() and TLS_MARKER not in conf.read_text():
            with open(conf, "a") as out:
                out.write(self._tls_settings(lab))
        auto = data / "postgresql.auto.conf"
        if auto.exists():
            text = auto.read_text()
            verified = f" sslmode=verify-full sslrootcert={tls.service_ca(lab)}'"
            updated = CONNINFO_WITHOUT_TLS.sub(lambda m: m[1] + verified, text)
            if updated != text:
                write_atomic(auto, updated, mode=0o600)
                _chown_postgres(auto)
        hba = data / "pg_hba.conf"
        if hba.exists():
            text = hba.read_text()
            secured = HOST_RULE.sub(r"hostssl\1", text)
            if secured != text:
                write_atomic(hba, secured, mode=0o600)
                _chown_postgres(hba)

    def _tls_settings(self, lab: Lab) -> str:
        crt, key = tls.server_certificate(lab, self.name, owner=OS_USER)
        return "\n".join([TLS_MARKER, "ssl = on", f"ssl_cert_file = '{crt}'",
                          f"ssl_key_file = '{key}'", "ssl_min_protocol_version = 'TLSv1.2'", ""])

    def _remove_stale_pidfile(self, lab: Lab) -> None:
        """A killed postmaster whose pid is still a zombie (nobody reaped it yet) makes
        postgres refuse to start ("lock file already exists"): the pid exists for kill(0).
        Only called when the lab found no live member, so the file is stale."""
        # The socket's lock file too (".s.PGSQL.<port>.lock", same first line): postgres
        # checks it the same way, and a SIGKILLed postmaster re-parented to an init that reaps
        # late leaves both behind (the hung-primary failover test restarts it at once).
        for lockfile in (self.data_dir(lab) / "postmaster.pid",
                         *self.socket_dir(lab).glob(".s.PGSQL.*.lock")):
            try:
                pid = int(lockfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not pid_alive(pid):
                lockfile.unlink(missing_ok=True)

    def _settings(self, lab: Lab) -> str:
        return "\n".join(
            [
                "# written by sfops lab",
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port_number(lab)}",
                f"unix_socket_directories = '{self.socket_dir(lab)}'",
                "wal_level = replica",
                "wal_log_hints = on",  # pg_rewind needs it to rejoin a former primary
                "max_wal_senders = 10",
                "max_replication_slots = 10",
                "hot_standby = on",
                "hot_standby_feedback = on",
                "max_slot_wal_keep_size = 1GB",
                "shared_buffers = 64MB",
                "max_connections = 100",
                f"cluster_name = '{self.name}'",
                "logging_collector = off",
                "",
            ]
        ) + self._tls_settings(lab)


class PrimaryMember(PostgresMember):
    def prepare(self, lab: Lab) -> None:
        self._layout(lab)
        data = self.data_dir(lab)
        if (data / "PG_VERSION").exists():
            self._secure(lab)
            return
        lab.progress(f"{self.name}: initdb")
        run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--data-checksums",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            what=f"{self.name}: initdb",
            user=OS_USER,
        )
        conf = data / "postgresql.conf"
        with open(conf, "a") as out:
            out.write(self._settings(lab))
        self._secure(lab)

    def after_ready(self, lab: Lab) -> None:
        with psycopg.connect(**self.superuser_conninfo(lab)) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row is not None and row[0]:
            return  # a standby now (after a failover): roles and slots come from its primary
        run(
            ["bash", str(SCRIPTS / "init-primary.sh")],
            what=f"{self.name}: init-primary.sh",
            env={
                "PATH": f"{PG_BIN}:{os.environ.get('PATH', '')}",
                "PGHOST": str(self.socket_dir(lab)),
                "PGPORT": str(self.port_number(lab)),
                "PGUSER": "postgres",
                "PGDATA": str(self.data_dir(lab)),
                "REPLICATION_PASSWORD_FILE": str(secret_path(lab, "replicator")),
                "APP_PASSWORD_FILE": str(secret_path(lab, "streamforge")),
                "SFOPS_PASSWORD_FILE": str(secret_path(lab, "sfops")),
                "SFOPS_MONITOR_PASSWORD_FILE": str(secret_path(lab, "sfops_monitor")),
                # A slot for each member, so either can stream from the other after a
                # switchover; a member never uses its own.
                "REPLICA_SLOTS": " ".join(n.replace("-", "_") for n in MEMBERS),
                "HBA_TYPE": "hostssl",
            },
        )


class ReplicaMember(PostgresMember):
    def __init__(self, name: str, primary: PostgresMember) -> None:
        super().__init__(name)
        self.primary = primary

    def prepare(self, lab: Lab) -> None:
        self._layout(lab)
        data = self.data_dir(lab)
        if (data / "PG_VERSION").exists():
            self._secure(lab)
            return
        if not self.primary.running(lab):
            raise LabError(
                f"{self.name}: cannot seed the replica, {self.primary.name} is not running"
            )
        lab.progress(f"{self.name}: pg_basebackup from {self.primary.name}")
        run(
            ["bash", str(SCRIPTS / "seed-replica.sh")],
            what=f"{self.name}: seed-replica.sh",
            user=OS_USER,
            env={
                "PATH": f"{PG_BIN}:{os.environ.get('PATH', '')}",
                "PGDATA": str(data),
                "PRIMARY_HOST": "127.0.0.1",
                "PRIMARY_PORT": str(self.primary.port_number(lab)),
                "REPLICATION_PASSFILE": str(lab.path(self.name, "replication.pgpass")),
                "REPLICA_SLOT": self.name.replace("-", "_"),
                "REPLICA_NAME": self.name,
                # Replication runs over TLS, the primary verified against the lab's CA (the
                # options land in primary_conninfo; a rejoin copies them).
                "PRIMARY_SSLMODE": "verify-full",
                "PRIMARY_SSLROOTCERT": str(tls.service_ca(lab)),
                "HOME": str(lab.path(self.name)),
            },
            timeout=300,
        )
        # The copied postgresql.conf carries the primary's port, socket and certificate:
        # override them.
        with open(data / "postgresql.conf", "a") as out:
            out.write(self._settings(lab))
        self._secure(lab)


PG1 = PrimaryMember("pg-1")
PG2 = ReplicaMember("pg-2", PG1)
COMPONENTS: list[Component] = [PG1, PG2]
# Both fast shutdowns are clean on their own; a standby that disconnects first just resumes
# from its last received WAL on the next start.
STOP_WAVES = [["pg-1", "pg-2"]]


def conninfo_for_app(lab: Lab) -> str:
    """libpq multi-host conninfo (no password) that follows the primary after a failover."""
    hosts = ",".join("127.0.0.1" for _ in MEMBERS)
    ports = ",".join(str(lab.port(offset)) for offset in MEMBERS.values())
    return (
        f"host={hosts} port={ports} dbname=streamforge user=streamforge "
        "target_session_attrs=read-write connect_timeout=2 "
        f"sslmode=verify-full sslrootcert={tls.service_ca(lab)}"
    )


def sfops_config(lab: Lab) -> dict[str, Any]:
    return {
        "postgres": {
            "dbname": "streamforge",
            "user": "sfops",
            "password_file": str(secret_path(lab, "sfops")),
            # Polls: a non-superuser with pg_monitor, read-only sessions; actions: the
            # superuser "sfops" (promote, CHECKPOINT, slots, pg_rewind's source).
            "readonly_user": "sfops_monitor",
            "readonly_password_file": str(secret_path(lab, "sfops_monitor")),
            "operator_user": "sfops",
            "operator_password_file": str(secret_path(lab, "sfops")),
            # TLS, the servers verified against the lab's services CA (name included).
            "sslmode": "verify-full",
            "sslrootcert": str(tls.service_ca(lab)),
            "connect_timeout": 3.0,
            "statement_timeout": 5.0,
            "max_lag_on_failover": 1048576,
            "members": {member.name: member_config(lab, member) for member in (PG1, PG2)},
        }
    }


def member_config(lab: Lab, member: PostgresMember) -> dict[str, Any]:
    """One member's part of the sfops configuration."""
    return {
        "host": "127.0.0.1",
        "port": member.port_number(lab),
        "executor": "local",
        "data_dir": str(member.data_dir(lab)),
        "bin_dir": str(PG_BIN),
        "os_user": OS_USER,
    }


def wipe(lab: Lab) -> None:
    """Remove both members' data (used by `lab down --wipe`)."""
    for member in (PG1, PG2):
        shutil.rmtree(lab.path(member.name), ignore_errors=True)
