"""The Kubernetes slice: Deployments, ReplicaSets, Pods, Nodes, PodDisruptionBudgets and
Warning events kept current by list + watch; rollout and node actions."""

from backends.kubernetes.access import KubeActionError, image_reference_problem
from backends.kubernetes.client import KubeApiError, KubeClient, KubeError, KubeUnavailable
from backends.kubernetes.nodes import CordonNode, DrainNode, UncordonNode, plan_drain
from backends.kubernetes.rollout import (
    PauseDeployment,
    RestartDeployment,
    ResumeDeployment,
    RolloutFailed,
    ScaleDeployment,
    SetImage,
    UndoDeployment,
)
from backends.kubernetes.service import KubernetesService, build_service
from backends.kubernetes.status import ClusterStatus, summarize_cluster

__all__ = [
    "ClusterStatus",
    "CordonNode",
    "DrainNode",
    "KubeActionError",
    "KubeApiError",
    "KubeClient",
    "KubeError",
    "KubeUnavailable",
    "KubernetesService",
    "PauseDeployment",
    "RestartDeployment",
    "ResumeDeployment",
    "RolloutFailed",
    "ScaleDeployment",
    "SetImage",
    "UncordonNode",
    "UndoDeployment",
    "build_service",
    "image_reference_problem",
    "plan_drain",
    "summarize_cluster",
]
