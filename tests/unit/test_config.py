from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backends.config import (
    ConfigError,
    Secret,
    SshExecutorConfig,
    load,
    parse,
    redact_text,
    redacted,
)
from backends.secrets import forget_all

FULL = """
[sfops]
refresh_interval = 1.5
audit_log = "/abs/audit.jsonl"
state_dir = "state"
read_only = true

[executors.local]
type = "local"

[executors.lab-ssh]
type = "ssh"
host = "127.0.0.1"
port = 15420
user = "sfops-lab"
client_keys = ["/abs/ssh/id_ed25519"]
known_hosts = "/abs/ssh/known_hosts"
connect_timeout = 5.0

[nginx]
executor = "lab-ssh"
nginx_binary = "/usr/sbin/nginx"
prefix = "/abs/nginx"
config_file = "/abs/nginx/nginx.conf"
pid_file = "/abs/nginx/nginx.pid"
upstream_name = "api_backend"
upstream_file = "/abs/nginx/conf.d/upstream.conf"
access_log = "/abs/nginx/logs/access.json"
stub_status_url = "http://127.0.0.1:15400/nginx_status"
[nginx.members.api-1]
address = "127.0.0.1:15401"
health_url = "http://127.0.0.1:15401/health/ready"
[nginx.members.api-2]
address = "127.0.0.1:15402"
health_url = "http://127.0.0.1:15402/health/ready"

[postgres]
dbname = "streamforge"
user = "sfops"
password_file = "PWFILE"
connect_timeout = 3.0
statement_timeout = 5.0
max_lag_on_failover = 1048576
[postgres.members.pg-1]
host = "127.0.0.1"
port = 15410
executor = "local"
data_dir = "/abs/pg-1/data"
bin_dir = "/usr/lib/postgresql/15/bin"
os_user = "postgres"

[kafka]
bootstrap_servers = "127.0.0.1:15430,127.0.0.1:15431,127.0.0.1:15432"
consumer_groups = ["streamforge-consumer"]
request_timeout = 5.0

[kubernetes]
kubeconfig = "/abs/k8s/admin.kubeconfig"
context = "sfops-lab"
namespaces = ["streamforge"]
"""


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    path = tmp_path / "pg-sfops"
    path.write_text("s3cr3t-pw\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sfops.toml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    for problem in info.value.problems:
        assert problem.startswith(f"{path}: "), problem
    return list(info.value.problems)


def test_full_spec_example_loads(tmp_path: Path, pwfile: Path) -> None:
    path = write(tmp_path, FULL.replace("PWFILE", str(pwfile)))
    config = load(path)
    assert config.path == path
    assert config.sfops.refresh_interval == 1.5
    assert config.sfops.read_only is True
    assert config.sfops.state_dir == tmp_path / "state"  # relative to the config file
    ssh = config.executors["lab-ssh"]
    assert isinstance(ssh, SshExecutorConfig)
    assert ssh.port == 15420 and ssh.client_keys == (Path("/abs/ssh/id_ed25519"),)
    assert ssh.known_hosts == Path("/abs/ssh/known_hosts")
    assert config.nginx is not None
    assert list(config.nginx.members) == ["api-1", "api-2"]
    assert config.nginx.members["api-2"].address == "127.0.0.1:15402"
    assert config.nginx.executor == "lab-ssh"
    assert config.postgres is not None
    assert config.postgres.password == Secret("s3cr3t-pw")
    assert config.postgres.members["pg-1"].data_dir == Path("/abs/pg-1/data")
    assert config.kafka is not None and config.kafka.consumer_groups == ("streamforge-consumer",)
    assert config.kubernetes is not None and config.kubernetes.namespaces == ("streamforge",)
    assert config.secrets() == [Secret("s3cr3t-pw")]


def test_only_sfops_defaults_are_needed(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""))
    assert config.sfops.refresh_interval == 2.0
    assert config.sfops.read_only is False
    assert config.nginx is None and config.postgres is None
    assert config.kafka is None and config.kubernetes is None
    assert "local" in config.executors


def test_message_names_file_key_and_problem(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, """
[nginx]
config_file = "/n.conf"
upstream_name = "u"
upstream_file = "/u.conf"
[nginx.members.api-1]
address = "foo"
""")
    path = tmp_path / "sfops.toml"
    assert problems == [f'{path}: nginx.members.api-1.address: expected "host:port", got "foo"']


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, """
[sfops]
refresh_intreval = 2.0
[nginxx]
x = 1
""")
    assert any(p.endswith("sfops.refresh_intreval: unknown key") for p in problems)
    assert any(p.endswith("nginxx: unknown key") for p in problems)


