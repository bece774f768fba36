"""Several environments in one file: parsing, merging over shared sections, choosing one
(--env, SFOPS_ENV, default_env), colours, per-environment read-only and state, and errors that
name the key where it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.audit import AuditLog
from backends.config import DEFAULT_ENV, ConfigError, load, parse
from backends.environments import default_colour, merge

SHARED = """
[sfops]
refresh_interval = 1.0
audit_log = "/abs/audit.jsonl"
state_dir = "/abs/state"

[executors.db]
type = "ssh"
host = "db.internal"
user = "sfops"
known_hosts = "/abs/known_hosts"

[postgres]
dbname = "streamforge"
user = "sfops"
password = "not-a-real-one"
"""

MEMBER = """
[environments.{env}.postgres.members.pg-1]
host = "{host}"
port = 5432
data_dir = "/var/lib/postgresql/15/main"
bin_dir = "/usr/lib/postgresql/15/bin"
"""

TWO = SHARED + """
[environments.prod]
[environments.staging]
read_only = true
[environments.staging.postgres]
user = "sfops-staging"
""" + MEMBER.format(env="prod", host="10.0.0.21") + MEMBER.format(env="staging",
                                                                  host="10.1.0.21")


def parsed(text: str, env: str | None = None):
    return parse(text, Path("/abs/sfops.toml"), env)


def problems(text: str, env: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parsed(text, env)
    return list(caught.value.problems)


# --------------------------------------------------------------------------- backward compat


def test_a_file_without_environments_is_the_default_one() -> None:
    single = SHARED + MEMBER.format(env="x", host="h").replace("[environments.x.", "[")
    config = parsed(single)
    assert config.env == DEFAULT_ENV and not config.has_environments
    assert config.environments == {} and config.colour == "neutral"
    assert config.sfops.state_dir == Path("/abs/state")  # unchanged: no per-env directory
    assert config.sfops.lock_dir is None
    assert parsed(single, DEFAULT_ENV).env == DEFAULT_ENV


def test_a_file_without_environments_refuses_another_name() -> None:
    (line,) = problems(SHARED, "prod")
    assert 'unknown environment "prod"' in line and "declares no [environments]" in line


def test_default_env_needs_environments() -> None:
    assert any("default_env: only with [environments]" in p
               for p in problems('default_env = "x"\n' + SHARED))


# --------------------------------------------------------------------------- merging


def test_each_environment_is_the_shared_sections_with_its_own_merged_over() -> None:
    prod = parsed(TWO, "prod")
    staging = parsed(TWO, "staging")
    assert (prod.env, staging.env) == ("prod", "staging")
    assert prod.postgres.members["pg-1"].host == "10.0.0.21"
    assert staging.postgres.members["pg-1"].host == "10.1.0.21"
    # Shared keys reach both; a key the environment sets replaces the shared one.
    assert prod.postgres.dbname == staging.postgres.dbname == "streamforge"
    assert (prod.postgres.user, staging.postgres.user) == ("sfops", "sfops-staging")
    assert set(prod.executors) == set(staging.executors) == {"db", "local"}
    assert prod.sfops.audit_log == staging.sfops.audit_log == Path("/abs/audit.jsonl")
    assert list(prod.environments) == ["prod", "staging"]


def test_merge_replaces_non_tables_and_merges_tables() -> None:
    shared = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged = merge(shared, {"a": {"y": [3]}, "c": 2}, "", "environments.e")
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert shared == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs untouched
    assert merged.origins == {"a": "environments.e", "b": "", "c": "environments.e"}
    assert merged["a"].origins == {"x": "a", "y": "environments.e.a"}


def test_state_dir_is_per_environment_and_locks_stay_shared() -> None:
    prod = parsed(TWO, "prod")
    assert prod.sfops.state_dir == Path("/abs/state/prod")
    assert prod.sfops.lock_dir == Path("/abs/state")
    own = TWO + '[environments.prod.sfops]\nstate_dir = "/elsewhere"\n'
    assert parsed(own, "prod").sfops.state_dir == Path("/elsewhere")


def test_read_only_per_environment() -> None:
    assert not parsed(TWO, "prod").sfops.read_only
    staging = parsed(TWO, "staging")
    assert staging.sfops.read_only
    assert staging.environments["staging"].read_only
    assert not staging.environments["prod"].read_only
    # The environment's [sfops] read_only says the same; giving both is an error.
    both = TWO + "[environments.staging.sfops]\nread_only = false\n"
    assert any("environments.staging.read_only: conflicts with" in p for p in problems(
        both, "staging"))
    # A shared read_only holds for every environment that does not say otherwise.
    shared_ro = TWO.replace('state_dir = "/abs/state"', 'state_dir = "/abs/state"\n'
                            "read_only = true")
    assert parsed(shared_ro, "prod").sfops.read_only
    assert not parsed(shared_ro.replace("[environments.prod]\n",
                                        "[environments.prod]\nread_only = false\n"),
                      "prod").sfops.read_only


# --------------------------------------------------------------------------- choosing


def test_several_environments_and_none_chosen_lists_them() -> None:
    (line,) = problems(TWO)
    assert "several environments (prod, staging)" in line
    assert "--env NAME" in line and "SFOPS_ENV" in line and "default_env" in line


def test_default_env_and_a_single_environment_are_chosen_without_asking() -> None:
    assert parsed('default_env = "staging"\n' + TWO).env == "staging"
    assert parsed('default_env = "staging"\n' + TWO, "prod").env == "prod"  # --env wins
    single = SHARED + "[environments.only]\n" + MEMBER.format(env="only", host="h")
    assert parsed(single).env == "only"


def test_unknown_environment_names_it_and_the_known_ones() -> None:
    (line,) = problems(TWO, "qa")
    assert line == '/abs/sfops.toml: unknown environment "qa" (configured: prod, staging)'
    assert any('default_env: unknown environment "qa"' in p
               for p in problems('default_env = "qa"\n' + TWO))


def test_sfops_env_chooses_and_the_argument_wins(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sfops.toml"
    path.write_text(TWO)
    monkeypatch.setenv("SFOPS_ENV", "staging")
    assert load(path).env == "staging"
    assert load(path, env="prod").env == "prod"
    monkeypatch.setenv("SFOPS_ENV", "")
    with pytest.raises(ConfigError, match="several environments"):
        load(path)


def test_environment_names_are_identifiers() -> None:
    bad = SHARED + '[environments."prod eu"]\n'
    assert any('[environments."prod eu"]: name must match' in p for p in problems(bad))
    assert any("environments: must define at least one" in p
               for p in problems(SHARED + "[environments]\n"))
    assert any("environments: expected a table" in p
               for p in problems("environments = 3\n" + SHARED))


# --------------------------------------------------------------------------- colours


@pytest.mark.parametrize(("name", "colour"), [
    ("prod", "red"), ("production", "red"), ("eu-prod", "red"), ("PROD_2", "red"),
    ("live", "red"), ("staging", "yellow"), ("stg", "yellow"), ("preprod", "yellow"),
    ("uat", "yellow"), ("dev", "neutral"), ("lab", "neutral"), ("products", "neutral"),
])
def test_default_colour_by_name(name: str, colour: str) -> None:
    assert default_colour(name) == colour


def test_colour_is_configurable_and_checked() -> None:
    text = TWO.replace("[environments.prod]\n", '[environments.prod]\ncolour = "magenta"\n')
    config = parsed(text, "staging")
    assert config.colour == "yellow"  # staging's default
    assert config.environments["prod"].colour == "magenta"
    assert parsed(text, "prod").colour == "magenta"
    bad = TWO.replace("[environments.prod]\n", '[environments.prod]\ncolour = "pink"\n')
    assert any("environments.prod.colour: expected one of red, yellow" in p
               and '"pink"' in p for p in problems(bad, "prod"))


# --------------------------------------------------------------------------- errors


def test_errors_name_the_key_where_it_was_written() -> None:
    # In the environment's own table …
    typo = TWO + "[environments.prod.postgres.members.pg-1.extra]\n"
    found = problems(typo.replace('host = "10.0.0.21"', 'host = "10.0.0.21"\nprot = 1'),
                     "prod")
    assert any(p.startswith("/abs/sfops.toml: environments.prod.postgres.members.pg-1.prot: "
                            "unknown key") for p in found), found
    # … and in the shared section it came from.
    shared_typo = TWO.replace('dbname = "streamforge"', 'dbname = "streamforge"\ndbnmae = 1')
    found = problems(shared_typo, "prod")
    assert any(p.startswith("/abs/sfops.toml: postgres.dbnmae: unknown key") for p in found)
    assert any('environment "prod"' in p for p in found)  # which environment was read


def test_only_the_chosen_environment_is_parsed(tmp_path: Path) -> None:
    """A staging bastion need not read production's password file."""
    text = TWO + '[environments.prod.kafka]\nbootstrap_servers = "k:9092"\nnot_a_key = 1\n'
    assert parsed(text, "staging").env == "staging"
    assert any("environments.prod.kafka.not_a_key" in p for p in problems(text, "prod"))


# --------------------------------------------------------------------------- audit


def test_audit_records_carry_the_environment_and_read_per_environment(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, env="prod").append({"ts": "t1", "id": "a", "event": "finished",
                                       "action": "nginx.drain", "outcome": "succeeded"})
    AuditLog(path, env="staging").append({"ts": "t2", "id": "b", "event": "finished",
                                          "action": "nginx.drain", "outcome": "succeeded"})
    AuditLog(path).append({"ts": "t0", "id": "c", "action": "old", "outcome": "succeeded"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("env") for line in lines] == ["prod", "staging", None]
    assert list(lines[0])[:4] == ["ts", "id", "event", "env"]
    assert [r["id"] for r in AuditLog(path).read()] == ["a", "b", "c"]
    assert [r["id"] for r in AuditLog(path, env="prod").read()] == ["a", "c"]
    # A record written before records carried an environment: every environment sees it
    # (an action interrupted then must still be warned about).
    assert [r["id"] for r in AuditLog(path, env=DEFAULT_ENV).read()] == ["c"]
