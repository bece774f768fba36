"""The ``[kubernetes]`` configuration section, parsed by the backend that uses it (the generic
reader and ``[sfops]``/``[executors]`` live in :mod:`backends.config`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backends.config import DNS_LABEL, DNS_LABEL_RULE, ExecutorConfig, Reader


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: Path | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ("default",)
    # Credentials of the read-only and operator ServiceAccounts (deploy/k8s/rbac-sfops.yaml);
    # the lab writes both, for read-only-mode tests and least-privilege actions.
    readonly_kubeconfig: Path | None = None
    operator_kubeconfig: Path | None = None
    # Where sfops keeps its per-target Leases (backends.locks); default: the first namespace.
    lease_namespace: str | None = None


def parse_section(root: Reader, executors: Mapping[str, ExecutorConfig]) -> KubernetesConfig | None:
    table = root.table("kubernetes")
    if table is None:
        return None
    namespaces = table.strings("namespaces", ("default",))
    if not namespaces:
        table.fail("namespaces", "must list at least one namespace")
    for namespace in namespaces:
        if namespace != "*":  # "*" (or "all"): every namespace
            table.identifier("namespaces", namespace, pattern=DNS_LABEL,
                             rule=f'{DNS_LABEL_RULE} or "*"')
    lease_namespace = table.string("lease_namespace", None)
    table.identifier("lease_namespace", lease_namespace, pattern=DNS_LABEL, rule=DNS_LABEL_RULE)
    config = KubernetesConfig(
        kubeconfig=table.path("kubeconfig", None),
        context=table.string("context", None),
        namespaces=namespaces,
        readonly_kubeconfig=table.path("readonly_kubeconfig", None),
        operator_kubeconfig=table.path("operator_kubeconfig", None),
        lease_namespace=lease_namespace,
    )
    table.finish()
    return config
