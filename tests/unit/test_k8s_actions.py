"""Kubernetes actions against a fake API: RBAC first, refusals, the exact writes (restart
annotation, undo's copied template, scale subresource), rollout following, drain's 429 loop."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from backends.actions import ActionRunner, CheckStatus, Outcome
from backends.audit import AuditLog
from backends.kubernetes import rollout
from backends.kubernetes.access import KubeActionError
from backends.kubernetes.client import KubeApiError
from backends.kubernetes.nodes import DrainNode
from backends.kubernetes.rollout import (
    RestartDeployment,
    RolloutFailed,
    ScaleDeployment,
    SetImage,
    UndoDeployment,
)
from tests.unit.test_k8s_objects import budget, deployment, node, pod, replicaset

DEPLOY = "/apis/apps/v1/namespaces/streamforge/deployments/api"


class FakeApi:
    host = "https://fake"

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.allowed = True
        self.calls: list[tuple[str, str, Any]] = []
        self.on_patch: Any = None
        self.eviction_answers: list[int] = []
        self.get_hook: Any = None

    async def get(self, path, params=None, *, timeout=None, what=""):
        self.calls.append(("GET", path, params))
        if self.get_hook is not None:
            self.get_hook(path)
        if path == "/api/v1/pods":
            node_name = params["fieldSelector"].split("=", 1)[1]
            return {"items": [p for k, p in self.objects.items()
                              if k.startswith("pod:") and p["spec"]["nodeName"] == node_name]}
        if path.endswith("/replicasets"):
            return {"items": [v for k, v in self.objects.items() if k.startswith("rs:")]}
        if path.endswith("/poddisruptionbudgets"):
            return {"items": [v for k, v in self.objects.items() if k.startswith("pdb:")]}
        if path.startswith("/api/v1/namespaces/") and "/pods/" in path:
            name = path.rsplit("/", 1)[1]
            if f"pod:{name}" in self.objects:
                return self.objects[f"pod:{name}"]
            raise KubeApiError(404, "NotFound", f'pods "{name}" not found')
        if path in self.objects:
            return copy.deepcopy(self.objects[path])
        raise KubeApiError(404, "NotFound", "not found")

    async def post(self, path, body, *, timeout=None, what=""):
        self.calls.append(("POST", path, body))
        if path.endswith("selfsubjectaccessreviews"):
            return {"status": {"allowed": self.allowed,
                               "reason": "" if self.allowed else "no RBAC policy matched"}}
        if path.endswith("/eviction"):
            code = self.eviction_answers.pop(0) if self.eviction_answers else 201
            if code == 429:
                raise KubeApiError(429, "TooManyRequests", "Cannot evict pod as it would "
                                   "violate the pod's disruption budget.")
            name = path.split("/")[-2]
            self.objects.pop(f"pod:{name}", None)
            return {}
        raise AssertionError(path)

    async def patch(self, path, body, content_type="", *, timeout=None, what=""):
        self.calls.append(("PATCH", path, body))
        if self.on_patch is not None:
            return self.on_patch(path, body)
        return copy.deepcopy(self.objects.get(path, {}))


def _patches(api: FakeApi) -> list[tuple[str, Any]]:
    return [(path, body) for verb, path, body in api.calls if verb == "PATCH"]


async def _run(action, *, tmp_path):
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"))
    steps = []
    result = await runner.run(action, on_step=steps.append)
    return result, [s.message for s in steps]


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(rollout, "FOLLOW_INTERVAL", 0.001)


async def test_rbac_denied_is_reported_first(tmp_path):
    api = FakeApi()
    api.allowed = False
    api.objects[DEPLOY] = deployment()
    checks = await RestartDeployment(api, "streamforge", "api").preflight()  # type: ignore[arg-type]
    assert checks[0].name == "RBAC" and checks[0].status is CheckStatus.FAIL
    assert "patch deployments.apps in streamforge" in checks[0].detail


async def test_unknown_deployment_fails_preflight(tmp_path):
    api = FakeApi()
    result, _ = await _run(RestartDeployment(api, "streamforge", "nope"),  # type: ignore[arg-type]
                           tmp_path=tmp_path)
    assert result.outcome is Outcome.REFUSED
    assert "deployment streamforge/nope not found" in (result.error or "")
    assert not _patches(api)


async def test_restart_refuses_paused(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(paused=True)
    result, _ = await _run(RestartDeployment(api, "streamforge", "api"),  # type: ignore[arg-type]
                           tmp_path=tmp_path)
    assert result.outcome is Outcome.REFUSED
    assert "paused" in (result.error or "")
    assert not _patches(api)


async def test_restart_patches_annotation_and_follows_rollout(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(revision=2)
    states = [deployment(generation=3, observed=2, revision=3),
              deployment(generation=3, observed=3, revision=3, updated=1, status_replicas=4),
              deployment(generation=3, observed=3, revision=3, updated=3, available=3)]

    def patched(path, body):
        return deployment(generation=3, observed=2, revision=2)

    api.on_patch = patched
    reads = iter([deployment(revision=2), deployment(revision=2), *states])  # preflight, start

    def hook(path):
        if path == DEPLOY:
            try:
                api.objects[DEPLOY] = next(reads)
            except StopIteration:
                pass

    api.get_hook = hook
    result, steps = await _run(RestartDeployment(api, "streamforge", "api"),  # type: ignore[arg-type]
                               tmp_path=tmp_path)
    assert result.ok, result.error
    ((_path, body),) = _patches(api)
    annotations = body["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert any("1 of 3 new replicas updated" in s for s in steps)
    assert steps[-1].startswith("rolled out")


async def test_failed_rollout_is_reported_with_undo_hint(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    api.on_patch = lambda path, body: deployment(generation=3, observed=2)

    def hook(path):
        if path == DEPLOY and any(v == "PATCH" for v, _, _ in api.calls):
            api.objects[DEPLOY] = deployment(
                generation=3, observed=3, updated=1,
                progressing_reason="ProgressDeadlineExceeded", image="r/api:broken")

    api.get_hook = hook
    result, _ = await _run(SetImage(api, "streamforge", "api", "api",  # type: ignore[arg-type]
                                    "r/api:broken"), tmp_path=tmp_path)
    assert result.outcome is Outcome.FAILED
    assert "progress deadline" in (result.error or "")
    assert "sfops k8s undo api" in (result.error or "")
    assert isinstance(RolloutFailed("x"), KubeActionError)


async def test_set_image_rejects_unknown_container_and_bad_reference(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    checks = await SetImage(api, "streamforge", "api", "web",  # type: ignore[arg-type]
                            "Bad:Ref").preflight()
    failed = {c.name for c in checks if c.status is CheckStatus.FAIL}
    assert failed == {"image reference", "container exists"}


async def test_undo_copies_the_previous_replicaset_template(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(revision=3, image="r/api:2")
    api.objects["rs:1"] = replicaset("api-11111", 1, image="r/api:0", replicas=0)
    api.objects["rs:2"] = replicaset("api-22222", 2, image="r/api:1", replicas=0)
    api.objects["rs:3"] = replicaset("api-33333", 3, image="r/api:2")
    api.objects["rs:foreign"] = replicaset("other-44444", 9, owner_uid="someone-else")
    api.on_patch = lambda path, body: deployment(generation=3, observed=2, revision=3)

    def hook(path):
        if path == DEPLOY and any(v == "PATCH" for v, _, _ in api.calls):
            api.objects[DEPLOY] = deployment(generation=3, observed=3, revision=4,
                                             image="r/api:1")

    api.get_hook = hook
    action = UndoDeployment(api, "streamforge", "api")  # type: ignore[arg-type]
    checks = await action.preflight()
    assert any("template of revision 2" in c.detail for c in checks)
    result, _ = await _run(action, tmp_path=tmp_path)
    assert result.ok, result.error
    ((_, body),) = _patches(api)
    assert body[0]["op"] == "replace" and body[0]["path"] == "/spec/template"
    template = body[0]["value"]
    assert template["spec"]["containers"][0]["image"] == "r/api:1"
    assert "pod-template-hash" not in template["metadata"]["labels"]
    assert action.chosen_revision == 2


async def test_undo_to_missing_revision_names_the_kept_ones(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(revision=3)
    api.objects["rs:3"] = replicaset("api-33333", 3)
    checks = await UndoDeployment(api, "streamforge", "api",  # type: ignore[arg-type]
                                  to_revision=7).preflight()
    (failed,) = [c for c in checks if c.status is CheckStatus.FAIL]
    assert "no revision 7" in failed.detail and "revisions kept: 3" in failed.detail


async def test_scale_uses_the_scale_subresource(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment()

    def hook(path):
        if path == DEPLOY and any(v == "PATCH" for v, _, _ in api.calls):
            api.objects[DEPLOY] = deployment(generation=3, observed=3, replicas=5, updated=5,
                                             ready=5, available=5)

    api.get_hook = hook
    result, _ = await _run(ScaleDeployment(api, "streamforge", "api", 5),  # type: ignore[arg-type]
                           tmp_path=tmp_path)
    assert result.ok, result.error
    ((path, body),) = _patches(api)
    assert path == DEPLOY + "/scale" and body == {"spec": {"replicas": 5}}


async def test_drain_skips_daemonsets_and_waits_on_429(tmp_path):
    api = FakeApi()
    api.objects["/api/v1/nodes/n1"] = node("n1")
    api.objects["pod:api-1"] = pod("api-1", node="n1")
    api.objects["pod:api-2"] = pod("api-2", node="n1")
    api.objects["pod:agent"] = pod("agent", node="n1", owner=("DaemonSet", "agent"),
                                   labels={"app": "agent"})
    api.objects["pdb:api"] = budget(allowed=1)
    api.eviction_answers = [201, 429, 429, 201]
    api.on_patch = lambda path, body: (
        node("n1", unschedulable=True) if body.get("spec", {}).get("unschedulable") else node("n1"))
    slept: list[float] = []

    async def no_sleep(seconds):
        slept.append(seconds)

    action = DrainNode(api, "n1", sleep=no_sleep)  # type: ignore[arg-type]
    checks = await action.preflight()
    by_name = {c.name: c for c in checks}
    assert by_name["will evict 2 pods"].detail == "streamforge/api-1, streamforge/api-2"
    assert "streamforge/agent (DaemonSet)" in by_name["will skip 1 pods"].detail
    assert by_name["budget streamforge/api"].status is CheckStatus.WARN  # 2 pods, allows 1

    api.on_patch = lambda path, body: node("n1", unschedulable=True)
    api.objects["/api/v1/nodes/n1"] = node("n1", unschedulable=True)
    result, steps = await _run(action, tmp_path=tmp_path)
    assert result.ok, result.error
    assert action.waited_429 == 2 and slept[:2] == [1.0, 2.0]
    assert any("blocked by PodDisruptionBudget streamforge/api" in s for s in steps)
    evictions = [p for v, p, _ in api.calls if v == "POST" and p.endswith("/eviction")]
    assert [e.split("/")[-2] for e in evictions] == ["api-1", "api-2", "api-2", "api-2"]
    assert "pod:agent" in api.objects  # the DaemonSet pod stays
    first_patch = _patches(api)[0][1]
    assert first_patch["spec"]["unschedulable"] is True
    assert "sfops.streamforge.io/drain-started" in first_patch["metadata"]["annotations"]
    assert _patches(api)[-1][1] == {
        "metadata": {"annotations": {"sfops.streamforge.io/drain-started": None}}}


async def test_drain_times_out_naming_the_budget(tmp_path):
    api = FakeApi()
    api.objects["/api/v1/nodes/n1"] = node("n1", unschedulable=True)
    api.objects["pod:api-1"] = pod("api-1", node="n1")
    api.objects["pdb:api"] = budget(allowed=0)
    api.eviction_answers = [429] * 100
    api.on_patch = lambda path, body: node("n1", unschedulable=True)

    async def no_sleep(seconds):
        return None

    action = DrainNode(api, "n1", timeout=0.0, sleep=no_sleep)  # type: ignore[arg-type]
    result, _ = await _run(action, tmp_path=tmp_path)
    assert result.outcome is Outcome.REFUSED or result.outcome is Outcome.FAILED
    if result.outcome is Outcome.FAILED:
        assert "PodDisruptionBudget streamforge/api" in (result.error or "")
        assert "stays cordoned" in (result.error or "")
