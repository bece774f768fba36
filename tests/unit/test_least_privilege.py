"""Which identity each mode uses, without servers: reads use the read-only identities (every
mode), actions the operator ones, and read-only mode (flag or file) never loads an operator
identity. The lab proves the same against real servers (tests/integration/
test_least_privilege.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from backends.actions import ReadOnlyError
from backends.config import ConfigError, SfopsConfig, parse
from backends.kubernetes.service import build_service as build_k8s
from backends.locks import manager_for
from backends.postgres.cluster import PgCluster
from backends.postgres.connection import MemberConnection
from backends.postgres.service import build_service as build_pg
from tui.commands._action import load_config


def kubeconfig(tmp_path: Path, name: str, server: str) -> Path:
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": f"{name}-token"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": name}}],
    }))
    return path


def secret(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text(f"{name}-secret\n")
    return path


def config_text(tmp_path: Path, *, read_only: bool = False, k8s_extra: str = "",
                pg_extra: str = "") -> str:
    default = kubeconfig(tmp_path, "default", "http://default.invalid:1")
    return (f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
            f"read_only = {'true' if read_only else 'false'}\n"
            f'[kubernetes]\nkubeconfig = "{default}"\nnamespaces = ["streamforge"]\n'
            f"{k8s_extra}"
            f'[postgres]\ndbname = "streamforge"\nuser = "sfops"\n'
            f'password_file = "{secret(tmp_path, "pw-default")}"\n{pg_extra}'
            f'[postgres.members.pg-1]\nhost = "127.0.0.1"\nport = 5432\n')


def full(tmp_path: Path, *, read_only: bool = False) -> SfopsConfig:
    ro = kubeconfig(tmp_path, "readonly", "http://readonly.invalid:1")
    op = kubeconfig(tmp_path, "operator", "http://operator.invalid:1")
    text = config_text(
        tmp_path, read_only=read_only,
        k8s_extra=f'readonly_kubeconfig = "{ro}"\noperator_kubeconfig = "{op}"\n',
        pg_extra=(f'readonly_user = "monitor"\n'
                  f'readonly_password_file = "{secret(tmp_path, "pw-monitor")}"\n'
                  f'operator_user = "operator"\n'
                  f'operator_password_env = "SFOPS_TEST_OPERATOR_PW"\n'))
    return parse(text, tmp_path / "sfops.toml")


@pytest.fixture(autouse=True)
def operator_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_TEST_OPERATOR_PW", "operator-secret")


# ----------------------------------------------------------------------------- the flag


@pytest.mark.parametrize("flag", [True, False])
def test_the_read_only_flag_is_the_files_read_only(tmp_path: Path, flag: bool) -> None:
    path = tmp_path / "sfops.toml"
    path.write_text(config_text(tmp_path))
    config = load_config(argparse.Namespace(config=path, read_only=flag))
    assert config is not None and config.sfops.read_only is flag
    path.write_text(config_text(tmp_path, read_only=True))
    config = load_config(argparse.Namespace(config=path, read_only=flag))
    assert config is not None and config.sfops.read_only is True


# ----------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("read_only", [True, False])
def test_kubernetes_reads_use_the_read_only_identity_in_every_mode(tmp_path: Path,
                                                                   read_only: bool) -> None:
    service = build_k8s(full(tmp_path, read_only=read_only))
    assert service is not None
    assert service.client.host == "http://readonly.invalid:1"
    assert service.client.connection.token == "Bearer readonly-token"
    if read_only:
        with pytest.raises(ReadOnlyError):
            service.operator_client()
    else:
        operator = service.operator_client()
        assert operator.host == "http://operator.invalid:1"
        assert operator.connection.token == "Bearer operator-token"
        assert service.operator_client() is operator  # built once
    asyncio.run(service.close())


def test_read_only_mode_never_reads_the_operator_kubeconfig(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-operator.kubeconfig"
    ro = kubeconfig(tmp_path, "readonly", "http://readonly.invalid:1")
    extra = f'readonly_kubeconfig = "{ro}"\noperator_kubeconfig = "{missing}"\n'
    config = parse(config_text(tmp_path, read_only=True, k8s_extra=extra),
                   tmp_path / "sfops.toml")
    service = build_k8s(config)
    assert service is not None
    with pytest.raises(ReadOnlyError):
        service.operator_client()
    assert manager_for(config).lease is None  # no Lease client either
    # Outside read-only mode the same file is read at the first action, and named.
    service = build_k8s(parse(config_text(tmp_path, k8s_extra=extra), tmp_path / "s.toml"))
    assert service is not None
    with pytest.raises(ConfigError, match="operator_kubeconfig"):
        service.operator_client()


def test_without_separate_identities_everything_uses_kubeconfig(tmp_path: Path) -> None:
    service = build_k8s(parse(config_text(tmp_path), tmp_path / "sfops.toml"))
    assert service is not None
    assert service.client.host == "http://default.invalid:1"
    assert service.operator_client() is service.client


def test_leases_are_taken_as_the_operator(tmp_path: Path) -> None:
    manager = manager_for(full(tmp_path))
    assert manager.lease is not None
    client = manager.lease.locks._client()  # type: ignore[attr-defined]
    assert client.connection.token == "Bearer operator-token"


# ----------------------------------------------------------------------------- PostgreSQL


def test_postgres_polls_connect_as_the_read_only_role_in_read_only_sessions(
        tmp_path: Path) -> None:
    service = build_pg(full(tmp_path))
    assert service is not None
    kwargs = service.connection("pg-1")._kwargs()
    assert kwargs["user"] == "monitor" and kwargs["password"] == "pw-monitor-secret"
    assert "-c default_transaction_read_only=on" in kwargs["options"]
    assert kwargs["application_name"] == "sfops"


def test_postgres_actions_connect_as_the_operator_in_read_write_sessions(
        tmp_path: Path) -> None:
    config = full(tmp_path)
    cluster = PgCluster(config)
    kwargs = cluster.conn("pg-1")._kwargs()
    assert kwargs["user"] == "operator" and kwargs["password"] == "operator-secret"
    assert "default_transaction_read_only" not in kwargs["options"]
    assert kwargs["application_name"] == "sfops-operator"
    assert cluster.conn("pg-1") is not cluster.service.connection("pg-1")
    assert "user=operator" in cluster.superuser_conninfo("pg-1")
    assert cluster.passfile_text("pg-1").strip().endswith(":operator:operator-secret")
    # The polls the cluster reads through stay the monitor's.
    assert cluster.service.connection("pg-1")._kwargs()["user"] == "monitor"
    asyncio.run(cluster.close())


def test_postgres_identities_fall_back_to_user(tmp_path: Path) -> None:
    config = parse(config_text(tmp_path), tmp_path / "sfops.toml")
    assert config.postgres is not None
    poll = MemberConnection(config.postgres, config.postgres.members["pg-1"])._kwargs()
    assert poll["user"] == "sfops" and poll["password"] == "pw-default-secret"
    assert "-c default_transaction_read_only=on" in poll["options"]  # read-only all the same
    cluster = PgCluster(config)
    assert cluster.conn("pg-1")._kwargs()["user"] == "sfops"
    asyncio.run(cluster.close())


def test_a_role_password_without_its_user_is_a_configuration_error(tmp_path: Path) -> None:
    extra = f'operator_password_file = "{secret(tmp_path, "pw-op")}"\n'
    with pytest.raises(ConfigError, match=r"postgres\.operator_password_file: needs "
                                          r"operator_user"):
        parse(config_text(tmp_path, pg_extra=extra), tmp_path / "sfops.toml")


def test_every_identity_password_is_a_secret_to_redact(tmp_path: Path) -> None:
    values = {s.reveal() for s in full(tmp_path).secrets()}
    assert {"pw-default-secret", "pw-monitor-secret", "operator-secret"} <= values
