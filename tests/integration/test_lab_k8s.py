"""The lab's Kubernetes control plane: real API server, controllers and scheduler, kwok nodes.

These tests mutate the shared ``streamforge-api`` Deployment; each one starts by waiting for it
to be fully available again and leaves it so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deploy.lab import k8s
from deploy.lab.core import Lab

pytestmark = [pytest.mark.integration, pytest.mark.k8s]

NS = k8s.NAMESPACE
NAME = k8s.DEPLOYMENT
SELECTOR = "app.kubernetes.io/name=streamforge-api"
TIMEOUT = 10  # every API call is bounded (the sync client has no default timeout)


@pytest.fixture(scope="module")
def k8s_lab(lab: Any) -> Lab:
    """The session lab (tests/conftest.py) with the k8s group up."""
    return lab.ensure("k8s").lab


@pytest.fixture(scope="module")
def admin(k8s_lab: Lab) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(k8s.admin_kubeconfig(k8s_lab)))
    yield api
    api.close()


@pytest.fixture(scope="module")
def readonly(k8s_lab: Lab) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(k8s.readonly_kubeconfig(k8s_lab)))
    yield api
    api.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def deployment(admin: client.ApiClient) -> client.V1Deployment:
    return client.AppsV1Api(admin).read_namespaced_deployment(NAME, NS, _request_timeout=TIMEOUT)


def rollout_complete(admin: client.ApiClient) -> bool:
    """What `kubectl rollout status` checks, plus: no pod of an older template left."""
    dep = deployment(admin)
    status = dep.status
    want = dep.spec.replicas
    if (status.observed_generation or 0) < dep.metadata.generation:
        return False
    if (status.updated_replicas or 0) != want or (status.replicas or 0) != want:
        return False
    if (status.available_replicas or 0) != want:
        return False
    return all(p.status.phase == "Running" for p in pods(admin))


def pods(admin: client.ApiClient) -> list[client.V1Pod]:
    items = (
        client.CoreV1Api(admin)
        .list_namespaced_pod(NS, label_selector=SELECTOR, _request_timeout=TIMEOUT)
        .items
    )
    return [p for p in items if p.metadata.deletion_timestamp is None]


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def replica_sets(admin: client.ApiClient) -> list[client.V1ReplicaSet]:
    return (
        client.AppsV1Api(admin)
        .list_namespaced_replica_set(NS, label_selector=SELECTOR, _request_timeout=TIMEOUT)
        .items
    )


def active_template_hash(admin: client.ApiClient) -> str:
    active = [rs for rs in replica_sets(admin) if (rs.spec.replicas or 0) > 0]
    assert len(active) == 1, [rs.metadata.name for rs in active]
    return str(active[0].metadata.labels["pod-template-hash"])


def kubectl(lab: Lab, *args: str) -> str:
    return k8s.kubectl(lab, "-n", NS, *args)


@pytest.fixture
def available(k8s_lab: Lab, admin: client.ApiClient) -> Iterator[None]:
    wait_for("the Deployment to be fully rolled out", lambda: rollout_complete(admin), 120)
    yield
    # Leave every pod ready for the next test, whatever this one did.
    for pod in pods(admin):
        if not is_ready(pod):
            k8s.set_pod_ready(k8s_lab, pod.metadata.name, True)
    wait_for("the Deployment to recover", lambda: rollout_complete(admin), 120)


def test_deployment_available_with_three_ready_pods_on_kwok_nodes(
    admin: client.ApiClient, available: None
) -> None:
    dep = deployment(admin)
    conditions = {c.type: c.status for c in dep.status.conditions}
    assert conditions["Available"] == "True"
    assert dep.status.ready_replicas == 3 and dep.status.available_replicas == 3

    running = pods(admin)
    assert len(running) == 3
    nodes = {
        n.metadata.name: n
        for n in client.CoreV1Api(admin).list_node(_request_timeout=TIMEOUT).items
    }
    for pod in running:
        assert pod.status.phase == "Running" and is_ready(pod)
        node = nodes[pod.spec.node_name]
        assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
    # Probes as shipped: the paths the API service serves.
    container = dep.spec.template.spec.containers[0]
    assert container.readiness_probe.http_get.path == "/health/ready"
    assert container.liveness_probe.http_get.path == "/health/live"
    assert container.startup_probe.http_get.path == "/health/live"


def test_rollout_restart_creates_new_replicaset_and_undo_restores_template(
    k8s_lab: Lab, admin: client.ApiClient, available: None
) -> None:
    before_hash = active_template_hash(admin)
    before_template = deployment(admin).spec.template.to_dict()

    kubectl(k8s_lab, "rollout", "restart", f"deployment/{NAME}")
    wait_for("the restart to start", lambda: active_template_hash_or_none(admin) != before_hash, 30)
    kubectl(k8s_lab, "rollout", "status", f"deployment/{NAME}", "--timeout=120s")
    wait_for("the restart to complete", lambda: rollout_complete(admin), 60)
    restarted_hash = active_template_hash(admin)
    assert restarted_hash != before_hash
    annotations = deployment(admin).spec.template.metadata.annotations or {}
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert {rs.metadata.labels["pod-template-hash"] for rs in replica_sets(admin)} >= {
        before_hash,
        restarted_hash,
    }

    kubectl(k8s_lab, "rollout", "undo", f"deployment/{NAME}")
    wait_for(
        "the undo to complete",
        lambda: rollout_complete(admin) and active_template_hash(admin) == before_hash,
        120,
    )
    after = deployment(admin).spec.template.to_dict()
    assert after == before_template


def active_template_hash_or_none(admin: client.ApiClient) -> str | None:
    active = [rs for rs in replica_sets(admin) if (rs.spec.replicas or 0) > 0]
    newest = max(active, key=lambda rs: rs.metadata.creation_timestamp, default=None)
    return None if newest is None else str(newest.metadata.labels["pod-template-hash"])


def evict(admin: client.ApiClient, pod: str) -> None:
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=NS))
    client.CoreV1Api(admin).create_namespaced_pod_eviction(pod, NS, body, _request_timeout=TIMEOUT)


def disruptions_allowed(admin: client.ApiClient) -> int:
    pdb = client.PolicyV1Api(admin).read_namespaced_pod_disruption_budget(
        NAME, NS, _request_timeout=TIMEOUT
    )
    return int(pdb.status.disruptions_allowed)


def test_eviction_respects_the_pod_disruption_budget(
    k8s_lab: Lab, admin: client.ApiClient, available: None
) -> None:
    unready, victim, _ = sorted(p.metadata.name for p in pods(admin))
    wait_for("the PDB to allow one disruption", lambda: disruptions_allowed(admin) == 1, 30)

    # One pod already unavailable uses up the budget (maxUnavailable: 1).
    k8s.set_pod_ready(k8s_lab, unready, False)
    wait_for("the PDB to be exhausted", lambda: disruptions_allowed(admin) == 0, 30)
    with pytest.raises(ApiException) as refused:
        evict(admin, victim)
    assert refused.value.status == 429
    assert "disruption budget" in json.loads(refused.value.body)["message"]

    k8s.set_pod_ready(k8s_lab, unready, True)
    wait_for("the PDB to allow one disruption again", lambda: disruptions_allowed(admin) == 1, 30)
    evict(admin, victim)
    wait_for(
        "the evicted pod to go", lambda: victim not in {p.metadata.name for p in pods(admin)}, 30
    )


def test_readonly_kubeconfig_lists_pods_but_cannot_patch(
    admin: client.ApiClient, readonly: client.ApiClient, available: None
) -> None:
    listed = client.CoreV1Api(readonly).list_namespaced_pod(NS, _request_timeout=TIMEOUT).items
    assert {p.metadata.name for p in listed} >= {p.metadata.name for p in pods(admin)}
    client.AppsV1Api(readonly).read_namespaced_deployment(NAME, NS, _request_timeout=TIMEOUT)

    with pytest.raises(ApiException) as refused:
        client.AppsV1Api(readonly).patch_namespaced_deployment(
            NAME, NS, {"spec": {"replicas": 4}}, _request_timeout=TIMEOUT
        )
    assert refused.value.status == 403
    with pytest.raises(ApiException) as no_secrets:
        client.CoreV1Api(readonly).list_namespaced_secret(NS, _request_timeout=TIMEOUT)
    assert no_secrets.value.status == 403
    assert deployment(admin).spec.replicas == 3


def test_unready_pod_shows_ready_false_and_available_count_drops(
    k8s_lab: Lab, admin: client.ApiClient, available: None
) -> None:
    target = sorted(p.metadata.name for p in pods(admin))[0]
    k8s.set_pod_ready(k8s_lab, target, False)
    k8s.record_unhealthy_event(k8s_lab, target)

    core = client.CoreV1Api(admin)
    pod = core.read_namespaced_pod(target, NS, _request_timeout=TIMEOUT)
    assert not is_ready(pod)
    wait_for(
        "availableReplicas to drop to 2",
        lambda: deployment(admin).status.available_replicas == 2,
        30,
    )
    events = core.list_namespaced_event(
        NS,
        field_selector=f"involvedObject.name={target},reason=Unhealthy",
        _request_timeout=TIMEOUT,
    ).items
    assert events and events[0].type == "Warning"

    k8s.set_pod_ready(k8s_lab, target, True)
    wait_for(
        "availableReplicas back to 3", lambda: deployment(admin).status.available_replicas == 3, 30
    )


def test_a_pod_the_node_controller_marked_not_ready_gets_ready_back(
    k8s_lab: Lab, admin: client.ApiClient, available: None
) -> None:
    """After a lapse of node heartbeats (an API server or etcd outage longer than the grace
    period) the node lifecycle controller sets Ready=False on every pod of the node, leaving
    ContainersReady True; a kubelet then sets Ready back, and so does kwok (the lab's
    pod-ready-again stage). Without it the Deployment stayed unavailable for good after such an
    outage. A pod whose containers are not ready (a failing probe) stays unready."""
    marked, probed, _ = sorted(p.metadata.name for p in pods(admin))
    k8s.set_pod_ready(k8s_lab, probed, False)
    try:
        k8s.mark_pod_not_ready_by_node(k8s_lab, marked)
        core = client.CoreV1Api(admin)

        def read(name: str) -> client.V1Pod:
            return core.read_namespaced_pod(name, NS, _request_timeout=TIMEOUT)

        wait_for(f"{marked} to be Ready again", lambda: is_ready(read(marked)), 30)
        time.sleep(3)  # kwok's stage delay is one second: it had its chance at the other pod
        assert not is_ready(read(probed))
        conditions = {c.type: c.status for c in read(probed).status.conditions}
        assert conditions["ContainersReady"] == "False"
    finally:
        k8s.set_pod_ready(k8s_lab, probed, True)
    wait_for(
        "availableReplicas back to 3", lambda: deployment(admin).status.available_replicas == 3, 30
    )


def test_every_manifest_passes_server_side_dry_run(k8s_lab: Lab) -> None:
    manifests = k8s.REPO / "deploy" / "k8s"
    # Same field manager as the lab's own apply; earlier tests' rollouts own some fields now.
    apply = ["apply", "--server-side", "--dry-run=server", "--force-conflicts"]
    out = k8s.kubectl(k8s_lab, *apply, "--field-manager=sfops-lab", "-k", str(manifests))
    for kind in (
        "namespace",
        "configmap",
        "serviceaccount",
        "deployment",
        "service",
        "poddisruptionbudget",
        "clusterrole",
        "role",
        "rolebinding",
    ):
        assert f"{kind}" in out, out
    # The Secret template is valid too (it is kept out of the kustomization on purpose).
    k8s.kubectl(
        k8s_lab,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        str(manifests / "secret.template.yaml"),
    )


def can(
    api: client.ApiClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str | None = NS,
) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                resource=resource,
                group=group,
                subresource=subresource,
                namespace=namespace,
            )
        )
    )
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(
        review, _request_timeout=TIMEOUT
    )
    return bool(answer.status.allowed)


# What sfops reads (backends/kubernetes/informer.py): (resource, API group, namespaced)
SHOWN = [
    ("pods", "", True),
    ("events", "", True),
    ("deployments", "apps", True),
    ("replicasets", "apps", True),
    ("poddisruptionbudgets", "policy", True),
    ("nodes", "", False),
]
# What sfops never reads, so the read-only account cannot either.
NOT_SHOWN = [
    ("configmaps", "", True),
    ("secrets", "", True),
    ("services", "", True),
    ("endpoints", "", True),
    ("statefulsets", "apps", True),
    ("daemonsets", "apps", True),
    ("endpointslices", "discovery.k8s.io", True),
    ("namespaces", "", False),
]


def test_readonly_service_account_reads_what_sfops_shows_and_nothing_more(
    readonly: client.ApiClient,
) -> None:
    for resource, group, namespaced in SHOWN:
        ns = NS if namespaced else None
        for verb in ("get", "list", "watch"):
            assert can(readonly, verb, resource, group=group, namespace=ns), (verb, resource)
            assert can(readonly, verb, resource, group=group, namespace=None), (verb, resource)
    for resource, group, namespaced in NOT_SHOWN:
        for ns in (NS if namespaced else None, None):
            assert not can(readonly, "list", resource, group=group, namespace=ns), resource
    assert not can(readonly, "patch", "deployments", group="apps")
    assert not can(readonly, "patch", "deployments", group="apps", subresource="scale")
    assert not can(readonly, "create", "pods", subresource="eviction")
    assert not can(readonly, "patch", "nodes", namespace=None)
    assert not can(readonly, "delete", "pods")


def test_operator_service_account_has_only_the_verbs_actions_need(k8s_lab: Lab) -> None:
    api = config.new_client_from_config(config_file=str(k8s.operator_kubeconfig(k8s_lab)))
    try:
        for resource, group, namespaced in SHOWN:
            assert can(api, "list", resource, group=group, namespace=NS if namespaced else None)
        assert can(api, "patch", "deployments", group="apps")  # restart, undo, set image
        assert can(api, "patch", "deployments", group="apps", subresource="scale")
        assert can(api, "create", "pods", subresource="eviction")  # drain
        assert can(api, "patch", "nodes", namespace=None)  # cordon
        assert not can(api, "patch", "deployments", group="apps", namespace="kube-system")
        assert not can(api, "delete", "deployments", group="apps")
        assert not can(api, "delete", "pods")
        assert not can(api, "get", "secrets")
        assert not can(api, "create", "deployments", group="apps")
    finally:
        api.close()
