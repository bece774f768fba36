"""Redaction at the boundary and secrets that never leave (backends/secrets.py and where it
is used): conninfo through libpq's parser, URLs through urllib's, free text by pattern, and
the last redaction by known value; children start without any secret in their environment."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from backends.audit import AuditLog
from backends.config import load
from backends.executors import LocalExecutor
from backends.secrets import (
    REDACTED,
    child_environment,
    known_secrets,
    redact_conninfo,
    redact_known,
    redact_text,
    redact_url,
    remember,
    scrub_known,
)

MARKER = "SFOPS-MARKER-SECRET-7f3a"


@pytest.mark.parametrize(
    ("conninfo", "expected"),
    [
        (f"user=replicator password={MARKER} host=10.0.0.1 port=5432",
         "user=replicator password=*** host=10.0.0.1 port=5432"),
        (f"user=r password = '{MARKER} with space' host=h", "user=r password=*** host=h"),
        (f"user=r password='it\\'s-{MARKER}' host=h", "user=r password=*** host=h"),
        (f"host=h sslpassword={MARKER} sslkey=/k", "host=h sslkey=/k sslpassword=***"),
        (f"postgresql://repl:{MARKER}@db:5432/x?application_name=a",
         "postgresql://repl:***@db:5432/x?application_name=a"),
        (f"postgres://repl@db/x?password={MARKER}", "postgres://repl@db/x?password=***"),
        ("user=r passfile=/p host=h", "user=r passfile=/p host=h"),  # nothing to redact
    ],
)
def test_redact_conninfo_uses_libpqs_reading(conninfo: str, expected: str) -> None:
    redacted = redact_conninfo(conninfo)
    assert MARKER not in redacted
    assert redacted == expected


def test_redact_conninfo_that_libpq_cannot_parse_falls_back_to_patterns() -> None:
    assert redact_conninfo(f"not a conninfo password={MARKER}") == "not a conninfo password=***"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"http://admin:{MARKER}@127.0.0.1:8080/nginx_status",
         "http://admin:***@127.0.0.1:8080/nginx_status"),
        (f"https://admin:p@ss-{MARKER}@h/x", "https://admin:***@h/x"),  # unencoded @
        (f"http://h/x?token={MARKER}&a=1", "http://h/x?token=***&a=1"),
        ("http://user@h/x", "http://user@h/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"FATAL: could not connect: primary_conninfo = 'user=r password=''{MARKER} x'' host=h'",
        f'{{"password": "{MARKER} x", "user": "u"}}',
        f"Client error '401 Unauthorized' for url 'http://u:{MARKER}@h/x'",
        f"Authorization: Bearer {MARKER}",
        f"kubeconfig: mapping values are not allowed here: token: {MARKER}",
        f"PGPASSWORD={MARKER} pg_ctl start",
    ],
)
def test_redact_text_finds_secrets_inside_sentences(text: str) -> None:
    assert MARKER not in redact_text(text)


def test_known_secrets_are_redacted_by_value_where_text_leaves() -> None:
    remember(MARKER, env="SFOPS_TEST_SECRET_VAR")
    assert MARKER in known_secrets()
    assert redact_known(f"server said {MARKER}!") == f"server said {REDACTED}!"
    # scrub_known changes known values only, never text that merely looks like a secret.
    assert scrub_known(f"token: abc {MARKER}") == f"token: abc {REDACTED}"


def test_a_config_secret_from_any_source_becomes_known(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_TEST_PW", f"env-{MARKER}")
    (tmp_path / "pw").write_text(f"file-{MARKER}\n")
    body = """
