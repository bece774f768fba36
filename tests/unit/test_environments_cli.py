"""`--env` and `SFOPS_ENV` on the command line: a global option (before or after the command),
the clear error without one, per-environment read-only, and the audit log's `env` field —
written by the runner, shown and filtered by `sfops audit`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from backends.audit import AuditLog
from tui import exitcodes
from tui.cli import chosen_command, hoist_global_options, main


def write_config(tmp_path: Path, *, default: str | None = None) -> Path:
    head = f'default_env = "{default}"\n' if default else ""
    path = tmp_path / "sfops.toml"
    path.write_text(head + f"""
[sfops]
audit_log = "{tmp_path}/audit.jsonl"
state_dir = "{tmp_path}/state"

[postgres]
dbname = "streamforge"
user = "sfops"
password = "pw-for-env-tests"
[postgres.members.pg-1]
host = "127.0.0.1"
port = 9
data_dir = "/d"
bin_dir = "/b"
[postgres.members.pg-2]
host = "127.0.0.1"
port = 9
data_dir = "/d2"
bin_dir = "/b"

[environments.prod]
[environments.staging]
read_only = true
""")
    return path


def record(env: str | None, id_: str, action: str = "nginx.drain") -> dict[str, object]:
    data: dict[str, object] = {"ts": f"2026-01-01T00:00:0{id_}Z", "id": id_,
                               "event": "finished", "user": "alice", "host": "h",
                               "action": action, "target": "api-1", "outcome": "succeeded",
                               "duration_s": 1.0}
    if env is not None:
        data["env"] = env
    return data


def test_env_is_a_global_option_before_or_after_the_command() -> None:
    assert hoist_global_options(["audit", "--env", "prod", "-n", "3"]) == [
        "--env", "prod", "audit", "-n", "3"]
    assert hoist_global_options(["pg", "status", "--env=prod"]) == ["--env=prod", "pg",
                                                                    "status"]
    assert chosen_command(["--env", "audit", "status"]) == "status"  # "audit" is the value


def test_several_environments_and_none_chosen_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFOPS_ENV", raising=False)
    config = write_config(tmp_path)
    assert main(["--config", str(config), "audit"]) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert "several environments (prod, staging)" in err and "--env NAME" in err
    assert main(["--config", str(config), "audit", "--env", "qa"]) == exitcodes.USAGE
    assert 'unknown environment "qa" (configured: prod, staging)' in capsys.readouterr().err
    assert main(["--config", str(config), "--env", "prod", "audit"]) == exitcodes.OK
    monkeypatch.setenv("SFOPS_ENV", "staging")
    assert main(["--config", str(config), "audit"]) == exitcodes.OK


def test_a_read_only_environment_refuses_actions_before_any_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFOPS_ENV", raising=False)
    config = write_config(tmp_path)
    code = main(["--config", str(config), "--env", "staging", "pg", "switchover", "--to",
                 "pg-2", "--yes"])
    assert code == exitcodes.READ_ONLY, capsys.readouterr()
    assert "read-only" in capsys.readouterr().err
    assert not (tmp_path / "audit.jsonl").exists()


def test_the_runner_writes_the_environment_into_every_record(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             ) -> None:
    from backends.config import load
    from tui.commands._action import make_runner

    config = load(write_config(tmp_path), env="prod")
    runner = make_runner(argparse.Namespace(read_only=False), config)
    assert runner.audit.env == "prod" and not runner.read_only
    runner.audit.append({"ts": "t", "id": "a", "event": "finished", "action": "x"})
    (line,) = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(line)["env"] == "prod"
    staging = load(write_config(tmp_path), env="staging")
    assert make_runner(argparse.Namespace(read_only=False), staging).read_only


def test_sfops_audit_shows_the_environment_and_filters_by_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFOPS_ENV", raising=False)
    config = write_config(tmp_path, default="prod")
    log = AuditLog(tmp_path / "audit.jsonl")
    for item in (record("prod", "1"), record("staging", "2", "pg.switchover"),
                 record(None, "3", "kafka.drain")):
        log.append(item)

    # No environment chosen (the file's default is used for its paths): every record.
    assert main(["--config", str(config), "audit"]) == exitcodes.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "ENV", "USER"]
    assert [line.split()[1] for line in lines[1:]] == ["prod", "staging", "-"]

    # Chosen: that environment's records only, in the table and in JSON.
    # (A record without one, written before records carried it, is every environment's.)
    assert main(["--config", str(config), "--env", "staging", "audit", "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e.get("env"), e["action"]) for e in entries] == [
        ("staging", "pg.switchover"), (None, "kafka.drain")]
    monkeypatch.setenv("SFOPS_ENV", "prod")
    assert main(["--config", str(config), "audit"]) == exitcodes.OK
    out = capsys.readouterr().out
    assert "nginx.drain" in out and "pg.switchover" not in out
    assert main(["--config", str(config), "audit", "--all-envs"]) == exitcodes.OK
    assert "pg.switchover" in capsys.readouterr().out