def test_wrong_types_and_values(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, """
[sfops]
refresh_interval = "fast"
read_only = "yes"
[executors.box]
type = "ssh"
host = "h"
user = "u"
port = 70000
connect_timeout = -1
[executors.other]
type = "telnet"
[kafka]
bootstrap_servers = "a:1,b"
consumer_groups = "g"
[kubernetes]
namespaces = []
""")
    text = "\n".join(problems)
    assert "sfops.refresh_interval: expected a number, got a string" in text
    assert "sfops.read_only: expected a boolean (true/false), got a string" in text
    assert "executors.box.port: must be between 1 and 65535, got 70000" in text
    assert "executors.box.connect_timeout: must be > 0, got -1" in text
    assert 'executors.other.type: expected "local" or "ssh", got "telnet"' in text
    assert 'kafka.bootstrap_servers: expected "host:port[,host:port...]", got "b"' in text
    assert "kafka.consumer_groups: expected an array of strings, got a string" in text
    assert "kubernetes.namespaces: must list at least one namespace" in text
    assert len(problems) == 8  # all reported in one pass


def test_kafka_leader_balance_limits(tmp_path: Path) -> None:
    config = load(write(tmp_path, """
[kafka]
bootstrap_servers = "a:1"
max_not_preferred_leaders = 10
max_leader_skew = 4
"""))
    assert config.kafka is not None
    assert (config.kafka.max_not_preferred_leaders, config.kafka.max_leader_skew) == (10, 4)
    defaults = load(write(tmp_path, '[kafka]\nbootstrap_servers = "a:1"\n')).kafka
    assert defaults is not None
    assert (defaults.max_not_preferred_leaders, defaults.max_leader_skew) == (0, 0)
    problems = errors_of(tmp_path, """
[kafka]
bootstrap_servers = "a:1"
max_not_preferred_leaders = -1
max_leader_skew = "high"
""")
    path = tmp_path / "sfops.toml"
    assert problems == [
        f"{path}: kafka.max_not_preferred_leaders: must be >= 0, got -1",
        f"{path}: kafka.max_leader_skew: expected an integer, got a string",
    ]


def test_required_keys_and_executor_references(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, """
[nginx]
executor = "nowhere"
upstream_name = "u"
upstream_file = "/u.conf"
[nginx.members.api-1]
address = "h:1"
[postgres]
dbname = "d"
user = "u"
[postgres.members.pg-1]
host = "h"
executor = "gone"
""")
    text = "\n".join(problems)
    assert 'nginx.executor: unknown executor "nowhere" (configured: local)' in text
    assert "nginx.config_file: required key is missing (expected a string)" in text
    assert 'postgres.members.pg-1.executor: unknown executor "gone"' in text


def test_members_required(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, """
[nginx]
config_file = "/n.conf"
upstream_name = "u"
upstream_file = "/u.conf"
""")
    assert [p.split(": ", 1)[1] for p in problems] == ["nginx.members: required table is missing"]


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[sfops]\nrefresh_interval = 2.0\nread_only = \n")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error:")
    assert "line 3" in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read: No such file or directory$"):
        load(path)


POSTGRES = """
[postgres]
dbname = "d"
user = "u"
{password}
[postgres.members.pg-1]
host = "h"
"""


def test_missing_password_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "pg"
    problems = errors_of(tmp_path, POSTGRES.format(password=f'password_file = "{missing}"'))
    assert problems == [
        f"{tmp_path / 'sfops.toml'}: postgres.password_file: cannot read {missing}: "
        "No such file or directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file_names_path_not_content(tmp_path: Path) -> None:
    secret = tmp_path / "pg"
    secret.write_text("topsecret\n")
    secret.chmod(0)
    problems = errors_of(tmp_path, POSTGRES.format(password=f'password_file = "{secret}"'))
    assert "Permission denied" in problems[0] and str(secret) in problems[0]
    assert "topsecret" not in problems[0]


def test_password_from_env_and_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_TEST_PW", "from-env")
    config = load(write(tmp_path, POSTGRES.format(password='password_env = "SFOPS_TEST_PW"')))
    assert config.postgres is not None and config.postgres.password == Secret("from-env")
    config = load(write(tmp_path, POSTGRES.format(password='password = "inline"')))
    assert config.postgres is not None and config.postgres.password == Secret("inline")
    # Taken out of the environment as it was read (no child of sfops inherits it); read
    # again, it is the value first read.
    assert "SFOPS_TEST_PW" not in os.environ
    config = load(write(tmp_path, POSTGRES.format(password='password_env = "SFOPS_TEST_PW"')))
    assert config.postgres is not None and config.postgres.password == Secret("from-env")
    forget_all()  # as a new sfops process, the variable not set
    problems = errors_of(tmp_path, POSTGRES.format(password='password_env = "SFOPS_TEST_PW"'))
    assert problems[0].endswith(
        "postgres.password_env: environment variable SFOPS_TEST_PW is not set")


def test_two_password_sources_conflict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_TEST_PW", "x")
    problems = errors_of(tmp_path, POSTGRES.format(
        password='password_env = "SFOPS_TEST_PW"\npassword = "y"'))
    assert problems[0].endswith("postgres.password: conflicts with password_env: "
                                "give only one password source")


# --------------------------------------------------------------------------- redaction


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "'***'"
    assert str(secret) == "'***'"
    assert f"{secret}" == "***"
    assert "hunter2" not in repr([secret, {"pw": secret}])
    assert secret.reveal() == "hunter2"


def test_redacted_config_hides_secrets(tmp_path: Path, pwfile: Path) -> None:
    config = load(write(tmp_path, FULL.replace("PWFILE", str(pwfile))))
    plain = redacted(config)
    text = json.dumps(plain)  # JSON-ready
    assert "s3cr3t-pw" not in text
    assert plain["postgres"]["password"] == "***"
    assert plain["nginx"]["members"]["api-1"]["address"] == "127.0.0.1:15401"
    assert plain["executors"]["lab-ssh"]["client_keys"] == ["/abs/ssh/id_ed25519"]
    assert "s3cr3t-pw" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=h port=5 user=u password=hunter2 dbname=d",
         "host=h port=5 user=u password=*** dbname=d"),
        ("password='with space' host=h", "password=*** host=h"),
        ("postgresql://sfops:hunter2@db:5432/x", "postgresql://sfops:***@db:5432/x"),
        ('FATAL: password authentication failed for user "sfops"',
         'FATAL: password authentication failed for user "sfops"'),
        ("PGPASSWORD=hunter2 psql", "PGPASSWORD=*** psql"),
        ("echoed the secret hunter2 back", "echoed the secret *** back"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text, [Secret("hunter2")]) == expected