[postgres]
dbname = "d"
user = "u"
{password}
[postgres.members.pg-1]
host = "h"
[nginx]
config_file = "/etc/nginx/nginx.conf"
upstream_name = "api"
upstream_file = "/etc/nginx/up.conf"
stub_status_url = "http://admin:url-{marker}@127.0.0.1:1/status"
[nginx.members.api-1]
address = "127.0.0.1:1"
"""
    for source in ('password_env = "SFOPS_TEST_PW"', f'password_file = "{tmp_path / "pw"}"',
                   f'password = "inline-{MARKER}"'):
        path = tmp_path / "sfops.toml"
        path.write_text(body.format(password=source, marker=MARKER))
        load(path)
    assert {f"env-{MARKER}", f"file-{MARKER}", f"inline-{MARKER}",
            f"url-{MARKER}"} <= set(known_secrets())
    env = child_environment({"SFOPS_TEST_PW": f"env-{MARKER}", "PATH": "/bin",
                             "PGPASSWORD": "x", "OTHER": f"a file-{MARKER} b"})
    assert env == {"PATH": "/bin"}


def test_a_bad_url_in_the_config_is_named_without_its_password(tmp_path: Path) -> None:
    from backends.config import ConfigError

    path = tmp_path / "sfops.toml"
    path.write_text(f"""
