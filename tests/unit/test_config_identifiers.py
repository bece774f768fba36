"""Names from the configuration are identifiers: PostgreSQL and nginx members, executors
(``[A-Za-z0-9._-]{1,63}``), Kubernetes namespaces (DNS-1123 labels), the nginx upstream. A
bad one is an error naming its key, the key quoted as TOML writes it, never a raw control
character."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.config import IDENTIFIER_RULE, ConfigError, load, parse, toml_key

MINIMAL_PG = """
[postgres]
dbname = "streamforge"
user = "sfops"
[postgres.members.{name}]
host = "127.0.0.1"
"""

NGINX = """
[nginx]
config_file = "/abs/nginx.conf"
upstream_name = "{upstream}"
upstream_file = "/abs/upstream.conf"
[nginx.members.{name}]
address = "127.0.0.1:8001"
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sfops.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return list(info.value.problems)


@pytest.mark.parametrize("name", ["pg-1", "pg_2", "db.internal", "A9", "x" * 63])
def test_good_member_names_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sfops.toml"
    path.write_text(MINIMAL_PG.format(name=toml_key(name)))
    assert list(load(path).postgres.members) == [name]


@pytest.mark.parametrize("name", ["pg 1", "", "x" * 64, "pg/1", "[bold]pg", "pg\x1b[2J",
                                  "pg\u202e1", "pé"])
def test_bad_postgres_member_name_names_its_key(tmp_path: Path, name: str) -> None:
    key = toml_key(name)
    found = problems(tmp_path, MINIMAL_PG.format(name=key))
    path = tmp_path / "sfops.toml"
    assert found == [f"{path}: [postgres.members.{key}]: name must match {IDENTIFIER_RULE}"]
    assert all(ch.isprintable() for ch in found[0])  # the key is quoted with escapes


def test_the_brief_example() -> None:
    with pytest.raises(ConfigError) as info:
        parse(MINIMAL_PG.format(name='"pg 1"'), Path("/etc/sfops/sfops.toml"))
    assert str(info.value) == ('/etc/sfops/sfops.toml: [postgres.members."pg 1"]: '
                               "name must match [A-Za-z0-9._-]{1,63}")


def test_nginx_member_and_upstream(tmp_path: Path) -> None:
    found = problems(tmp_path, NGINX.format(name='"api 1"', upstream="api backend"))
    path = tmp_path / "sfops.toml"
    assert found == [
        f'{path}: [nginx.members."api 1"]: name must match {IDENTIFIER_RULE}',
        f'{path}: nginx.upstream_name: "api backend" must match {IDENTIFIER_RULE}',
    ]


def test_executor_name(tmp_path: Path) -> None:
    found = problems(tmp_path, '[executors."db 1"]\ntype = "local"\n')
    assert found == [f'{tmp_path / "sfops.toml"}: [executors."db 1"]: name must match '
                     f"{IDENTIFIER_RULE}"]


@pytest.mark.parametrize("namespace", ["Streamforge", "-x", "a_b", "a.b", "x" * 64, "ns\x07"])
def test_kubernetes_namespaces_are_dns_labels(tmp_path: Path, namespace: str) -> None:
    found = problems(tmp_path, f"[kubernetes]\nnamespaces = [{_string(namespace)}]\n"
                     f"lease_namespace = {_string(namespace)}\n")
    assert len(found) == 2
    assert found[0].startswith(f"{tmp_path / 'sfops.toml'}: kubernetes.namespaces: ")
    assert found[1].startswith(f"{tmp_path / 'sfops.toml'}: kubernetes.lease_namespace: ")
    assert all("must match a DNS-1123 label" in p for p in found)
    assert all(ch.isprintable() for p in found for ch in p)


def test_good_namespaces_load(tmp_path: Path) -> None:
    path = tmp_path / "sfops.toml"
    path.write_text('[kubernetes]\nnamespaces = ["streamforge", "kube-system", "a1"]\n')
    assert load(path).kubernetes.namespaces == ("streamforge", "kube-system", "a1")


def _string(value: str) -> str:
    import json

    return json.dumps(value)
