"""Kubernetes actions against a fake API: RBAC first, refusals, the exact writes (restart
annotation, undo's copied template, scale subresource), rollout following, drain's 429 loop;
what --dry-run shows (would_change) and what is re-read right before the change (recheck)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from backends.actions import ActionRunner, CheckStatus, Outcome
from backends.audit import AuditLog
from backends.kubernetes import rollout
from backends.kubernetes.access import KubeActionError
from backends.kubernetes.client import KubeApiError
from backends.kubernetes.nodes import CordonNode, DrainNode, UncordonNode
from backends.kubernetes.rollout import (
    PauseDeployment,
    RestartDeployment,
    ResumeDeployment,
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
        self.closed = False

    async def close(self) -> None:  # the service's: an action must never call it
        self.closed = True

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


# ----------------------------------------------------------------------------- dry run


def _reads_only(api: FakeApi) -> bool:
    """Nothing but GETs and access reviews: a dry run changes nothing."""
    return all(verb == "GET" or path.endswith("selfsubjectaccessreviews")
               for verb, path, _ in api.calls)


async def test_restart_would_change_is_the_exact_patch(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(revision=2)
    lines = await RestartDeployment(api, "streamforge", "api").would_change()  # type: ignore[arg-type]
    assert lines[0] == f"PATCH {DEPLOY} (strategic merge patch)"
    body = json.loads(lines[1])
    (stamp,) = body["spec"]["template"]["metadata"]["annotations"].values()
    assert list(body["spec"]["template"]["metadata"]["annotations"]) == [
        "kubectl.kubernetes.io/restartedAt"] and stamp.endswith("Z")
    assert any("revision 2 → a new one" in line for line in lines)
    assert lines[-1].startswith("then: follow the rollout for up to 600 s")
    assert _reads_only(api)


async def test_restart_of_a_paused_deployment_would_change_nothing(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(paused=True)
    (line,) = await RestartDeployment(api, "streamforge", "api").would_change()  # type: ignore[arg-type]
    assert line.startswith("nothing: the change would be refused") and "paused" in line


async def test_set_image_would_change_one_container(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(image="r/api:1")
    lines = await SetImage(api, "streamforge", "api", "api",  # type: ignore[arg-type]
                           "r/api:2").would_change()
    assert lines[0] == "container api: r/api:1 → r/api:2"
    assert lines[1] == f"PATCH {DEPLOY} (strategic merge patch)"
    assert json.loads(lines[2]) == {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "r/api:2"}]}}}}
    same = await SetImage(api, "streamforge", "api", "api",  # type: ignore[arg-type]
                          "r/api:1").would_change()
    assert same == ["nothing: api already runs r/api:1"]
    assert _reads_only(api)


async def test_pause_and_resume_would_change_spec_paused(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(paused=False)
    lines = await PauseDeployment(api, "streamforge", "api").would_change()  # type: ignore[arg-type]
    assert lines[:2] == [f"PATCH {DEPLOY} (merge patch)", '{"spec": {"paused": true}}']
    assert lines[2].startswith("then: wait for the deployment controller")
    assert await ResumeDeployment(api, "streamforge", "api").would_change() == [  # type: ignore[arg-type]
        "nothing: streamforge/api is not paused"]
    api.objects[DEPLOY] = deployment(paused=True)
    lines = await ResumeDeployment(api, "streamforge", "api").would_change()  # type: ignore[arg-type]
    assert lines[1] == '{"spec": {"paused": false}}'


async def test_scale_would_change_from_n_to_m(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(replicas=3)
    lines = await ScaleDeployment(api, "streamforge", "api", 5).would_change()  # type: ignore[arg-type]
    assert lines[:3] == ["replicas 3 → 5", f"PATCH {DEPLOY}/scale (merge patch)",
                         '{"spec": {"replicas": 5}}']
    assert await ScaleDeployment(api, "streamforge", "api", 3).would_change() == [  # type: ignore[arg-type]
        "nothing: streamforge/api already has 3 replicas"]
    assert _reads_only(api)


async def test_relative_scale_is_fixed_at_the_preflight(tmp_path):
    """`sfops k8s scale-down` (no last status): the live count, read by the preflight, is
    the one confirmed, shown and written."""
    api = FakeApi()
    api.objects[DEPLOY] = deployment(replicas=3)
    action = ScaleDeployment(api, "streamforge", "api", None, step=-1)  # type: ignore[arg-type]
    assert "by -1 replica" in action.describe()
    checks = await action.preflight()
    assert {c.name: c.detail for c in checks}["replicas"] == "3 → 2"
    assert action.replicas == 2 and action.params["replicas"] == 2
    api.objects[DEPLOY] = deployment(replicas=4)  # someone else scaled meanwhile
    assert (await action.would_change())[0] == "replicas 4 → 2"
    (exists, unchanged) = await action.recheck()
    assert exists.status is CheckStatus.PASS
    assert unchanged.status is CheckStatus.WARN and "was 3 at the preflight" in unchanged.detail

    api.objects[DEPLOY] = deployment(replicas=0)
    at_zero = ScaleDeployment(api, "streamforge", "api", None, step=-1)  # type: ignore[arg-type]
    (failed,) = [c for c in await at_zero.preflight() if c.status is CheckStatus.FAIL]
    assert failed.name == "replicas"


def _undo_api() -> FakeApi:
    api = FakeApi()
    api.objects[DEPLOY] = deployment(revision=3, image="r/api:2")
    api.objects["rs:2"] = replicaset("api-22222", 2, image="r/api:1", replicas=0)
    api.objects["rs:3"] = replicaset("api-33333", 3, image="r/api:2")
    return api


async def test_undo_would_change_names_the_revision_and_the_template_change(tmp_path):
    api = _undo_api()
    lines = await UndoDeployment(api, "streamforge", "api").would_change()  # type: ignore[arg-type]
    assert lines[0].startswith("revision 3 → the template of revision 2 (api=r/api:1)")
    diff = [line for line in lines if line[:1] in "+-" and "image" in line]
    assert diff == ['-        "image": "r/api:2",', '+        "image": "r/api:1",']
    patch_at = lines.index(f"PATCH {DEPLOY} (JSON patch)")
    (op,) = json.loads(lines[patch_at + 1])
    assert op["op"] == "replace" and op["path"] == "/spec/template"
    assert op["value"]["spec"]["containers"] == [{"name": "api", "image": "r/api:1"}]
    assert "pod-template-hash" not in op["value"]["metadata"]["labels"]
    assert _reads_only(api)


async def test_undo_recheck_needs_the_target_revision(tmp_path):
    api = _undo_api()
    action = UndoDeployment(api, "streamforge", "api", to_revision=2)  # type: ignore[arg-type]
    checks = {c.name: c for c in await action.recheck()}
    assert checks["deployment exists"].status is CheckStatus.PASS
    assert checks["revision"].status is CheckStatus.PASS
    assert checks["revision"].detail == "revision 2 still kept"
    del api.objects["rs:2"]  # pruned past revisionHistoryLimit meanwhile
    checks = {c.name: c for c in await action.recheck()}
    assert checks["revision"].status is CheckStatus.FAIL
    assert "no revision 2" in checks["revision"].detail


async def test_a_recheck_that_fails_refuses_the_confirmed_run(tmp_path):
    """The runner re-reads only the critical conditions: the deployment deleted after the
    operator confirmed is a refusal, recorded as a re-check, and nothing is written."""
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    action = RestartDeployment(api, "streamforge", "api")  # type: ignore[arg-type]
    checks = await action.preflight()
    assert not [c for c in checks if c.status is CheckStatus.FAIL]
    del api.objects[DEPLOY]
    reviews = sum(1 for _, path, _ in api.calls if path.endswith("selfsubjectaccessreviews"))
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"))
    result = await runner.run(action, preflight=checks)
    assert result.outcome is Outcome.REFUSED
    assert "re-check: deployment exists" in (result.error or "")
    assert "deployment streamforge/api not found" in (result.error or "")
    assert not _patches(api)
    # Prepared once: no second access review.
    assert sum(1 for _, path, _ in api.calls
               if path.endswith("selfsubjectaccessreviews")) == reviews


async def test_restart_recheck_refuses_a_deployment_paused_meanwhile(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment(paused=True)
    checks = {c.name: c for c in await RestartDeployment(  # type: ignore[arg-type]
        api, "streamforge", "api").recheck()}
    assert checks["not paused"].status is CheckStatus.FAIL


async def test_set_image_recheck_needs_the_container(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    checks = {c.name: c for c in await SetImage(  # type: ignore[arg-type]
        api, "streamforge", "api", "web", "r/web:1").recheck()}
    assert checks["container exists"].status is CheckStatus.FAIL


async def test_cordon_and_uncordon_would_change_spec_unschedulable(tmp_path):
    api = FakeApi()
    api.objects["/api/v1/nodes/n1"] = node("n1")
    lines = await CordonNode(api, "n1").would_change()  # type: ignore[arg-type]
    assert lines[1:] == ["PATCH /api/v1/nodes/n1 (merge patch)",
                         '{"spec": {"unschedulable": true}}']
    assert await UncordonNode(api, "n1").would_change() == [  # type: ignore[arg-type]
        "nothing: node n1 is schedulable (the patch changes nothing)"]
    api.objects["/api/v1/nodes/n1"] = node("n1", unschedulable=True)
    assert (await CordonNode(api, "n1").would_change())[0].startswith(  # type: ignore[arg-type]
        "nothing: node n1 is already cordoned")
    lines = await UncordonNode(api, "n1").would_change()  # type: ignore[arg-type]
    assert json.loads(lines[-1]) == {
        "spec": {"unschedulable": None},
        "metadata": {"annotations": {"sfops.streamforge.io/drain-started": None}}}
    assert not _patches(api)


async def test_drain_would_change_lists_the_evictions_and_the_skips(tmp_path):
    api = FakeApi()
    api.objects["/api/v1/nodes/n1"] = node("n1")
    api.objects["pod:api-2"] = pod("api-2", node="n1")
    api.objects["pod:api-1"] = pod("api-1", node="n1")
    api.objects["pod:bare"] = pod("bare", node="n1", owner=None, labels={"app": "bare"})
    api.objects["pod:agent"] = pod("agent", node="n1", owner=("DaemonSet", "agent"),
                                   labels={"app": "agent"})
    api.objects["pod:static"] = pod("static", node="n1", owner=("Node", "n1"),
                                    labels={"app": "static"},
                                    annotations={"kubernetes.io/config.mirror": "x"})
    api.objects["pod:elsewhere"] = pod("elsewhere", node="n2")
    api.objects["pdb:api"] = budget(allowed=1)
    lines = await DrainNode(api, "n1", timeout=60, grace_period=5).would_change()  # type: ignore[arg-type]
    patch = json.loads(lines[2])
    assert lines[1] == "PATCH /api/v1/nodes/n1 (merge patch)"
    assert patch["spec"] == {"unschedulable": True}
    assert "sfops.streamforge.io/drain-started" in patch["metadata"]["annotations"]
    assert lines[3].startswith("evict 3 pods, one at a time") and "grace period 5 s" in lines[3]
    assert [line.strip() for line in lines if line.strip().startswith(("evict ", "skip "))
            and line.startswith("  ")] == [
        "evict streamforge/api-1", "evict streamforge/api-2",
        "evict streamforge/bare (no controller: not recreated)",
        "skip streamforge/agent (DaemonSet)", "skip streamforge/static (mirror pod)"]
    assert any(line.startswith("budget streamforge/api (maxUnavailable 1) allows 1 now for 2")
               for line in lines)
    assert lines[-1].endswith("the node stays cordoned")
    assert _reads_only(api)


async def test_node_recheck_needs_the_node(tmp_path):
    api = FakeApi()
    api.objects["/api/v1/nodes/n1"] = node("n1")
    action = DrainNode(api, "n1")  # type: ignore[arg-type]
    (check,) = await action.recheck()
    assert check.name == "node exists" and check.status is CheckStatus.PASS
    del api.objects["/api/v1/nodes/n1"]
    (check,) = await action.recheck()
    assert check.status is CheckStatus.FAIL and check.detail == "node n1 not found"


async def test_close_is_idempotent_and_leaves_the_shared_client_open(tmp_path):
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    for action in (RestartDeployment(api, "streamforge", "api"),  # type: ignore[arg-type]
                   DrainNode(api, "n1")):  # type: ignore[arg-type]
        await action.close()
        await action.close()
    assert not api.closed


async def test_the_preflight_states_the_worst_case_from_the_real_timeouts(tmp_path):
    """Each API read at its retry deadline plus the client's timeout, each write at the
    client's timeout, and the action's own: the rollout timeout, the drain timeout."""
    api = FakeApi()
    api.objects[DEPLOY] = deployment()
    restart = RestartDeployment(api, "streamforge", "api", timeout=300)  # type: ignore[arg-type]
    checks = await restart.preflight()
    assert checks[-1].name == "worst case" and checks[-1].status is CheckStatus.PASS
    parts = dict(restart.worst_case().parts)
    read = 8 + 10  # READ_POLICY's deadline, then one request of DEFAULT_TIMEOUT
    assert parts["re-check"] == 2 * read and parts["verify"] == read
    assert parts["rollout timeout"] == 300 + read + rollout.FOLLOW_INTERVAL
    api.objects["/api/v1/nodes/n1"] = node("n1")
    drain = DrainNode(api, "n1", timeout=120)  # type: ignore[arg-type]
    checks = await drain.preflight()
    assert "worst case" in [c.name for c in checks]
    assert dict(drain.worst_case().parts)["drain timeout"] == 120
    assert "drain timeout 120 s" in str(drain.worst_case())
