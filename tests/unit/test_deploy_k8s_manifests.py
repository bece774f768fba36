"""deploy/k8s/ read as files: the Deployment agrees with the API service it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def api_container() -> dict[str, Any]:
    (deployment,) = documents("deployment.yaml")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    (kustomization,) = documents("kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.template.yaml"}
    (secret,) = documents("secret.template.yaml")
    assert all(v == "<set-me>" for v in secret["stringData"].values())


def test_probe_paths_and_port_match_the_api_service() -> None:
    app = (DEPLOY / "api" / "app.py").read_text()
    routes = set(re.findall(r'Route\("(/health/[a-z]+)"', app))
    assert {"/health/live", "/health/ready"} <= routes
    dockerfile = (DEPLOY / "Dockerfile.api").read_text()
    assert re.search(r"^EXPOSE 8000$", dockerfile, re.M)
    container = api_container()
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert all(
        container[p]["httpGet"]["port"] == "http"
        for p in ("readinessProbe", "livenessProbe", "startupProbe")
    )


def test_grace_period_covers_prestop_and_the_service_drain() -> None:
    (deployment,) = documents("deployment.yaml")
    (configmap,) = documents("configmap.yaml")
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = api_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(configmap["data"]["SFAPI_DRAIN_DELAY"])
    grace = float(configmap["data"]["SFAPI_SHUTDOWN_GRACE"])
    closing = 10  # pool and producer close, deploy/api/README.md
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + grace + closing
    strategy = deployment["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert deployment["spec"]["minReadySeconds"] > 0
    assert "password" not in str(configmap["data"]["SFAPI_DATABASE_URL"]).lower()


def test_pdb_selects_the_api_pods() -> None:
    (pdb,) = documents("pdb.yaml")
    (deployment,) = documents("deployment.yaml")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_readonly_role_reads_exactly_what_sfops_lists_and_watches() -> None:
    from backends.kubernetes.informer import READ_RESOURCES

    by_name = {(d["kind"], d["metadata"]["name"]): d for d in documents("rbac-sfops.yaml")}
    role = by_name[("ClusterRole", "sfops-readonly")]
    granted = {(group, resource) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"]}
    assert granted == {(r.group, r.name) for r in READ_RESOURCES}
    assert all(sorted(rule["verbs"]) == ["get", "list", "watch"] for rule in role["rules"])
    assert not any("*" in str(rule) for rule in role["rules"])
    assert ("", "configmaps") not in granted and ("", "secrets") not in granted
    # The read-only ServiceAccount gets nothing else.
    bound = [d for d in by_name.values() if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             and any(s["name"] == "sfops" for s in d["subjects"])]
    assert [b["roleRef"]["name"] for b in bound] == ["sfops-readonly"]

