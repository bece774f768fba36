"""The lab's secured paths for PostgreSQL (issue #16): every sfops session and the replication
stream run over TLS verified against the lab's CA; a wrong CA is a clear error naming
``[postgres] sslrootcert`` and changes nothing; host steps and host locks go through the SSH
jump host (``lab-jump``), an unknown jump-host key is an error naming that executor's
``known_hosts`` and changes nothing; a switchover whose host steps all go through the jump
host succeeds, and replication still runs over TLS after its rejoin."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w

from backends.config import load
from backends.postgres.service import PostgresService
from deploy.lab import tls as lab_tls
from tests.integration.test_pg import (
    audit_records,
    member,
    reset_pg,
    sql,
    status,
    streams_from,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secured(lab: Any) -> Any:
    lab.ensure("pg", "sshd")
    reset_pg(lab)
    yield lab
    reset_pg(lab)


def variant(lab: Any, tmp_path: Path, change: Any) -> Path:
    """A copy of the lab's sfops.toml changed by ``change(config)``."""
    config = tomllib.loads(lab.config_path.read_text())
    change(config)
    path = tmp_path / "sfops.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def run(config: Path, *args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          check=False, env={**os.environ, "NO_COLOR": "1"})


def jump_logins(lab: Any) -> int:
    """Logins the jump host's sshd has accepted so far (its log, `sshd -e`)."""
    path = lab.lab.log_path("sshd-jump")
    return path.read_text(errors="replace").count("Accepted publickey") if path.exists() else 0


def pair_unchanged(lab: Any) -> None:
    assert sql(lab, "pg-1", "SELECT pg_is_in_recovery()")[0][0] is False
    assert streams_from(status(lab), "pg-2", "pg-1")


# --------------------------------------------------------------------------- TLS


def test_sfops_sessions_and_replication_are_tls(secured: Any) -> None:
    config = load(secured.config_path)
    assert {m.sslmode for m in config.postgres.members.values()} == {"verify-full"}

    async def sessions() -> list[tuple[Any, ...]]:
        service = PostgresService(config.postgres)
        try:
            await service.read_members(use_breaker=False)  # sfops's own connections, open
            return sql(secured, "pg-1", "SELECT a.application_name, s.ssl, s.version "
                       "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                       "WHERE a.application_name = 'sfops'")
        finally:
            await service.close()

    rows = asyncio.run(sessions())
    print(f"sfops sessions on pg-1: {rows}")
    assert rows and all(ssl is True for _, ssl, _ in rows), rows
    replication = sql(secured, "pg-1", "SELECT r.application_name, s.ssl FROM "
                      "pg_stat_replication r JOIN pg_stat_ssl s USING (pid)")
    assert replication == [("pg-2", True)], replication
    conninfo = member(status(secured), "pg-2")["primary_conninfo"]
    assert "sslmode=verify-full" in conninfo and "sslrootcert=" in conninfo, conninfo


def test_a_connection_without_tls_is_refused_by_the_server(secured: Any) -> None:
    """hostssl: the lab's servers take host connections over TLS only."""
    cfg = load(secured.config_path).postgres
    pg1 = cfg.members["pg-1"]
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(host=pg1.host, port=pg1.port, user=cfg.user, dbname=cfg.dbname,
                        password=cfg.password.reveal(), sslmode="disable", connect_timeout=3)


def test_a_wrong_ca_names_the_key_and_changes_nothing(secured: Any, tmp_path: Path) -> None:
    other_ca = lab_tls.ensure_ca(tmp_path / "other-ca", "not-the-lab-ca")

    def wrong_ca(config: dict[str, Any]) -> None:
        config["postgres"]["sslrootcert"] = str(other_ca)

    path = variant(secured, tmp_path, wrong_ca)
    done = run(path, "pg", "status", "--json")
    assert done.returncode == 5, (done.stdout, done.stderr)
    assert "[postgres] sslrootcert" in done.stdout and "certificate verify failed" in done.stdout
    print(f"status: {next(line for line in done.stdout.splitlines() if 'sslrootcert' in line)}")

    before = len(audit_records(secured))
    done = run(path, "pg", "switchover", "--to", "pg-2", "--yes", "--json")
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "[postgres] sslrootcert" in done.stdout + done.stderr, (done.stdout, done.stderr)
    pair_unchanged(secured)
    started = [r for r in audit_records(secured)[before:] if r.get("event") == "started"]
    assert started == []  # never past its preflight


# --------------------------------------------------------------------------- SSH jump host


def over_the_jump(config: dict[str, Any]) -> None:
    """Every member's host steps (and host locks) through lab-ssh-postgres, which the lab
    reaches through its jump host."""
    assert config["executors"]["lab-ssh-postgres"]["jump"] == ["lab-jump"]
    for entry in config["postgres"]["members"].values():
        entry["executor"] = "lab-ssh-postgres"


def test_an_unknown_jump_host_key_names_the_key_and_changes_nothing(
        secured: Any, tmp_path: Path) -> None:
    lab_known_hosts = Path(load(secured.config_path).executors["lab-jump"].known_hosts)
    jump_port = str(secured.port(21))
    only_target = tmp_path / "known_hosts_without_jump"
    only_target.write_text("".join(line + "\n" for line in lab_known_hosts.read_text()
                                   .splitlines() if f"]:{jump_port} " not in line))

    def unknown_jump_key(config: dict[str, Any]) -> None:
        over_the_jump(config)
        config["executors"]["lab-jump"]["known_hosts"] = str(only_target)

    path = variant(secured, tmp_path, unknown_jump_key)
    before = len(audit_records(secured))
    done = run(path, "pg", "switchover", "--to", "pg-2", "--yes", "--json")
    text = done.stdout + done.stderr
    assert done.returncode == 3, text
    assert "connect via jump host lab-jump" in text, text
    assert f"[executors.lab-jump] known_hosts = {only_target}" in text, text
    print([line for line in text.splitlines() if "lab-jump" in line][:1])
    pair_unchanged(secured)
    assert [r for r in audit_records(secured)[before:] if r.get("event") == "started"] == []
    assert only_target.read_text().count("\n") == 1  # nothing was learned


def test_switchover_with_every_host_step_through_the_jump_host(
        secured: Any, tmp_path: Path) -> None:
    """Stop, standby.signal, pg_rewind's check and the restart of the old primary, and the
    host locks on both members: all over SSH through lab-jump, host keys verified at both
    hops. Afterwards the old primary streams from the new one over verified TLS."""
    path = variant(secured, tmp_path, over_the_jump)
    logins = jump_logins(secured)
    try:
        done = run(path, "pg", "switchover", "--to", "pg-2", "--yes", "--json")
        assert done.returncode == 0, (done.stdout, done.stderr)
        print(f"logins through the jump host during the switchover: "
              f"{jump_logins(secured) - logins}")
        assert jump_logins(secured) > logins
        data = wait_for(lambda: (d := status(secured)) and streams_from(d, "pg-1", "pg-2") and d,
                        60, "pg-1 streaming from pg-2")
        conninfo = member(data, "pg-1")["primary_conninfo"]
        assert "sslmode=verify-full" in conninfo and "sslrootcert=" in conninfo, conninfo
        replication = sql(secured, "pg-2", "SELECT r.application_name, s.ssl FROM "
                          "pg_stat_replication r JOIN pg_stat_ssl s USING (pid)")
        assert replication == [("pg-1", True)], replication
        lock = next(c for c in json.loads(done.stdout)["preflight"]
                    if c["name"] == "target lock")
        assert "flock" in lock["detail"], lock
    finally:
        reset_pg(secured)
