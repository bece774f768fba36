"""Likely causes and blast radius across the layers, against the lab's real servers (issue 17).

- Kill pg-1: the overview's "What is wrong now" (the real TUI under Pilot) shows, within two
  refreshes, pg-1 as the likely cause and under it the nginx members whose API workers answer
  "not ready", with the chain from the API's readiness to pg-1.
- Drain the kwok node that runs two of the three API pods: the preflight names those pods
  and their nginx members; with the third pod not ready it refuses (--force overrides).
- Drain a Kafka broker that follows a partition sitting at min.insync.replicas: refused.

The lab's API workers are local processes and its pods kwok stand-ins, so no address links an
nginx member to a pod: the drain test writes the ``[topology.members]`` mapping, as a user
would where the data cannot show the link.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from textual.widgets import DataTable

from deploy.lab import k8s as labk8s
from deploy.lab import kafka as labkafka
from tests.conftest import run_sfops
from tests.faults import POLLS_ALLOWED, make_app, settle

pytestmark = [pytest.mark.integration]

ROOT = "postgres:member-unreachable:pg-1"
MEMBERS = ("api-1", "api-2", "api-3")


def write_config(lab: Any, path: Path, sections: tuple[str, ...],
                 topology: dict[str, Any] | None = None) -> Path:
    """The lab's configuration reduced to ``sections`` (+ ``[topology]``), with its own audit
    log and state directory."""
    data = tomllib.loads(lab.config_path.read_text())
    out: dict[str, Any] = {
        "sfops": {**data["sfops"], "audit_log": str(path.parent / "audit.jsonl"),
                  "state_dir": str(path.parent / "state")},
        "executors": data.get("executors", {}),
    }
    for section in sections:
        out[section] = data[section]
    if "kubernetes" in sections:
        out["kubernetes"] = {**data["kubernetes"], "namespaces": [labk8s.NAMESPACE]}
    if topology is not None:
        out["topology"] = topology
    path.write_text(tomli_w.dumps(out))
    return path


def sfops(config: Path, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """`run_sfops` with no answer to a confirmation prompt (stdin closed: not confirmed) and
    no colour."""
    return run_sfops(config, *args, timeout=timeout, stdin=subprocess.DEVNULL,
                     env={**os.environ, "NO_COLOR": "1"})


def dry_run(config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = sfops(config, *args, "--dry-run", "--json")
    try:
        return result.returncode, json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON (rc {result.returncode}): {result.stdout}\n{result.stderr}")


def check(data: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in data["preflight"] if c["name"] == name]
    assert found, f"no check {name!r} in {[c['name'] for c in data['preflight']]}"
    return found[0]


# --------------------------------------------------------------------------- kill pg-1


@pytest.fixture(scope="module")
def web(lab: Any) -> Any:
    from tests.integration.test_pg import reset_pg

    lab.ensure("pg")
    reset_pg(lab)
    lab.ensure("pg", "api", "nginx")
    yield lab
    reset_pg(lab)


def alert_rows(app: Any) -> list[tuple[str, str]]:
    """The rendered "What is wrong now" rows, top to bottom: (row key, message cell)."""
    overview = app.get_screen_stack_overview()
    table = overview.query_one("#alerts", DataTable)
    return [(str(row.key.value), str(table.get_row(row.key)[2])) for row in table.ordered_rows]


def shows_chain(app: Any) -> bool:
    rows = alert_rows(app)
    keys = [key for key, _ in rows]
    if ROOT not in keys:
        return False
    root = keys.index(ROOT)
    under = [(i, text) for i, (key, text) in enumerate(rows)
             if key.startswith("nginx:member-failing:")]
    return bool(under) and all(
        i > root and text.startswith("\u21b3 api-") and "\u2190 readiness: database" in text
        for i, text in under)


@pytest.mark.timeout(600)
async def test_killed_primary_is_the_likely_cause_within_two_refreshes(web: Any,
                                                                      tmp_path: Path) -> None:
    from tests.integration.test_pg import reset_pg

    config = write_config(web, tmp_path / "sfops.toml", ("nginx", "postgres"))
    app = make_app(config)
    async with app.run_test(size=(80, 24)):
        await settle(app, web)
        jobs = {name: app.poller.jobs[name] for name in ("nginx", "postgres")}
        try:
            await asyncio.to_thread(web.stop, "pg-1", kill=True)
            at = {name: job.polls for name, job in jobs.items()}
            while not shows_chain(app):
                polls = min(job.polls - at[name] for name, job in jobs.items())
                assert polls <= POLLS_ALLOWED, (
                    f"no chain to pg-1 after {polls} refreshes of nginx and PostgreSQL: "
                    f"{alert_rows(app)}")
                await asyncio.sleep(0.05)
            explained = {a.ident: a for a in app.wrong_now_explained()}
            failing = [explained[f"nginx:member-failing:{m}"] for m in MEMBERS
                       if f"nginx:member-failing:{m}" in explained]
            assert failing
            for alert in failing:
                assert alert.cause == ROOT
                assert alert.chain[0].startswith(f"{alert.key.split(':')[1]} failing: HTTP 503")
                assert alert.chain[1].startswith("readiness: database read-only: pg-2 is a "
                                                 "standby, pg-1 unreachable")
                assert alert.chain[-1].startswith("pg-1 unreachable")
        finally:
            await asyncio.to_thread(reset_pg, web)


# --------------------------------------------------------------------------- drain a node


@pytest.fixture(scope="module")
def stack(web: Any) -> Any:
    from tests.integration.test_k8s import restore

    web.ensure("pg", "api", "nginx", "k8s")
    restore(web)
    yield web
    restore(web)


def two_on_one_node(lab: Any) -> tuple[str, list[str], str]:
    """(the node running two of the three API pods, those two, the third): made so by
    cordoning a node with one pod and deleting that pod (the replacement lands beside
    another), when the spread left one per node."""
    from tests.integration.test_k8s import api_pods, kubectl, settled, wait_for

    def layout() -> dict[str, list[str]]:
        by_node: dict[str, list[str]] = {}
        for pod in api_pods(lab):
            if not pod["metadata"].get("deletionTimestamp"):
                by_node.setdefault(pod["spec"]["nodeName"], []).append(
                    pod["metadata"]["name"])
        return by_node

    by_node = layout()
    if max(len(p) for p in by_node.values()) < 2:
        lone = sorted(by_node)[0]
        kubectl(lab, "cordon", lone)
        try:
            kubectl(lab, "-n", labk8s.NAMESPACE, "delete", "pod", by_node[lone][0],
                    "--wait=false")
            wait_for("a replacement beside another pod", lambda: (
                max(len(p) for p in layout().values()) >= 2 and settled(lab)), timeout=120)
        finally:
            kubectl(lab, "uncordon", lone)
        by_node = layout()
    target = max(by_node, key=lambda n: len(by_node[n]))
    pair = sorted(by_node[target])
    third = next(p for n, pods in by_node.items() if n != target for p in pods)
    assert len(pair) == 2
    return target, pair, third


@pytest.mark.timeout(600)
def test_node_drain_preflight_names_the_pods_and_their_nginx_members(stack: Any,
                                                                   tmp_path: Path) -> None:
    from tests.integration.test_k8s import kjson, wait_for

    target, pair, third = two_on_one_node(stack)
    topology = {
        "api_deployment": f"{labk8s.NAMESPACE}/{labk8s.DEPLOYMENT}",
        "members": {"api-1": {"pod": pair[0]}, "api-2": {"pod": pair[1]},
                    "api-3": {"pod": third}},
    }
    config = write_config(stack, tmp_path / "sfops.toml", ("nginx", "postgres", "kubernetes"),
                          topology)
    code, data = dry_run(config, "k8s", "drain", target)
    assert code == 0 and not data["would_refuse"], data
    api = check(data, "blast radius: API members")
    assert api["status"] == "pass", api
    ns = labk8s.NAMESPACE
    assert f"api-1 (pod {ns}/{pair[0]} on {target})" in api["detail"]
    assert f"api-2 (pod {ns}/{pair[1]} on {target})" in api["detail"]
    assert f"still healthy: api-3 (pod {ns}/{third} on " in api["detail"]
    assert not kjson(stack, "get", "node", target)["spec"].get("unschedulable")

    # The third pod not ready: the drain would take the last healthy API members.
    labk8s.set_pod_ready(stack.lab, third, False)
    try:
        wait_for("the third pod not ready", lambda: not any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in kjson(stack, "-n", ns, "get", "pod", third)["status"]["conditions"]),
            timeout=30)
        code, data = dry_run(config, "k8s", "drain", target)
        assert code == 3 and data["would_refuse"], data
        refused = check(data, "blast radius: API members")
        assert refused["status"] == "fail", refused
        assert "the last healthy API member(s)" in refused["detail"]
        code, data = dry_run(config, "k8s", "drain", target, "--force")
        assert code == 0 and not data["would_refuse"], data  # --force overrides it
    finally:
        labk8s.set_pod_ready(stack.lab, third, True)


# --------------------------------------------------------------------------- Kafka at min ISR

MIN_ISR_TOPIC = "sfops.test.minisr"


@pytest.fixture(scope="module")
def kafka_lab(lab: Any) -> Any:
    lab.ensure("kafka")
    labkafka.ensure_topic(lab.lab, MIN_ISR_TOPIC, 1, config={"min.insync.replicas": "3"})
    yield lab
    admin = labkafka.admin_client(lab.lab)
    admin.delete_topics([MIN_ISR_TOPIC], operation_timeout=15)[MIN_ISR_TOPIC].result(16)


@pytest.mark.timeout(600)
def test_drain_of_a_broker_following_a_partition_at_min_isr_is_refused(kafka_lab: Any,
                                                                     tmp_path: Path) -> None:
    admin = labkafka.admin_client(kafka_lab.lab)
    partition = admin.list_topics(topic=MIN_ISR_TOPIC, timeout=10).topics[
        MIN_ISR_TOPIC].partitions[0]
    assert sorted(partition.isrs) == [1, 2, 3], partition.isrs  # at min.insync.replicas=3
    follower = next(b for b in (1, 2, 3) if b != partition.leader)
    config = write_config(kafka_lab, tmp_path / "sfops.toml", ("kafka",))
    code, data = dry_run(config, "kafka", "drain", str(follower))
    assert code == 3 and data["would_refuse"], data
    blast = check(data, "blast radius: min.insync.replicas")
    assert blast["status"] == "fail" and f"{MIN_ISR_TOPIC}-0" in blast["detail"], blast
    # The leadership check alone would not refuse: the broker leads no such partition.
    takeover = check(data, "another in-sync replica takes over, ISR above min.insync.replicas")
    assert takeover["status"] == "pass", takeover

    result = sfops(config, "kafka", "drain", str(follower), "--yes", "--json")
    outcome = json.loads(result.stdout)
    assert result.returncode == 3 and outcome["outcome"] == "refused", outcome
    assert "blast radius: min.insync.replicas" in outcome["error"]
    assert not (tmp_path / "state" / f"kafka-drain-{follower}.json").exists()
    after = admin.list_topics(topic=MIN_ISR_TOPIC, timeout=10).topics[MIN_ISR_TOPIC]
    assert after.partitions[0].replicas == partition.replicas  # nothing moved
