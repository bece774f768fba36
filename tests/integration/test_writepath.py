"""`sfops verify` and the after-action canary against the lab's real nginx, API workers,
PostgreSQL pair, Kafka cluster and consumer (issue #17, write-path verification). Nothing is
faked: each fault is a real one (the consumer stopped, the primary made read-only), and each
test puts the lab back as it found it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from deploy.lab.core import LabError

pytestmark = pytest.mark.integration

HOPS = ["nginx", "api", "postgres", "kafka", "consumer"]
WORKERS = ("api-1", "api-2", "api-3")


def verify(lab: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    return lab.sfops_json("verify", "-o", "json", *args, timeout=120)  # type: ignore[no-any-return]


def audit_records(lab: Any) -> list[dict[str, Any]]:
    path = Path(lab.config().sfops.audit_log)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def primary(lab: Any) -> str:
    for name in ("pg-1", "pg-2"):
        with superuser(lab, name) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row is not None and not row[0]:
            return name
    pytest.fail("no primary in the lab")


@contextmanager
def superuser(lab: Any, member: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(**lab.component(member).superuser_conninfo(lab.lab),
                         autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    return write_path_ready(lab)


def write_path_ready(lab: Any) -> Any:
    """The lab with every hop of the write path running (Kafka included)."""
    try:
        lab.ensure("pg", "kafka", "api", "nginx")
    except LabError:  # pg-1 is a standby (an earlier switchover): its init step refuses
        lab.ensure("kafka", "api", "nginx")
    # Workers started before Kafka publish nothing: ensure() restarted them (deploy/lab/ops.py)
    # so every worker nginx may pick has the Kafka hop.
    return lab


def test_verify_succeeds_with_every_hop_timed(stack: Any) -> None:
    code, data, err = verify(stack)
    assert code == 0, (data, err)
    report = data["write_path"]
    assert report["ok"] is True and report["failed_hop"] is None
    assert [h["hop"] for h in report["hops"]] == HOPS
    for hop in report["hops"]:
        assert hop["status"] == "ok", hop
        assert isinstance(hop["ms"], float) and hop["ms"] >= 0, hop
    assert report["served_by"] in WORKERS
    record = audit_records(stack)[-1]
    assert (record["action"], record["target"], record["outcome"]) == (
        "verify", "write-path", "succeeded")
    assert record["write_path"]["key"] == report["key"] == record["params"]["key"]
    assert [c["status"] for c in record["verify"]] == ["pass"] * 5


def test_table_output_names_each_hop(stack: Any) -> None:
    done = stack.sfops("verify")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for label in ("nginx accepted", "API handled", "PostgreSQL committed",
                  "Kafka acknowledged", "consumer received"):
        assert any(line.startswith(label) and " ok " in line and " ms" in line
                   for line in lines), (label, done.stdout)


def test_a_stopped_consumer_fails_naming_the_consumer_hop(stack: Any) -> None:
    stack.stop("kafka-consumer")
    try:
        code, data, err = verify(stack, "--timeout", "6")
    finally:
        stack.start("kafka-consumer")
    assert code == 1, (data, err)
    report = data["write_path"]
    assert report["failed_hop"] == "consumer", report
    assert [h["status"] for h in report["hops"]] == ["ok", "ok", "ok", "ok", "failed"]
    assert report["error"].startswith("consumer received: no consumer recorded it within")
    assert data["outcome"] == "failed" and "consumer received" in data["error"]
    assert audit_records(stack)[-1]["write_path"]["failed_hop"] == "consumer"


def test_a_read_only_primary_fails_naming_postgresql(stack: Any) -> None:
    member = primary(stack)
    with superuser(stack, member) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
    try:
        code, data, err = verify(stack, "--timeout", "6")
    finally:
        with superuser(stack, member) as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
    assert code == 1, (data, err)
    report = data["write_path"]
    assert report["failed_hop"] == "postgres", report
    assert [h["status"] for h in report["hops"][:3]] == ["ok", "ok", "failed"]
    assert report["hops"][3]["status"] == report["hops"][4]["status"] == "not reached"
    failed = report["hops"][2]["detail"]
    assert any(word in failed for word in ("read-only", "read-write", "database")), failed
    assert report["attempts"] > 1, "sent again (same key) until the timeout"
    # And back: the canary passes again once the primary takes writes.
    code, data, err = verify(stack)
    assert code == 0, (data, err)


def test_after_a_switchover_its_record_carries_a_successful_canary(stack: Any) -> None:
    old, new = ("pg-1", "pg-2") if primary(stack) == "pg-1" else ("pg-2", "pg-1")
    done = stack.sfops("pg", "switchover", "--to", new, "--yes", "--json", timeout=180)
    assert done.returncode == 0, (done.stdout, done.stderr)
    outcome = json.loads(done.stdout)
    assert outcome["outcome"] == "succeeded"
    assert outcome["write_path"]["ok"] is True, outcome["write_path"]
    record = audit_records(stack)[-1]
    assert record["action"] == "pg.switchover" and record["outcome"] == "succeeded"
    assert record["write_path"]["ok"] is True
    assert [h["status"] for h in record["write_path"]["hops"]] == ["ok"] * 5
    assert primary(stack) == new

    code, data, err = verify(stack)
    assert code == 0, (data, err)
    assert data["write_path"]["ok"] is True

    back = stack.sfops("pg", "switchover", "--to", old, "--yes", "--json", timeout=180)
    assert back.returncode == 0, (back.stdout, back.stderr)
    assert json.loads(back.stdout)["write_path"]["ok"] is True


def test_canary_rows_older_than_the_ttl_are_deleted_by_the_next_canary(stack: Any) -> None:
    member = primary(stack)
    info = {**stack.component(member).superuser_conninfo(stack.lab), "dbname": "streamforge"}
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute("INSERT INTO canary (key, token, served_by, written_at) VALUES "
                     "('old-canary', 't', 'test', now() - interval '2 hours') "
                     "ON CONFLICT (key) DO UPDATE SET written_at = EXCLUDED.written_at")
        code, data, err = verify(stack)
        assert code == 0, (data, err)
        keys = [row[0] for row in conn.execute("SELECT key FROM canary").fetchall()]
    assert "old-canary" not in keys
    assert data["write_path"]["key"] in keys
