"""The lab's Kafka is secured (SASL_SSL, SCRAM-SHA-512, the lab's CA) and sfops reaches it only
with the right settings: a wrong CA or a wrong SASL password gives an error that names the
``[kafka]`` key to fix — from ``sfops kafka status`` and from a drain — and changes nothing.
Every other Kafka test (test_kafka.py, test_lab_kafka.py, the fault matrix) runs through the
secured path too, as the lab's default."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from confluent_kafka.admin import AdminClient

from backends.kafka.model import KafkaSecurityError
from backends.kafka.security import KafkaSecurity
from backends.kafka.worker import IsolatedAdmin
from backends.secrets import Secret
from deploy.lab import kafka as labkafka
from deploy.lab import tls
from tests.conftest import sfops_json

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

WRONG_PASSWORD = "not-the-sfops-password-0451"


@pytest.fixture(scope="module")
def kafka_lab(lab: Any) -> Any:
    return lab.ensure("kafka")


def replica_orders(lab: Any) -> dict[tuple[str, int], list[int]]:
    admin = AdminClient({**labkafka.client_config(lab.lab), "log_level": 0})
    metadata = admin.list_topics(timeout=10)
    return {(name, pid): list(p.replicas) for name, topic in metadata.topics.items()
            for pid, p in topic.partitions.items()}


def variant(lab: Any, tmp_path: Path, **changes: Any) -> Path:
    """The lab's configuration with its own state and audit log, and ``changes`` to
    ``[kafka]`` (a value None removes the key)."""
    data = tomllib.loads(lab.config_path.read_text())
    data["sfops"] = {**data.get("sfops", {}), "state_dir": str(tmp_path / "state"),
                     "audit_log": str(tmp_path / "audit.jsonl")}
    section = {**data["kafka"], **changes}
    data["kafka"] = {k: v for k, v in section.items() if v is not None}
    path = tmp_path / "sfops.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def sfops(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    code, data, stderr = sfops_json(config, "kafka", *args, "--json")
    return code, data, json.dumps(data) + stderr


def refused_everywhere(kafka_lab: Any, config: Path, key: str) -> None:
    before = replica_orders(kafka_lab)
    code, data, text = sfops(config, "status")
    print(f"status: rc {code}: {data['error']}")
    assert code == 5 and data["health"] == "unreachable", text
    assert data["error"].startswith(key), data["error"]
    code, data, text = sfops(config, "drain", "2", "--yes")
    print(f"drain: rc {code}: {data['error']}")
    assert code == 3, text
    assert key in data["error"], data["error"]
    assert WRONG_PASSWORD not in text
    # Nothing changed: no drain record, every replica order as it was.
    assert not list((config.parent / "state").glob("kafka-drain-*"))
    assert replica_orders(kafka_lab) == before


def test_the_lab_refuses_a_plaintext_client(kafka_lab: Any) -> None:
    admin = AdminClient({"bootstrap.servers": labkafka.bootstrap_servers(kafka_lab.lab),
                         "log_level": 0, "socket.timeout.ms": 3000})
    with pytest.raises(Exception):
        admin.list_topics(timeout=3)
    section = kafka_lab.config().kafka
    assert section.security.protocol == "SASL_SSL"
    assert section.security.sasl_mechanism == "SCRAM-SHA-512"
    assert section.security.ssl_ca_location == tls.service_ca(kafka_lab.lab)


def test_wrong_ca_names_ssl_ca_location_and_changes_nothing(kafka_lab: Any,
                                                            tmp_path: Path) -> None:
    other_ca = tls.ensure_ca(tmp_path / "other-ca", "not-the-lab-ca")
    config = variant(kafka_lab, tmp_path, ssl_ca_location=str(other_ca))
    refused_everywhere(kafka_lab, config, "[kafka] ssl_ca_location: the broker's certificate "
                       f"is not signed by the CA in {other_ca}")


def test_wrong_password_names_sasl_password_and_changes_nothing(kafka_lab: Any,
                                                                tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text(WRONG_PASSWORD + "\n")
    config = variant(kafka_lab, tmp_path, sasl_password_file=str(wrong))
    refused_everywhere(kafka_lab, config,
                       "[kafka] sasl_password: authentication failed (SCRAM-SHA-512, user sfops)")


def test_the_reassignment_client_is_secured_too(kafka_lab: Any) -> None:
    """kafka-python in the admin worker: with the lab's settings it lists (no reassignment
    in progress); with a wrong password it names the key."""
    section = kafka_lab.config().kafka

    async def run(security: KafkaSecurity) -> Any:
        admin = IsolatedAdmin(section.bootstrap_servers, section.request_timeout,
                              security=security)
        try:
            return await admin.ongoing_reassignments()
        finally:
            await admin.close()

    assert asyncio.run(run(section.security)) == []
    from dataclasses import replace

    wrong = replace(section.security, sasl_password=Secret(WRONG_PASSWORD))
    with pytest.raises(KafkaSecurityError, match=r"^\[kafka\] sasl_password: authentication "
                       r"failed \(SCRAM-SHA-512, user sfops\)"):
        asyncio.run(run(wrong))
