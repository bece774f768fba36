"""What the lab puts into its Kubernetes cluster (kwok nodes, deploy/k8s/, the scale-mode
Deployments, role kubeconfigs) and the hooks tests use to play the kubelet's part.

kwok's fast pod stage only acts on Pending pods, so once a pod is Running its containers'
readiness is ours to patch through the status subresource (``set_pod_ready``); the ReplicaSet and
Deployment controllers and the disruption controller react as they would to a kubelet's probe
results. ``record_unhealthy_event`` writes the Warning event a failing probe would.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from deploy.lab.core import Lab, LabError, run, write_atomic
from deploy.lab.k8s_pki import (
    NAMESPACE,
    REPO,
    admin_kubeconfig,
    bin_dir,
    kubeconfig_text,
    kubectl,
    operator_kubeconfig,
    pki,
    readonly_kubeconfig,
)

# deploy/k8s/ through the lab's overlay (its one change is explained there).
LAB_OVERLAY = REPO / "deploy" / "k8s-tools" / "lab"
CREDENTIAL_PLUGIN = REPO / "deploy" / "lab" / "k8s-credential.py"
CREDENTIAL_RBAC = REPO / "deploy" / "lab" / "k8s-credential-rbac.yaml"
DECLARED_EXPIRY = 20  # seconds the plugin declares; its real tokens live an hour
DEPLOYMENT = "streamforge-api"


# -- cluster contents ------------------------------------------------------------------------
def node_manifest(name: str, pods_capacity: int) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": str(pods_capacity)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            # The TTL controller owns node.alpha.kubernetes.io/ttl; leave it to it.
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def apply_nodes(lab: Lab) -> None:
    count = max(1, lab.settings.k8s_nodes)
    per_node = max(110, -(-(lab.settings.k8s_pods + 10 * count) // count) * 2)
    # Only the missing ones: re-applying hundreds of nodes on every `lab up` costs minutes.
    existing = set(kubectl(lab, "get", "nodes", "-l", "type=kwok", "-o", "name").split())
    names = [f"kwok-node-{i}" for i in range(count)]
    items = [node_manifest(n, per_node) for n in names if f"node/{n}" not in existing]
    if not items:
        return
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=sfops-lab",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=max(120.0, count / 2),
    )


def apply_stack(lab: Lab) -> None:
    """deploy/k8s/ as a user would apply it (through the lab's overlay), plus the Secret the
    template describes."""
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=sfops-lab",
        "-k",
        str(LAB_OVERLAY),
    )
    # Created once with a random password; never overwritten (pods may have read it).
    existing = run(
        [
            str(bin_dir() / "kubectl"),
            f"--kubeconfig={admin_kubeconfig(lab)}",
            "-n",
            NAMESPACE,
            "get",
            "secret",
            "streamforge-api-secrets",
            "--ignore-not-found",
            "-o",
            "name",
        ],
        what="kubectl get secret",
    )
    if not existing.strip():
        kubectl(
            lab,
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "streamforge-api-secrets",
            f"--from-literal=database-password={secrets.token_urlsafe(24)}",
        )


def scale_layout(total_pods: int) -> list[tuple[str, str, int]]:
    """(namespace, deployment, replicas) spreading ``total_pods`` over several of each."""
    namespaces = max(1, min(10, total_pods // 500))
    per_namespace = 5
    slots = [(f"scale-{n}", f"load-{d}") for n in range(namespaces) for d in range(per_namespace)]
    base, extra = divmod(total_pods, len(slots))
    return [(ns, name, base + (1 if i < extra else 0)) for i, (ns, name) in enumerate(slots)]


def apply_scale(lab: Lab) -> None:
    items: list[dict[str, Any]] = []
    layout = scale_layout(lab.settings.k8s_pods)
    for namespace in sorted({ns for ns, _, _ in layout}):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for namespace, name, replicas in layout:
        labels = {"app.kubernetes.io/name": name}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": "registry.example/load:1.0",
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                },
            }
        )
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--field-manager=sfops-lab",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        # One request per object, to an API server busy creating the first Deployments' pods.
        timeout=300.0,
    )


def wait_available(lab: Lab, namespace: str, names: list[str], timeout: float) -> None:
    for name in names:
        kubectl(
            lab,
            "-n",
            namespace,
            "wait",
            "--for=condition=Available",
            f"deployment/{name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )


def wait_scale(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    want = lab.settings.k8s_pods
    while True:
        out = kubectl(
            lab,
            "get",
            "deployments",
            "-A",
            "-l",
            "app.kubernetes.io/name",
            "-o",
            "json",
            timeout=120,
        )
        ready = sum(
            int(d["status"].get("readyReplicas", 0))
            for d in json.loads(out)["items"]
            if d["metadata"]["namespace"].startswith("scale-")
        )
        lab.progress(f"k8s scale: {ready}/{want} pods ready")
        if ready >= want:
            return
        if time.monotonic() > deadline:
            raise LabError(f"k8s scale: only {ready}/{want} pods ready after {timeout:.0f}s")
        time.sleep(5)


OPERATOR_USER = "sfops-lab"  # the lab's operator (runs sfops over SSH in the e2e tests)


def credential_dir(lab: Lab) -> Path:
    """The exec plugin's state: the minter's certificate and key, the cached real tokens, the
    call counters (``<name>.calls``) and the bad-token flags (``<name>.bad-once``)."""
    return lab.path("k8s", "credentials")


def exec_user(lab: Lab, account: str, *, name: str | None = None,
              declare: int = DECLARED_EXPIRY) -> dict[str, Any]:
    """A kubeconfig user whose credential comes from the lab's exec plugin, as EKS's and
    GKE's do from theirs: a real token of ``account``, declared valid for ``declare`` s.
    ``name`` picks another call counter (tests)."""
    args = ["-I", "-S", str(CREDENTIAL_PLUGIN), "--state", str(credential_dir(lab)),
            "--account", account, "--namespace", NAMESPACE, "--declare", str(declare)]
    if name:
        args += ["--name", name]
    return {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": os.path.realpath(sys.executable),
        "args": args,
        "interactiveMode": "Never",
        "provideClusterInfo": True,
        "installHint": f"the lab's plugin is {CREDENTIAL_PLUGIN} (run by python3)",
    }}


def prepare_credential_plugin(lab: Lab, owner: int | None) -> None:
    """The plugin's state directory with the token minter's certificate and key, and the
    minter's only right: create tokens for sfops's two ServiceAccounts."""
    directory = credential_dir(lab)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for stem, target in (("token-minter.crt", "minter.crt"), ("token-minter.key", "minter.key")):
        shutil.copyfile(pki(lab, stem), directory / target)
        (directory / target).chmod(0o600)
    kubectl(lab, "apply", "--server-side", "--force-conflicts", "--field-manager=sfops-lab",
            "-f", str(CREDENTIAL_RBAC))
    if owner is not None:  # sfops run over SSH as the lab's operator runs the plugin
        for path in (directory, *directory.iterdir()):
            os.chown(path, owner, -1)


def write_role_kubeconfigs(lab: Lab) -> None:
    """The read-only and operator identities sfops uses (0600), both through the lab's exec
    credential plugin (a real token with a short declared expiry). Owned by the lab's
    operator user when it exists, as the PostgreSQL secrets are, so sfops run over SSH as
    that user can read them and run the plugin; the admin kubeconfig stays root's."""
    try:
        owner: int | None = pwd.getpwnam(OPERATOR_USER).pw_uid
    except KeyError:
        owner = None
    prepare_credential_plugin(lab, owner)
    for account, path in (
        ("sfops", readonly_kubeconfig(lab)),
        ("sfops-operator", operator_kubeconfig(lab)),
    ):
        write_atomic(path, kubeconfig_text(lab, f"{NAMESPACE}-{account}",
                                           exec_user(lab, account)), mode=0o600)
        if owner is not None:
            os.chown(path, owner, -1)


# -- test hooks --------------------------------------------------------------------------------
def set_pod_ready(lab: Lab, pod: str, ready: bool, namespace: str = NAMESPACE) -> None:
    """Make a pod's readiness fail or recover, as a kubelet would after its probes.

    kwok only drives Pending pods, so it does not undo this: ContainersReady goes with Ready
    (kwok's pod-ready-again stage restores Ready alone, as a kubelet would, when the containers
    are ready). Conditions merge by ``type``.
    """
    reason = (
        {}
        if ready
        else {
            "reason": "ReadinessProbeFailed",
            "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        }
    )
    _patch_conditions(lab, pod, ("Ready", "ContainersReady"), ready, reason, namespace)


def mark_pod_not_ready_by_node(lab: Lab, pod: str, namespace: str = NAMESPACE) -> None:
    """What the node lifecycle controller writes to each pod of a node whose heartbeats lapsed
    (MarkPodsNotReady): Ready False alone, the containers still ready."""
    _patch_conditions(lab, pod, ("Ready",), False, {}, namespace)


def _patch_conditions(
    lab: Lab,
    pod: str,
    types: tuple[str, ...],
    ready: bool,
    extra: dict[str, str],
    namespace: str,
) -> None:
    """A strategic-merge patch of the pod's status conditions (they merge by ``type``)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = "True" if ready else "False"
    patch = {
        "status": {
            "conditions": [
                {"type": t, "status": status, "lastTransitionTime": now, **extra} for t in types
            ],
        }
    }
    kubectl(
        lab,
        "-n",
        namespace,
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(patch),
    )


def record_unhealthy_event(
    lab: Lab, pod: str, namespace: str = NAMESPACE, probe: str = "Readiness"
) -> None:
    """A Warning event with reason Unhealthy, shaped like the kubelet's probe events."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "kind": "Pod",
            "name": pod,
            "namespace": namespace,
            "apiVersion": "v1",
            "fieldPath": "spec.containers{api}",
        },
        "type": "Warning",
        "reason": "Unhealthy",
        "message": f"{probe} probe failed: HTTP probe failed with statuscode: 503",
        "source": {"component": "kubelet"},
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
    kubectl(lab, "create", "-f", "-", input_text=json.dumps(event))
