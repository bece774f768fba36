"""[postgres] TLS and libpq-file keys: validation naming the key, the connection's parameters,
the error hint for a libpq TLS failure, and what pg_rewind on a member's host gets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from backends.config import ConfigError, SfopsConfig, load, parse
from backends.executors import CommandResult
from backends.postgres import worst
from backends.postgres.cluster import PgCluster
from backends.postgres.connection import MemberConnection, tls_hint
from backends.postgres.host import MemberHost
from tests.unit.secured_example import loadable

BASE = """
[sfops]
state_dir = "STATE"
[postgres]
dbname = "streamforge"
user = "sfops"
password = "pw-s3cret"
{section}
[postgres.members.pg-1]
host = "127.0.0.1"
port = 5432
data_dir = "/data/pg-1"
{member}
[postgres.members.pg-2]
host = "127.0.0.1"
port = 5433
data_dir = "/data/pg-2"
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("ca.crt", "client.crt", "client.key", "pg_service.conf", "pgpass"):
        path = tmp_path / name
        path.write_text(f"-----BEGIN {name}-----\n")
        path.chmod(0o600)
        out[name] = path
    return out


def load_text(tmp_path: Path, section: str = "", member: str = "") -> SfopsConfig:
    path = tmp_path / "sfops.toml"
    path.write_text(BASE.format(section=section, member=member)
                    .replace("STATE", str(tmp_path / "state")))
    return load(path)


def problems(tmp_path: Path, section: str = "", member: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, section, member)
    return "\n".join(info.value.problems)


def test_a_ca_makes_verify_full_the_default_and_members_inherit(
        tmp_path: Path, files: dict[str, Path]) -> None:
    config = load_text(tmp_path, f'sslrootcert = "{files["ca.crt"]}"')
    for member in config.postgres.members.values():
        assert member.sslmode == "verify-full"
        assert member.sslrootcert == str(files["ca.crt"])
        assert member.config_key("sslrootcert") == "[postgres] sslrootcert"
    plain = load_text(tmp_path)
    assert plain.postgres.members["pg-1"].sslmode is None  # libpq's own default


def test_member_overrides_and_names_its_own_key(tmp_path: Path, files: dict[str, Path]) -> None:
    config = load_text(
        tmp_path, f'sslrootcert = "{files["ca.crt"]}"\nsslmode = "verify-ca"',
        f'sslmode = "require"\nsslcert = "{files["client.crt"]}"\n'
        f'sslkey = "{files["client.key"]}"\nservice = "pg1"')
    pg1, pg2 = config.postgres.members["pg-1"], config.postgres.members["pg-2"]
    assert (pg1.sslmode, pg1.sslcert, pg1.service) == ("require", files["client.crt"], "pg1")
    assert pg1.config_key("sslmode") == "[postgres.members.pg-1] sslmode"
    assert pg1.config_key("sslrootcert") == "[postgres] sslrootcert"
    assert (pg2.sslmode, pg2.sslcert, pg2.service) == ("verify-ca", None, None)


