"""deploy/compose.yaml: the wiring that matters, read from the file itself (no Docker engine here),
and the file validated against the Compose Specification schema by dclint."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg.conninfo
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
LINT_TOOLS = DEPLOY / "lab" / "install" / "lint-tools.sh"
DCLINT_CONFIG = DEPLOY / "compose" / "dclint.yaml"

# Services that run to completion (dependents wait with service_completed_successfully) and
# interactive tools behind a profile: neither is a long-running server with a health state.
ONE_SHOT = {"kafka-init"}
TOOLS = {"sfops"}
API_SERVICES = ("api1", "api2", "api3")
KAFKA_NODES = ("kafka1", "kafka2", "kafka3")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the file's YAML anchors and `<<` merge keys, as compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to deploy/) of every bind mount."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume!r}"
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            found[target] = source
    return found


def long_running(services: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name in services if name not in ONE_SHOT | TOOLS]


# -- the service set and images --------------------------------------------------------------------


def test_the_described_stack_is_there(services: dict[str, dict[str, Any]]) -> None:
    expected = {"nginx", *API_SERVICES, "pg-1", "pg-2", *KAFKA_NODES} | ONE_SHOT | TOOLS
    assert set(services) == expected


def test_every_image_is_pinned_and_never_latest(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (built services name theirs too)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and "latest" not in tag, f"{name}: {image!r}"
        if "build" not in service:
            # Third-party images: an exact release (PostgreSQL's are major.minor), not a
            # floating major like the seed's `postgres:15`.
            exact = re.match(r"\d+\.\d+(\.\d+)?(-[a-z]+)?$", tag)
            assert exact, f"{name}: {image!r} is not an exact version"


def test_official_images_for_the_corrected_parts(services: dict[str, dict[str, Any]]) -> None:
    assert services["pg-1"]["image"] == services["pg-2"]["image"]
    assert re.fullmatch(r"postgres:15\.\d+(-\w+)?", services["pg-1"]["image"])
    for node in KAFKA_NODES:
        assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", services[node]["image"])
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-\w+)?", services["nginx"]["image"])


def test_built_images_come_from_the_deploy_dockerfiles(services: dict[str, dict[str, Any]]) -> None:
    for name in (*API_SERVICES, "sfops"):
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).is_file()
    dockerfiles = {services[name]["build"]["dockerfile"] for name in API_SERVICES}
    assert dockerfiles == {"deploy/Dockerfile.api"}
    assert len({services[name]["image"] for name in API_SERVICES}) == 1, "one build for api1..3"


# -- health and start order ------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in long_running(services):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_waits_for_health_not_for_start(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must state a condition"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {target}: {spec}"


def test_one_shot_and_tool_services_never_restart(services: dict[str, dict[str, Any]]) -> None:
    for name in ONE_SHOT | TOOLS:
        assert services[name].get("restart") == "no", name
    for name in TOOLS:
        assert services[name].get("profiles"), f"{name} must not start with `compose up`"


def test_no_dependency_cycles(services: dict[str, dict[str, Any]]) -> None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in visiting, f"cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        visiting.add(name)
        for target in services[name].get("depends_on", {}):
            visit(target, (*path, name))
        visiting.discard(name)
        done.add(name)

    for name in services:
        visit(name, ())


# -- secrets ---------------------------------------------------------------------------------------


def test_no_plaintext_secret_in_the_compose_file(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = compose["secrets"]
    for name, service in services.items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                # Only the *_FILE form, naming a docker secret this service mounts.
                assert key.endswith(("_FILE", "PASSFILE")), f"{name}: {key} holds a value"
                assert value.startswith("/run/secrets/"), f"{name}: {key}={value}"
                assert value.removeprefix("/run/secrets/") in mounted, f"{name}: {key}"
            assert not re.search(r"password\s*=", value, re.IGNORECASE), f"{name}: {key}"
    for name, secret in declared.items():
        assert set(secret) == {"file"}, f"secret {name}: from a file only"
        # The directory comes from .env and lives outside the repository.
        assert secret["file"].startswith("${STREAMFORGE_SECRETS_DIR:?"), secret["file"]


def test_env_example_documents_every_variable_and_holds_no_secret() -> None:
    text = (DEPLOY / ".env.example").read_text()
    assigned = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    for key in assigned:
        # Where the secrets are (a directory) is fine; a secret's value is not.
        assert key.endswith("_DIR") or not SECRET_NAME.search(key), key
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    assert used <= set(assigned), f"not in .env.example: {used - set(assigned)}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, "deploy/.env must be git-ignored"


# -- PostgreSQL: primary initialised, replica seeded, both by the lab's scripts --------------------


def test_primary_runs_init_primary_from_initdb(services: dict[str, dict[str, Any]]) -> None:
    primary = services["pg-1"]
    mounts = bind_mounts(primary)
    assert mounts["/opt/streamforge/postgres"] == DEPLOY / "postgres"
    initdb = {t: s for t, s in mounts.items() if t.startswith("/docker-entrypoint-initdb.d/")}
    assert initdb, "nothing mounted into /docker-entrypoint-initdb.d"
    runners = [
        t
        for t, s in initdb.items()
        if re.search(r"^bash /opt/streamforge/postgres/init-primary\.sh$", s.read_text(), re.M)
    ]
    assert runners, "no initdb.d script runs deploy/postgres/init-primary.sh"
    # The image runs *.sql in initdb.d against POSTGRES_DB: none may be mounted there.
    assert not [t for t in initdb if t.endswith(".sql")]

    env = environment(primary)
    script = (DEPLOY / "postgres" / "init-primary.sh").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", script)) - {"PGDATA"}  # PGDATA: set by the image
    assert required <= set(env), f"init-primary.sh needs {required - set(env)}"
    assert env["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert env["HBA_ADDRESS"] == "samenet"


def test_replica_seeds_from_the_primary_through_seed_replica(
    services: dict[str, dict[str, Any]],
) -> None:
    primary, replica = services["pg-1"], services["pg-2"]
    mounts = bind_mounts(replica)
    assert mounts["/opt/streamforge/postgres"] == DEPLOY / "postgres"
    entrypoint = replica["entrypoint"]
    assert entrypoint[0] == "bash"
    wrapper_target = entrypoint[1]
    wrapper_dir = next(
        source for target, source in mounts.items() if wrapper_target.startswith(target + "/")
    )
    wrapper = (wrapper_dir / Path(wrapper_target).name).read_text()
    assert "/opt/streamforge/postgres/seed-replica.sh" in wrapper
    # ... then the image's own entrypoint with compose's command, which starts postgres.
    assert wrapper.rstrip().splitlines()[-1] == 'exec docker-entrypoint.sh "$@"'
    assert str(replica["command"]).split()[0] == "postgres"

    env = environment(replica)
    seed = (DEPLOY / "postgres" / "seed-replica.sh").read_text()
    required = set(re.findall(r"\$\{(\w+):\?\}", seed)) - {"PGDATA", "REPLICATION_PASSFILE"}
    assert required <= set(env), f"seed-replica.sh needs {required - set(env)}"
    assert "REPLICATION_PASSFILE" in wrapper  # written by the wrapper from the secret
    assert env["PRIMARY_HOST"] == "pg-1" and env["PRIMARY_PORT"] == "5432"
    assert env["REPLICA_SLOT"] in environment(primary)["REPLICA_SLOTS"].split()
    assert replica["depends_on"] == {"pg-1": {"condition": "service_healthy"}}
    # The official image's Bitnami-only variables would be silently ignored.
    for service in (primary, replica):
        assert not {k for k in environment(service) if "REPLICATION_MODE" in k or "MASTER" in k}


def test_postgres_members_keep_data_in_named_volumes_with_pg_rewind_support(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in ("pg-1", "pg-2"):
        volume = named_volumes(services[name])["/var/lib/postgresql/data"]
        assert volume in compose["volumes"]
        command = str(services[name]["command"])
        assert "wal_log_hints=on" in command and f"cluster_name={name}" in command
        assert services[name]["stop_signal"] == "SIGINT"  # fast shutdown


# -- Kafka: three KRaft nodes that agree -----------------------------------------------------------


def test_kafka_voters_agree_and_node_ids_are_unique(services: dict[str, dict[str, Any]]) -> None:
    envs = {name: environment(services[name]) for name in KAFKA_NODES}
    node_ids = {name: int(env["KAFKA_NODE_ID"]) for name, env in envs.items()}
    assert len(set(node_ids.values())) == len(KAFKA_NODES)
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1, f"voters differ: {voters}"
    parsed = {}
    for voter in voters.pop().split(","):
        node_id, _, address = voter.partition("@")
        host, _, port = address.rpartition(":")
        parsed[int(node_id)] = (host, port)
    assert parsed == {node_ids[name]: (name, "9093") for name in KAFKA_NODES}
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    for name, env in envs.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert "ZOOKEEPER" not in " ".join(env), name


def test_kafka_durability_and_data_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    volumes = []
    for name in KAFKA_NODES:
        env = environment(services[name])
        for key in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        ):
            assert env[key] == "3", f"{name}: {key}"
        for key in (
            "KAFKA_MIN_INSYNC_REPLICAS",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
        ):
            assert env[key] == "2", f"{name}: {key}"
        volume = named_volumes(services[name])[env["KAFKA_LOG_DIRS"]]
        assert volume in compose["volumes"]
        volumes.append(volume)
    assert len(set(volumes)) == len(KAFKA_NODES)


def test_kafka_init_creates_the_api_topic_durably(services: dict[str, dict[str, Any]]) -> None:
    argv = services["kafka-init"]["command"]
    options = dict(itertools.pairwise(argv))
    topic = environment(services["api1"])["SFAPI_KAFKA_TOPIC"]
    assert options["--topic"] == topic
    assert options["--replication-factor"] == "3"
    assert options["--config"] == "min.insync.replicas=2"
    assert "--if-not-exists" in argv
    assert services["kafka-init"]["image"] == services["kafka1"]["image"]


# -- the API behind nginx --------------------------------------------------------------------------


def test_api_workers_match_the_nginx_upstream(services: dict[str, dict[str, Any]]) -> None:
    upstream = (DEPLOY / "nginx" / "conf.d" / "upstream.conf").read_text()
    members = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream, re.M)
    assert {host for host, _ in members} == set(API_SERVICES)
    dockerfile = (DEPLOY / "Dockerfile.api").read_text()
    cmd_port = re.search(r'^CMD \[.*"--port", "(\d+)"\]', dockerfile, re.M)
    assert cmd_port is not None
    assert {port for _, port in members} == {cmd_port.group(1)}
    for name in API_SERVICES:
        assert environment(services[name])["SFAPI_WORKER_NAME"] == name
    nginx_mounts = bind_mounts(services["nginx"])
    assert nginx_mounts["/etc/nginx/nginx.conf"] == DEPLOY / "nginx" / "nginx.conf"
    assert nginx_mounts["/etc/nginx/conf.d"] == DEPLOY / "nginx" / "conf.d"


def test_api_database_conninfo_follows_the_primary_without_a_password(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in API_SERVICES:
        env = environment(services[name])
        conninfo = psycopg.conninfo.conninfo_to_dict(env["SFAPI_DATABASE_URL"])
        assert "password" not in conninfo
        assert conninfo["target_session_attrs"] == "read-write"
        assert conninfo["host"].split(",") == ["pg-1", "pg-2"]
        assert env["SFAPI_KAFKA_BOOTSTRAP"].split(",") == [f"{n}:9092" for n in KAFKA_NODES]
        assert float(env["SFAPI_SHUTDOWN_GRACE"]) < _seconds(services[name]["stop_grace_period"])


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


def test_bind_mount_sources_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) is missing"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"


def test_compose_helper_scripts_are_valid_bash() -> None:
    for script in sorted((DEPLOY / "compose").rglob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_sfops_compose_config_is_valid(tmp_path: Path) -> None:
    config_module = pytest.importorskip("backends.config")
    text = (DEPLOY / "compose" / "sfops.toml").read_text()
    secret = tmp_path / "pg_sfops_monitor_password"
    secret.write_text("not-a-real-password\n")
    config = config_module.parse(
        text.replace("/run/secrets/pg_sfops_monitor_password", str(secret)),
        tmp_path / "sfops.toml",
    )
    assert config.sfops.read_only
    # Read-only in a container: the monitoring role, never the superuser's password.
    assert config.postgres.user == "sfops_monitor"
    assert config.postgres.operator_user is None
    assert {m.address for m in config.nginx.members.values()} == {f"{a}:8000" for a in API_SERVICES}
    assert {m.host for m in config.postgres.members.values()} == {"pg-1", "pg-2"}


# -- the Compose Specification schema (dclint) -----------------------------------------------------


def _dclint() -> str | None:
    out = subprocess.run(
        ["bash", str(LINT_TOOLS), "--print-bin"], capture_output=True, text=True, check=True
    )
    path = out.stdout.strip()
    return path if Path(path).is_file() else shutil.which("dclint")


def test_compose_file_passes_the_compose_spec_schema_and_dclint() -> None:
    dclint = _dclint()
    if dclint is None:
        pytest.skip(
            "dclint is not installed: run `bash deploy/lab/install/lint-tools.sh` "
            "(npm install of dclint into ~/.cache/sfops/node-tools)"
        )
    result = subprocess.run(
        [dclint, "--color", "false", "-c", str(DCLINT_CONFIG), "--max-warnings", "0",
         str(COMPOSE_FILE)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dclint_really_checks_the_schema(tmp_path: Path) -> None:
    """A file the Compose Specification rejects must fail, or the check above proves nothing."""
    dclint = _dclint()
    if dclint is None:
        pytest.skip("dclint is not installed: run `bash deploy/lab/install/lint-tools.sh`")
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  web:\n    image: nginx:1.28.0\n    helthcheck: {}\n")
    result = subprocess.run(
        [dclint, "--color", "false", str(broken)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "invalid-schema" in result.stdout