def test_parse_uses_given_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"/etc/x.toml: sfops.read_only"):
        parse("[sfops]\nread_only = 1\n", Path("/etc/x.toml"))


def test_password_file_that_is_a_directory(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, POSTGRES.format(password=f'password_file = "{tmp_path}"'))
    assert problems[0].endswith(f"postgres.password_file: cannot read {tmp_path}: Is a directory")


# --------------------------------------------------------------------------- SSH jump hosts

JUMP = """
[sfops]
[executors.edge]
type = "ssh"
host = "edge.example"
user = "op"
known_hosts = "/abs/kh-edge"
connect_timeout = 2.0
[executors.bastion]
type = "ssh"
host = "bastion.internal"
user = "op"
known_hosts = "/abs/kh-bastion"
jump = ["edge"]
[executors.inner]
type = "ssh"
host = "inner.internal"
user = "op"
known_hosts = "/abs/kh-inner"
[executors.db1]
type = "ssh"
host = "db1.internal"
user = "postgres"
known_hosts = "/abs/kh"
connect_timeout = 4.0
jump = ["bastion", "inner"]
"""


def test_jump_chain_resolves_to_the_hops_in_order(tmp_path: Path) -> None:
    config = load(write(tmp_path, JUMP))
    db1 = config.executors["db1"]
    assert isinstance(db1, SshExecutorConfig)
    assert db1.jump == ("bastion", "inner")
    # The first hop is reached as its own entry says (through edge); then inner through it.
    assert [hop.name for hop in db1.route] == ["edge", "bastion", "inner"]
    assert [str(hop.known_hosts) for hop in db1.route] == [
        "/abs/kh-edge", "/abs/kh-bastion", "/abs/kh-inner"]
    assert db1.connect_bound == 2.0 + 5.0 + 5.0 + 4.0  # every hop's connect_timeout, then its own
    edge = config.executors["edge"]
    assert isinstance(edge, SshExecutorConfig) and edge.route == () and edge.connect_bound == 2.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("[executors.edge]", '[executors.edge]\njump = ["db1"]'),
         "executors.bastion.jump: cycle in the jump-host chain: edge → db1 → bastion → edge"),
        (('jump = ["edge"]', 'jump = ["bastion"]'),
         'executors.bastion.jump: cycle in the jump-host chain: bastion → bastion'),
        (('jump = ["edge"]', 'jump = ["nowhere"]'),
         'executors.bastion.jump: "nowhere" unknown executor (configured: '),
        (('jump = ["edge"]', 'jump = ["local"]'),
         'executors.bastion.jump: "local" is local: a jump host must be an ssh executor'),
        (('jump = ["bastion", "inner"]', 'jump = ["inner", "bastion"]'),
         'executors.db1.jump: "bastion" is reached through "inner" here but has a jump of '
         "its own"),
        (('jump = ["bastion", "inner"]', 'jump = ["edge", "edge"]'),
         "executors.db1.jump: cycle in the jump-host chain: db1 → edge"),
        (('jump = ["edge"]', 'jump = "edge"'),
         "executors.bastion.jump: expected an array of strings, got a string"),
    ],
)
def test_bad_jump_chains_are_refused_naming_the_key(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = "\n".join(errors_of(tmp_path, JUMP.replace(*change)))
    assert expected in text, text


def test_a_jump_cycle_through_several_hosts_is_named_once(tmp_path: Path) -> None:
    text = JUMP.replace("[executors.edge]", '[executors.edge]\njump = ["db1"]')
    problems = [p for p in errors_of(tmp_path, text) if "cycle" in p]
    assert len(problems) == 1, problems
    assert "edge → db1 → bastion → edge" in problems[0]