def test_connection_parameters_carry_tls_and_libpq_files(
        tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSERVICEFILE", raising=False)
    config = load_text(
        tmp_path,
        f'sslrootcert = "{files["ca.crt"]}"\nsslcert = "{files["client.crt"]}"\n'
        f'sslkey = "{files["client.key"]}"\nsslpassword = "key-passphrase"\n'
        f'servicefile = "{files["pg_service.conf"]}"\npassfile = "{files["pgpass"]}"',
        'service = "pg1"')
    pg = config.postgres
    kwargs = MemberConnection(pg, pg.members["pg-1"])._kwargs()
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["sslrootcert"] == str(files["ca.crt"])
    assert (kwargs["sslcert"], kwargs["sslkey"]) == (str(files["client.crt"]),
                                                     str(files["client.key"]))
    assert kwargs["sslpassword"] == "key-passphrase"
    assert kwargs["service"] == "pg1" and kwargs["passfile"] == str(files["pgpass"])
    assert os.environ["PGSERVICEFILE"] == str(files["pg_service.conf"])  # libpq's only way
    assert "key-passphrase" not in repr(config)


@pytest.mark.parametrize(
    ("section", "member", "expected"),
    [
        ('sslrootcert = "/nonexistent/ca.crt"', "",
         "postgres.sslrootcert: /nonexistent/ca.crt does not exist"),
        ("", 'sslkey = "/nonexistent/k"\nsslcert = "/nonexistent/c"',
         "postgres.members.pg-1.sslkey: /nonexistent/k does not exist"),
        ('sslmode = "verify-full"', "",
         'postgres.sslmode: "verify-full" needs sslrootcert'),
        ("", 'sslmode = "verify-ca"',
         'postgres.members.pg-1.sslmode: "verify-ca" needs sslrootcert'),
        ('sslmode = "verify-everything"', "",
         'postgres.sslmode: expected one of disable, allow, prefer, require, verify-ca, '
         'verify-full, got "verify-everything"'),
        ('sslrootcert = "system"\nsslmode = "verify-ca"', "",
         'postgres.sslrootcert: "system" needs sslmode = "verify-full"'),
        ('servicefile = "/nonexistent/pg_service.conf"', "",
         "postgres.servicefile: /nonexistent/pg_service.conf does not exist"),
        ('passfile = "/nonexistent/pgpass"', "", "postgres.passfile: /nonexistent/pgpass does"),
        ('sslpassword = "x"', "", "postgres.sslpassword: given, but no sslkey is configured"),
        ('sslrootcert = "/"', "", "postgres.sslrootcert: / is not a file"),
    ],
)
def test_bad_tls_settings_name_the_key(tmp_path: Path, section: str, member: str,
                                       expected: str) -> None:
    text = problems(tmp_path, section, member)
    assert expected in text, text


def test_a_section_problem_is_reported_once(tmp_path: Path) -> None:
    text = problems(tmp_path, 'sslmode = "verify-full"')
    assert text.count("needs sslrootcert") == 1, text


def test_half_a_client_certificate_is_refused(tmp_path: Path, files: dict[str, Path]) -> None:
    text = problems(tmp_path, f'sslcert = "{files["client.crt"]}"')
    assert "postgres.sslcert: a client certificate needs both sslcert and sslkey" in text


def test_tls_failures_name_the_key_to_change(tmp_path: Path, files: dict[str, Path]) -> None:
    config = load_text(tmp_path, f'sslrootcert = "{files["ca.crt"]}"')
    member = config.postgres.members["pg-1"]
    hint = tls_hint('connection failed: SSL error: certificate verify failed', member)
    assert "[postgres] sslrootcert" in hint and str(files["ca.crt"]) in hint
    hint = tls_hint('server certificate for "db.example" does not match host name '
                    '"127.0.0.1"', member)
    assert "[postgres.members.pg-1] host (127.0.0.1)" in hint and "[postgres] sslmode" in hint
    assert "[postgres] sslkey" in tls_hint('private key file "/k" has group or world access',
                                           member)
    assert tls_hint("connection refused", member) == ""


class Recorder:
    host = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    async def run(self, argv: Sequence[str], *, timeout: float = 30.0,
                  input: str | bytes | None = None, check: bool = False) -> CommandResult:
        self.calls.append((tuple(argv), input if isinstance(input, str) else None))
        return CommandResult(tuple(argv), 0, "", "")

    async def read_file(self, path: object) -> bytes:
        raise AssertionError

    async def write_file(self, path: object, data: bytes, *, mode: int | None = None) -> None:
        raise AssertionError

    async def close(self) -> None:
        pass


async def test_pg_rewind_gets_the_ca_key_and_passphrase_never_on_its_command_line(
        tmp_path: Path, files: dict[str, Path]) -> None:
    config = load_text(
        tmp_path,
        f'sslrootcert = "{files["ca.crt"]}"\nsslcert = "{files["client.crt"]}"\n'
        f'sslkey = "{files["client.key"]}"\nsslpassword = "key-passphrase"')
    cluster = PgCluster(config)
    source = cluster.rewind_source("pg-2")
    assert "sslmode=verify-full" in source.conninfo
    assert "pw-s3cret" not in repr(source) and "key-passphrase" not in repr(source)
    recorder = Recorder()
    host = MemberHost(config.postgres.members["pg-1"], recorder)
    await host.rewind(source)
    commands = [argv for argv, _ in recorder.calls]
    rewind = next(argv for argv in commands if "pg_rewind" in argv)
    stem = "/data/.pg-1.sfops-rewind"
    assert rewind[:2] == ("env", f"PGSERVICEFILE={stem}.service")
    conninfo = rewind[-1]
    for part in ("port=5433", "sslmode=verify-full", f"sslrootcert={stem}.sslrootcert",
                 f"sslcert={stem}.sslcert", f"sslkey={stem}.sslkey", f"passfile={stem}.pgpass",
                 "service=sfops-rewind"):
        assert part in conninfo, conninfo
    joined = " ".join(" ".join(argv) for argv in commands)
    assert "pw-s3cret" not in joined and "key-passphrase" not in joined
    written = {argv[-1]: text for argv, text in recorder.calls if text is not None}
    assert written[f"{stem}.sslrootcert"] == "-----BEGIN ca.crt-----\n"
    assert written[f"{stem}.service"] == "[sfops-rewind]\nsslpassword=key-passphrase\n"
    assert "pw-s3cret" in written[f"{stem}.pgpass"]
    assert commands[-1] == ("rm", "-f", *written)  # everything removed, in one command
    # The stated worst case counts each of those writes.
    assert worst.rewind_files(cluster) == 4
    await cluster.close()


def test_the_secured_example_is_a_valid_configuration(tmp_path: Path) -> None:
    """deploy/examples/sfops-secured.toml, its commented TLS keys switched on and its files
    stood in for by temporary ones: sfops reads it (postgres and executors parts)."""
    import re

    text = (Path(__file__).resolve().parents[2] / "deploy" / "examples"
            / "sfops-secured.toml").read_text()
    start, end = text.index("\n[postgres]\n"), text.index("\n# Kubernetes (deploy/k8s)")
    section = re.sub(r"(?m)^# ((?:ssl\w+|servicefile|service|passfile) = )", r"\1",
                     text[start:end])
    text = text[:start] + section + text[end:]
    text = loadable(text, tmp_path)
    config = parse(text, tmp_path / "sfops.toml")
    pg1 = config.postgres.members["pg-1"]
    assert (pg1.sslmode, pg1.executor) == ("verify-full", "db1")
    assert config.postgres.sslpassword is not None
    assert [hop.name for hop in config.executors["db1"].route] == ["bastion"]
    # The member override, switched on above, applies to pg-2 only.
    assert config.postgres.members["pg-2"].config_key("sslrootcert") == \
        "[postgres.members.pg-2] sslrootcert"

