"""The lab's Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) with kwok simulating the nodes and the pods' lifecycle.

Everything speaks TLS signed by a lab CA made at the first ``lab up`` (``<lab>/k8s/pki``);
RBAC is on. ``<lab>/k8s/admin.kubeconfig`` is cluster-admin; ``readonly.kubeconfig`` is the
ServiceAccount ``streamforge/sfops`` (view-only ClusterRole from ``deploy/k8s/``), with a token
from the TokenRequest API; ``operator.kubeconfig`` is ``streamforge/sfops-operator``.

Binaries come from ``deploy/lab/install/k8s.sh`` (built once per machine into a versioned
cache). Ports: ``lab.port(40..49)``.

Test hooks (see ``set_pod_ready`` / ``record_unhealthy_event``): kwok's fast pod stage only
acts on Pending pods, so once a pod is Running its containers' readiness is ours to patch through
the status subresource, and the Deployment controller and PDB react as they would to a kubelet.
(kwok does give ``Ready`` back to a pod whose containers are ready: the ``pod-ready-again`` stage
in deploy/k8s-tools/kwok/stages.yaml, a kubelet's answer to the node lifecycle controller.)
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.lab.core import Component, Lab, write_atomic
from deploy.lab.k8s_cluster import (
    DEPLOYMENT,
    apply_nodes,
    apply_scale,
    apply_stack,
    mark_pod_not_ready_by_node,
    record_unhealthy_event,
    scale_layout,
    set_pod_ready,
    wait_available,
    wait_scale,
    write_role_kubeconfigs,
)
from deploy.lab.k8s_pki import (
    CONTEXT,
    NAMESPACE,
    OFF_APISERVER,
    REPO,
    admin_kubeconfig,
    apiserver_url,
    bin_dir,
    cert_kubeconfig,
    ensure_binaries,
    ensure_pki,
    https_ok,
    kubectl,
    operator_kubeconfig,
    pki,
    readonly_kubeconfig,
)

KWOK_STAGES = REPO / "deploy" / "k8s-tools" / "kwok" / "stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

OFF_ETCD_CLIENT, OFF_ETCD_PEER, OFF_ETCD_METRICS = 40, 41, 42
OFF_CONTROLLER_MANAGER, OFF_SCHEDULER, OFF_KWOK = 46, 47, 48


# Metadata (user, verb, resource, status; never a body) for every request, once it answered.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def audit_policy(lab: Lab) -> Path:
    return lab.path("k8s", "audit-policy.yaml")


def audit_log(lab: Lab) -> Path:
    """The API server's audit log: one JSON event per line (rotated at 20 MB, one backup)."""
    return lab.path("k8s", "audit.log")


# -- components --------------------------------------------------------------------------------
class Etcd(Component):
    name = "etcd"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_ETCD_CLIENT), lab.port(OFF_ETCD_PEER), lab.port(OFF_ETCD_METRICS)]

    def prepare(self, lab: Lab) -> None:
        ensure_binaries(lab)
        ensure_pki(lab)
        for stem in ("admin", "controller-manager", "scheduler", "kwok"):
            cert_kubeconfig(lab, stem)

    def argv(self, lab: Lab) -> list[str]:
        client = f"https://127.0.0.1:{lab.port(OFF_ETCD_CLIENT)}"
        peer = f"http://127.0.0.1:{lab.port(OFF_ETCD_PEER)}"
        return [
            str(bin_dir() / "etcd"),
            "--name=lab",
            f"--data-dir={lab.path('k8s', 'etcd')}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lab={peer}",
            f"--listen-metrics-urls=http://127.0.0.1:{lab.port(OFF_ETCD_METRICS)}",
            f"--cert-file={pki(lab, 'etcd-server.crt')}",
            f"--key-file={pki(lab, 'etcd-server.key')}",
            f"--trusted-ca-file={pki(lab, 'ca.crt')}",
            "--client-cert-auth",
            # A throw-away lab: no fsync keeps a 2-core machine's disk out of the hot path.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def ready(self, lab: Lab) -> bool:
        url = f"http://127.0.0.1:{lab.port(OFF_ETCD_METRICS)}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")