[nginx]
config_file = "/etc/nginx/nginx.conf"
upstream_name = "api"
upstream_file = "/etc/nginx/up.conf"
stub_status_url = "ftp://admin:{MARKER}@127.0.0.1:1/status"
[nginx.members.api-1]
address = "127.0.0.1:1"
""")
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "ftp://admin:***@127.0.0.1:1/status" in str(error.value)
    assert MARKER not in str(error.value)


async def test_local_executor_children_inherit_no_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_TEST_PW", MARKER)
    monkeypatch.setenv("PGPASSWORD", "from-the-shell")
    monkeypatch.setenv("SFOPS_HARMLESS", "kept")
    remember(MARKER, env="SFOPS_TEST_PW")
    result = await LocalExecutor().run(["env"], timeout=10)
    assert MARKER not in result.stdout and "SFOPS_TEST_PW" not in result.stdout
    assert "PGPASSWORD" not in result.stdout
    assert "SFOPS_HARMLESS=kept" in result.stdout


def test_the_audit_log_never_holds_a_known_secret(tmp_path: Path) -> None:
    remember(MARKER)
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"action": "x", "error": f"server echoed {MARKER}", "params": {"n": [MARKER]}})
    text = (tmp_path / "audit.jsonl").read_text()
    assert MARKER not in text
    assert json.loads(text)["error"] == f"server echoed {REDACTED}"


def test_cli_output_is_redacted_by_known_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from tui.cli import redacted_output

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    remember(MARKER)
    with redacted_output():
        print(json.dumps({"echo": MARKER}))
        print(f"sfops: {MARKER}", file=sys.stderr)
    assert MARKER not in out.getvalue() + err.getvalue()
    assert json.loads(out.getvalue()) == {"echo": REDACTED}


def test_the_probe_redacts_primary_conninfo_as_it_enters() -> None:
    from backends.postgres import probe
    from backends.postgres.config import PostgresConfig, PostgresMember

    member = PostgresMember("pg-2", "127.0.0.1", 5433)
    config = PostgresConfig(dbname="d", user="u", members={"pg-2": member})

    class Conn:
        name, contact_budget = "pg-2", 1.0

        def __init__(self) -> None:
            self.member, self.config = member, config

        async def fetchone(self, sql: str, *args: object, **kwargs: object) -> dict[str, object]:
            return {"in_recovery": True, "current_lsn": None, "received_lsn": "0/3000060",
                    "replayed_lsn": "0/3000060", "replay_paused": False,
                    "seconds_since_replay": 0.0, "primary_timeline": None,
                    "checkpoint_timeline": 1, "wal_timeline": 1, "connections": 1,
                    "max_connections": 100, "system_identifier": "1",
                    "server_version": "16", "primary_slot_name": "pg_2",
                    "primary_conninfo": f"user=replicator password={MARKER} host=127.0.0.1"}

        async def fetch(self, sql: str, *args: object, **kwargs: object) -> list[object]:
            return []

    status = asyncio.run(probe.read_member(Conn()))  # type: ignore[arg-type]
    assert status.primary_conninfo == "user=replicator password=*** host=127.0.0.1"
    assert MARKER not in repr(status)


def _crash(secret: str) -> None:
    """A bug with a secret in its exception text and in a local variable (as a revealed
    password or a passfile's text would be)."""
    passfile_text = f"*:*:*:sfops:{secret}"  # noqa: F841 - what a locals dump would show
    raise RuntimeError(f"the server answered {secret} to us")


def test_a_crash_in_a_command_prints_its_traceback_redacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The except branch of :func:`tui.cli.redacted_output`: a command's unexpected
    exception is printed there, through the redacting stream, and ends the command with
    exit code 1 — not left to the interpreter, which prints after the streams are restored."""
    from tui.cli import redacted_output

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    remember(MARKER)
    with pytest.raises(SystemExit) as exit_info, redacted_output():
        _crash(MARKER)
    assert exit_info.value.code == 1
    assert exit_info.value.__cause__ is None and exit_info.value.__suppress_context__
    printed = out.getvalue() + err.getvalue()
    assert "Traceback (most recent call last)" in printed, printed
    assert f"RuntimeError: the server answered {REDACTED} to us" in printed, printed
    assert MARKER not in printed, printed
    assert "in _crash" in printed  # the frame that raised
    assert sys.stdout is out and sys.stderr is err  # the streams are restored


def test_a_password_env_secret_leaves_the_environment_any_child_inherits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child a library starts on its own (``ctypes.util.find_library`` runs gcc and ld when
    asyncssh is imported) inherits os.environ, not :func:`child_environment`: the variable a
    secret came from is taken out of it as the configuration is read (found by the process
    sampler of tests/integration/test_secrets.py)."""
    import subprocess

    monkeypatch.setenv("SFOPS_TEST_PW", f"env-{MARKER}")
    path = tmp_path / "sfops.toml"
    path.write_text('[postgres]\ndbname = "d"\nuser = "u"\npassword_env = "SFOPS_TEST_PW"\n'
                    '[postgres.members.pg-1]\nhost = "h"\n')
    config = load(path)
    assert config.postgres is not None
    assert config.postgres.password is not None
    assert config.postgres.password.reveal() == f"env-{MARKER}"
    inherited = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    assert MARKER not in inherited and "SFOPS_TEST_PW" not in inherited
    assert load(path).postgres.password.reveal() == f"env-{MARKER}"  # type: ignore[union-attr]


def test_the_cli_takes_every_password_env_out_before_any_command_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command may import its action module (executors, asyncssh: gcc and ld started with
    os.environ) before it loads its configuration — a fresh run's process sampler saw the
    PostgreSQL password in gcc's environment. ``sfops`` takes every variable a
    ``*password_env`` key names (in any table, any environment) out of os.environ first; the
    configuration still reads the value, and a non-secret ``*_env`` key is left alone."""
    import os

    from backends.secrets import take_configured_env, take_env
    from tui.cli import main

    monkeypatch.setenv("SFOPS_TEST_PW", f"env-{MARKER}")
    monkeypatch.setenv("SFOPS_TEST_SASL", f"sasl-{MARKER}")
    monkeypatch.setenv("lab", "not a secret")
    path = tmp_path / "sfops.toml"
    path.write_text('default_env = "lab"\n'
                    '[postgres]\ndbname = "d"\nuser = "u"\npassword_env = "SFOPS_TEST_PW"\n'
                    '[postgres.members.pg-1]\nhost = "h"\n'
                    '[environments.lab.kafka]\nbootstrap = ["h:9092"]\n'
                    'sasl_password_env = "SFOPS_TEST_SASL"\n')
    assert main(["--config", str(path), "completion", "bash"]) == 0
    assert "SFOPS_TEST_PW" not in os.environ and "SFOPS_TEST_SASL" not in os.environ
    assert os.environ.get("lab") == "not a secret"
    assert take_env("SFOPS_TEST_PW") == f"env-{MARKER}"  # what the configuration reads
    assert take_env("SFOPS_TEST_SASL") == f"sasl-{MARKER}"
    take_configured_env(tmp_path / "missing.toml")  # the real load says why: nothing here
    (tmp_path / "broken.toml").write_text("[postgres\n")
    take_configured_env(tmp_path / "broken.toml")
