"""Small builders of Kubernetes API JSON shared by the k8s unit tests (no tests here)."""

from __future__ import annotations

from typing import Any

NOW = "2026-01-01T12:00:00Z"


def deployment(name: str = "api", namespace: str = "streamforge", *, generation: int = 2,
               observed: int = 2, replicas: int = 3, status_replicas: int | None = None,
               updated: int = 3, ready: int = 3, available: int = 3, paused: bool = False,
               revision: int = 2, image: str = "reg.example/api:1",
               progressing_reason: str = "NewReplicaSetAvailable",
               uid: str = "dep-uid", labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "generation": generation, "resourceVersion": "10",
                     "creationTimestamp": "2026-01-01T11:00:00Z",
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)}},
        "spec": {"replicas": replicas, "paused": paused, "progressDeadlineSeconds": 30,
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "api", "image": image}]}}},
        "status": {"observedGeneration": observed,
                   "replicas": replicas if status_replicas is None else status_replicas,
                   "updatedReplicas": updated, "readyReplicas": ready,
                   "availableReplicas": available,
                   "conditions": [{"type": "Progressing", "status": "True",
                                   "reason": progressing_reason}]},
    }


def replicaset(name: str, revision: int, *, deployment_name: str = "api",
               namespace: str = "streamforge", image: str = "reg.example/api:1",
               replicas: int = 3, uid: str | None = None, owner_uid: str = "dep-uid",
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {**(labels or {"app": deployment_name}), "pod-template-hash": name[-5:]}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}",
                     "creationTimestamp": "2026-01-01T11:00:00Z",
                     "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                     "labels": labels,
                     "ownerReferences": [{"kind": "Deployment", "name": deployment_name,
                                          "uid": owner_uid, "controller": True}]},
        "spec": {"replicas": replicas,
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "api", "image": image}]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas,
                   "availableReplicas": replicas},
    }


def pod(name: str, *, namespace: str = "streamforge", node: str = "node-1",
        owner: tuple[str, str] | None = ("ReplicaSet", "api-abcde"), ready: bool = True,
        phase: str = "Running", restarts: int = 0, labels: dict[str, str] | None = None,
        probes: tuple[str, ...] = ("readinessProbe", "livenessProbe"),
        annotations: dict[str, str] | None = None, deleting: bool = False,
        ready_message: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                            "creationTimestamp": "2026-01-01T11:58:00Z",
                            "labels": labels or {"app": "api"},
                            "annotations": annotations or {}}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = NOW
    status = "True" if ready else "False"
    return {
        "metadata": meta,
        "spec": {"nodeName": node,
                 "containers": [{"name": "api", "image": "reg.example/api:1",
                                 **{p: {"httpGet": {"path": "/"}} for p in probes}}]},
        "status": {"phase": phase,
                   "conditions": [{"type": t, "status": status, "message": ready_message}
                                  for t in ("Ready", "ContainersReady")],
                   "containerStatuses": [{"name": "api", "ready": ready, "started": True,
                                          "restartCount": restarts}]},
    }


def node(name: str, *, ready: bool = True, unschedulable: bool = False,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T10:00:00Z",
                     "annotations": annotations or {}},
        "spec": {"unschedulable": unschedulable} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "reason": "KubeletReady"}]},
    }


def budget(name: str = "api", *, namespace: str = "streamforge", allowed: int = 1,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels or {"app": "api"}}},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": 3, "desiredHealthy": 2,
                   "expectedPods": 3},
    }


def event(name: str, pod_name: str, message: str, *, count: int = 1,
          first: str = "2026-01-01T11:58:00Z", last: str = NOW, reason: str = "Unhealthy",
          namespace: str = "streamforge") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "5"},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": namespace},
        "type": "Warning", "reason": reason, "message": message, "count": count,
        "firstTimestamp": first, "lastTimestamp": last,
    }