class KubeApiserver(Component):
    name = "kube-apiserver"
    group = "k8s"
    ready_timeout = 90.0
    # On SIGTERM it drains in-flight requests and stops listening within a second, then
    # lingers (about 30 s here) before exiting. Nothing is left to finish by then, and a
    # control plane down that long lets the node controller mark every kwok node NotReady.
    stop_timeout = 10.0

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_APISERVER)]

    def prepare(self, lab: Lab) -> None:
        write_atomic(audit_policy(lab), AUDIT_POLICY)

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-apiserver"),
            # Who asked for what (user, verb, resource; no bodies): tests read it to show
            # that read-only sfops only reads, and as whom.
            f"--audit-policy-file={audit_policy(lab)}",
            f"--audit-log-path={audit_log(lab)}",
            "--audit-log-maxsize=20",
            "--audit-log-maxbackup=1",
            f"--etcd-servers=https://127.0.0.1:{lab.port(OFF_ETCD_CLIENT)}",
            f"--etcd-cafile={pki(lab, 'ca.crt')}",
            f"--etcd-certfile={pki(lab, 'apiserver-etcd-client.crt')}",
            f"--etcd-keyfile={pki(lab, 'apiserver-etcd-client.key')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_APISERVER)}",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback address for the kubernetes Service.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki(lab, 'apiserver.crt')}",
            f"--tls-private-key-file={pki(lab, 'apiserver.key')}",
            f"--client-ca-file={pki(lab, 'ca.crt')}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki(lab, 'sa.pub')}",
            f"--service-account-signing-key-file={pki(lab, 'sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return https_ok(f"{apiserver_url(lab)}/readyz", lab)


class KubeControllerManager(Component):
    name = "kube-controller-manager"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_CONTROLLER_MANAGER)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={lab.path('k8s', 'controller-manager.kubeconfig')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_CONTROLLER_MANAGER)}",
            f"--cert-dir={lab.path('k8s', 'controller-manager-serving')}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki(lab, 'sa.key')}",
            f"--root-ca-file={pki(lab, 'ca.crt')}",
            f"--cluster-signing-cert-file={pki(lab, 'ca.crt')}",
            f"--cluster-signing-key-file={pki(lab, 'ca.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Scale mode creates thousands of pods; the default 20 qps would take minutes.
            "--kube-api-qps=300",
            "--kube-api-burst=500",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return https_ok(
            f"https://127.0.0.1:{lab.port(OFF_CONTROLLER_MANAGER)}/healthz", lab, verify=False
        )


class KubeScheduler(Component):
    name = "kube-scheduler"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_SCHEDULER)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-scheduler"),
            f"--kubeconfig={lab.path('k8s', 'scheduler.kubeconfig')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_SCHEDULER)}",
            f"--cert-dir={lab.path('k8s', 'scheduler-serving')}",
            "--leader-elect=false",
            "--kube-api-qps=300",
            "--kube-api-burst=500",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return https_ok(f"https://127.0.0.1:{lab.port(OFF_SCHEDULER)}/healthz", lab, verify=False)


class Kwok(Component):
    name = "kwok"
    group = "k8s"
    ready_timeout = 30.0

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_KWOK)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kwok"),
            f"--kubeconfig={lab.path('k8s', 'kwok.kubeconfig')}",
            f"--config={KWOK_STAGES}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=10.0.0.1",
            "--cidr=10.244.0.0/16",
            f"--server-address=127.0.0.1:{lab.port(OFF_KWOK)}",
        ]

    def ready(self, lab: Lab) -> bool:
        url = f"http://127.0.0.1:{lab.port(OFF_KWOK)}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def after_ready(self, lab: Lab) -> None:
        started = time.monotonic()
        apply_nodes(lab)
        apply_stack(lab)
        if lab.settings.k8s_pods > 0:
            apply_scale(lab)
        write_role_kubeconfigs(lab)
        wait_available(lab, NAMESPACE, [DEPLOYMENT], timeout=180)
        if lab.settings.k8s_pods > 0:
            wait_scale(lab, timeout=max(300.0, lab.settings.k8s_pods / 5))
        lab.progress(
            f"k8s: nodes, manifests and Deployments ready in {time.monotonic() - started:.1f}s"
        )


COMPONENTS: list[Component] = [
    Etcd(),
    KubeApiserver(),
    KubeControllerManager(),
    KubeScheduler(),
    Kwok(),
]
# The API server's clients first (together: none needs another to shut down), etcd last.
STOP_WAVES = [["kwok", "kube-scheduler", "kube-controller-manager"], ["kube-apiserver"], ["etcd"]]


# -- sfops configuration -----------------------------------------------------------------------
def sfops_config(lab: Lab) -> dict[str, Any]:
    namespaces = [NAMESPACE]
    if lab.settings.k8s_pods > 0:
        namespaces += sorted({ns for ns, _, _ in scale_layout(lab.settings.k8s_pods)})
    return {
        "kubernetes": {
            "kubeconfig": str(admin_kubeconfig(lab)),
            "readonly_kubeconfig": str(readonly_kubeconfig(lab)),
            "operator_kubeconfig": str(operator_kubeconfig(lab)),
            "context": CONTEXT,
            "namespaces": namespaces,
        }
    }


__all__ = [
    "COMPONENTS",
    "CONTEXT",
    "DEPLOYMENT",
    "NAMESPACE",
    "admin_kubeconfig",
    "audit_log",
    "kubectl",
    "mark_pod_not_ready_by_node",
    "operator_kubeconfig",
    "readonly_kubeconfig",
    "record_unhealthy_event",
    "set_pod_ready",
    "sfops_config",
]
