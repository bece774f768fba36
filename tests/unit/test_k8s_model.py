"""Pure Kubernetes logic: rollout state as kubectl computes it, probe outcomes from conditions
and Unhealthy events, selectors, image references, drain plans, the overview summary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backends.kubernetes.access import image_reference_problem
from backends.kubernetes.model import build_status, status_json, summarize_status
from backends.kubernetes.nodes import plan_drain
from backends.kubernetes.objects import (
    ProbeKind,
    ProbeOutcome,
    RolloutState,
    Selector,
    budget_from_json,
    deployment_from_json,
    event_from_json,
    node_from_json,
    pod_from_json,
    probe_failure_cause,
    probe_statuses,
    replicaset_from_json,
    rollout_status,
)
from backends.snapshot import Health
from tests.unit.test_k8s_objects import budget, deployment, event, node, pod, replicaset

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# ----------------------------------------------------------------- rollout status


def test_rollout_complete():
    r = rollout_status(deployment_from_json(deployment()))
    assert r.state is RolloutState.COMPLETE and r.done


def test_rollout_waits_for_observed_generation():
    r = rollout_status(deployment_from_json(deployment(generation=3, observed=2)))
    assert r.state is RolloutState.ROLLING
    assert "observed" in r.message


def test_rollout_counts_like_kubectl():
    d = deployment_from_json(deployment(updated=1, available=3, status_replicas=4))
    assert rollout_status(d).message == "1 of 3 new replicas updated"
    d = deployment_from_json(deployment(updated=3, available=3, status_replicas=4))
    assert rollout_status(d).message == "1 old replicas pending termination"
    d = deployment_from_json(deployment(updated=3, available=2))
    assert rollout_status(d).message == "2 of 3 updated replicas available"


def test_progress_deadline_exceeded_is_failed_even_if_counts_look_fine():
    d = deployment_from_json(deployment(updated=1, progressing_reason="ProgressDeadlineExceeded"))
    r = rollout_status(d)
    assert r.state is RolloutState.FAILED
    assert "progress deadline" in r.message


def test_paused_rollout():
    d = deployment_from_json(deployment(paused=True, updated=1))
    assert rollout_status(d).state is RolloutState.PAUSED


def test_deployment_fields():
    d = deployment_from_json(deployment(revision=7, image="r/x:2"))
    assert d.revision == 7
    assert d.images == (("api", "r/x:2"),)
    assert d.key == "streamforge/api"


# ----------------------------------------------------------------- probes


def test_probe_failure_cause():
    assert probe_failure_cause("HTTP probe failed with statuscode: 503") == "HTTP 503"
    assert probe_failure_cause('Get "http://10.0.0.1:8000/": dial tcp: connect: '
                               "connection refused") == "connection refused"
    assert probe_failure_cause("Get x: context deadline exceeded") == "timeout"


def test_readiness_failure_from_events_and_conditions():
    p = pod_from_json(pod("api-1", ready=False))
    events = [event_from_json(event(
        f"e{i}", "api-1", "Readiness probe failed: HTTP probe failed with statuscode: 503",
        first="2026-01-01T11:58:00Z")) for i in range(3)]
    statuses = {s.kind: s for s in probe_statuses(p, events, NOW)}
    readiness = statuses[ProbeKind.READINESS]
    assert readiness.outcome is ProbeOutcome.FAILING
    assert readiness.detail == "readiness failed 3\u00d7 in 2 m: HTTP 503"
    assert statuses[ProbeKind.LIVENESS].outcome is ProbeOutcome.PASSING


def test_event_count_field_is_summed_and_old_events_ignored():
    p = pod_from_json(pod("api-1", ready=False))
    fresh = event_from_json(event("a", "api-1", "Readiness probe failed: statuscode: 500",
                                  count=5, first="2026-01-01T11:59:30Z"))
    old = event_from_json(event("b", "api-1", "Readiness probe failed: statuscode: 503",
                                last="2026-01-01T10:00:00Z"))
    (readiness,) = [s for s in probe_statuses(p, [fresh, old], NOW)
                    if s.kind is ProbeKind.READINESS]
    assert readiness.detail == "readiness failed 5\u00d7 in 30 s: HTTP 500"


def test_readiness_failure_without_events_uses_condition_message():
    p = pod_from_json(pod("api-1", ready=False,
                          ready_message="Readiness probe failed: statuscode: 503"))
    (readiness,) = [s for s in probe_statuses(p, [], NOW) if s.kind is ProbeKind.READINESS]
    assert readiness.outcome is ProbeOutcome.FAILING
    assert "HTTP 503" in readiness.detail


def test_liveness_failure_and_unconfigured_probes():
    p = pod_from_json(pod("api-1", probes=("livenessProbe",)))
    ev = event_from_json(event("l", "api-1", "Liveness probe failed: connection refused"))
    statuses = probe_statuses(p, [ev], NOW)
    assert [s.kind for s in statuses] == [ProbeKind.LIVENESS]
    assert statuses[0].outcome is ProbeOutcome.FAILING
    assert statuses[0].detail.endswith("connection refused")


def test_pending_pod_probes_pending():
    p = pod_from_json(pod("api-1", phase="Pending", ready=False))
    assert {s.outcome for s in probe_statuses(p, [], NOW)} == {ProbeOutcome.PENDING}


# ----------------------------------------------------------------- selectors, references


def test_selector():
    s = Selector.from_json({"matchLabels": {"app": "api"},
                            "matchExpressions": [{"key": "tier", "operator": "In",
                                                  "values": ["web"]}]})
    assert s.matches({"app": "api", "tier": "web"})
    assert not s.matches({"app": "api", "tier": "db"})
    assert not s.matches({"app": "x", "tier": "web"})
    assert Selector.from_json({}).matches({"anything": "1"})
    assert not Selector.from_json(None).matches({"anything": "1"})


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.27", "ghcr.io/streamforge/streamforge-api:0.2.0",
    "localhost:5000/a/b_c:v1", "reg.example/x@sha256:" + "a" * 64,
    "reg.example/x:1@sha256:" + "b" * 64,
])
def test_valid_image_references(image):
    assert image_reference_problem(image) is None


@pytest.mark.parametrize("image,why", [
    ("", "empty"), ("Nginx:1", "lowercase"), ("nginx:", "form"), ("a b", "whitespace"),
    ("reg/x:tag with space", "whitespace"), ("x:" + "t" * 200, "form"), ("x@sha256:zz", "form"),
    ("[@click=app.quit]", "form"),
])
def test_invalid_image_references(image, why):
    problem = image_reference_problem(image)
    assert problem is not None and why in problem


# ----------------------------------------------------------------- drain plans


def test_drain_plan_skips_daemonsets_and_mirror_pods_and_lists_blocking_budgets():
    pods = [pod_from_json(pod("api-1")), pod_from_json(pod("api-2")),
            pod_from_json(pod("ds-1", owner=("DaemonSet", "agent"), labels={"app": "agent"})),
            pod_from_json(pod("static", owner=None, labels={"app": "static"},
                              annotations={"kubernetes.io/config.mirror": "x"})),
            pod_from_json(pod("bare", owner=None, labels={"app": "bare"})),
            pod_from_json(pod("old", deleting=True))]
    budgets = [budget_from_json(budget(allowed=1)),
               budget_from_json(budget("other", labels={"app": "nothing-here"}))]
    plan = plan_drain(pods, budgets)
    assert [p.name for p in plan.evict] == ["api-1", "api-2", "bare"]
    assert {(p.name, why) for p, why in plan.skipped} == {
        ("ds-1", "DaemonSet"), ("static", "mirror pod"), ("old", "already terminating")}
    assert [p.name for p in plan.unmanaged] == ["bare"]
    assert [b.name for b in plan.budgets] == ["api"]
    (blocking,) = plan.blocking()  # allows 1, two of its pods here: the second one waits
    assert blocking[0].name == "api" and len(blocking[1]) == 2


# ----------------------------------------------------------------- status and summary


def _status(**overrides):
    objects = {
        "deployments": [deployment_from_json(deployment(revision=3, image="r/api:2"))],
        "replicasets": [replicaset_from_json(replicaset("api-aaaaa", 2, image="r/api:1",
                                                        replicas=0)),
                        replicaset_from_json(replicaset("api-abcde", 3, image="r/api:2"))],
        "pods": [pod_from_json(pod(f"api-abcde-{i}", node=f"node-{i}")) for i in range(3)]
        + [pod_from_json(pod("agent-x", owner=("DaemonSet", "agent")))],
        "nodes": [node_from_json(node("node-0")), node_from_json(node("node-1")),
                  node_from_json(node("node-2"))],
        "budgets": [budget_from_json(budget())],
        "events": [],
    }
    objects.update(overrides)
    return build_status(host="https://k", namespaces=("streamforge",), now=NOW, **objects)


def test_build_status_groups_pods_and_revisions():
    status = _status()
    (d,) = status.deployments
    assert [p.info.name for p in d.pods] == ["api-abcde-0", "api-abcde-1", "api-abcde-2"]
    assert d.current_revision == 3 and d.previous_revision == 2
    assert d.previous_images == (("api", "r/api:1"),)
    assert [p.info.name for p in status.other_pods] == ["agent-x"]
    assert [n.pods for n in status.nodes] == [1, 2, 1]  # agent-x is on node-1
    summary = summarize_status(status)
    assert summary.health is Health.OK
    figures = {f.label: f.value for f in summary.figures}
    assert figures["deployments"] == "1/1 ok"
    assert figures["pods not ready"] == "0/4"


def test_summary_reports_failed_rollout_unready_pod_cordoned_node_and_worst_event():
    status = _status(
        deployments=[deployment_from_json(deployment(
            updated=1, progressing_reason="ProgressDeadlineExceeded"))],
        pods=[pod_from_json(pod("api-abcde-0", ready=False))],
        nodes=[node_from_json(node("node-0", unschedulable=True))],
        events=[event_from_json(event("e", "api-abcde-0",
                                      "Readiness probe failed: statuscode: 503"))],
    )
    summary = summarize_status(status)
    assert summary.health is Health.FAILED
    keys = {a.key for a in summary.alerts}
    assert "rollout-failed:streamforge/api" in keys
    assert "pod-not-ready:streamforge/api-abcde-0" in keys
    assert "node-cordoned:node-0" in keys
    message = next(a.message for a in summary.alerts if a.key.startswith("pod-not-ready"))
    assert "readiness failed 1\u00d7" in message and "HTTP 503" in message
    assert any(a.key.startswith("event:Unhealthy") for a in summary.alerts)


def test_a_terminating_pod_is_no_alert_until_it_outlives_its_grace_period():
    """A rollout's or a drain's old pod is on its way out; one still there a minute after its
    deletion deadline (deletionTimestamp) is stuck, and that is named."""
    leaving = pod_from_json(pod("api-old-0", ready=False, deleting=True))  # deadline 12:00:00
    status = _status(pods=[pod_from_json(pod(f"api-abcde-{i}")) for i in range(3)] + [leaving])
    in_grace = summarize_status(status, now=datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC))
    assert in_grace.health is Health.OK and in_grace.alerts == ()
    assert {f.label: f.value for f in in_grace.figures}["pods not ready"] == "0/4"

    stuck = summarize_status(status, now=datetime(2026, 1, 1, 12, 5, tzinfo=UTC))
    assert stuck.health is Health.DEGRADED
    (alert,) = stuck.alerts
    assert alert.key == "pod-stuck-terminating:streamforge/api-old-0"
    assert alert.message == ("pod streamforge/api-old-0 still terminating on node node-1, "
                             "300 s past its grace period")


def test_draining_node():
    status = _status(nodes=[node_from_json(node(
        "node-1", unschedulable=True,
        annotations={"sfops.streamforge.io/drain-started": "2026-01-01T11:59:00Z"}))])
    assert status.nodes[0].draining


def test_status_json_is_plain():
    import json

    data = status_json(_status())
    json.dumps(data)
    assert data["deployments"][0]["rollout"] == "complete"
    assert data["deployments"][0]["pods"][0]["probes"][0]["kind"] == "liveness"
