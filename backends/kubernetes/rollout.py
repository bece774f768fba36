"""Deployment actions: restart, set image, undo, pause, resume, scale.

Each one checks RBAC first (SelfSubjectAccessReview), then the deployment's state, makes one
write (never retried), and follows the rollout as ``kubectl rollout status`` does until it
completes, exceeds its progress deadline, or our own timeout expires.

The write is computed by :meth:`DeploymentAction.patch_for` from the deployment as read, so
``--dry-run`` (:meth:`~DeploymentAction.would_change`) shows exactly the resource path and the
patch body the change would send. An action borrows its client (the CLI's, closed by the CLI
context, or the TUI's shared one): it holds nothing of its own to close.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from backends.actions import Action, CheckResult, Step, WorstCase
from backends.kubernetes.access import (
    Api,
    KubeActionError,
    Permission,
    deployment_path,
    describe_api_error,
    image_reference_problem,
)
from backends.kubernetes.client import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    KubeApiError,
    KubeClient,
    KubeError,
)
from backends.kubernetes.contract import DEFAULT_ROLLOUT_TIMEOUT
from backends.kubernetes.objects import (
    POD_TEMPLATE_HASH,
    RESTARTED_AT_ANNOTATION,
    REVISION_ANNOTATION,
    DeploymentInfo,
    RolloutState,
    deployment_from_json,
    rollout_status,
)
from backends.locks import LockKey, key_name
from backends.resilience import CircuitBreaker

FOLLOW_INTERVAL = 0.5
CONTENT_TYPE_NAME = {JSON_PATCH: "JSON patch", MERGE_PATCH: "merge patch",
                     STRATEGIC_PATCH: "strategic merge patch"}

# One write: (resource path, body, content type).
Patch = tuple[str, Any, str]


class RolloutFailed(KubeActionError):
    pass


def patch_lines(patch: Patch) -> list[str]:
    """The request line and the exact body (as the client serialises it)."""
    path, body, content_type = patch
    return [f"PATCH {path} ({CONTENT_TYPE_NAME.get(content_type, content_type)})",
            json.dumps(body)]


def _fraction(d: DeploymentInfo) -> float:
    if d.desired <= 0:
        return 1.0
    updated = min(d.updated, d.desired) / d.desired
    available = min(d.available, d.updated, d.desired) / d.desired
    return round(0.5 * updated + 0.5 * available, 3)


class DeploymentAction(Action):
    """Base: ``namespace/name`` target, RBAC + existence preflight, rollout following."""

    verb: ClassVar[str] = "patch"
    subresource: ClassVar[str] = ""
    follow: ClassVar[bool] = True

    def __init__(self, client: KubeClient, namespace: str, deployment: str, *,
                 timeout: float = DEFAULT_ROLLOUT_TIMEOUT, breaker: CircuitBreaker | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{namespace}/{deployment}",
                         {"namespace": namespace, "deployment": deployment, "timeout": timeout,
                          **(params or {})})
        self.api = Api(client, breaker)
        self.namespace = namespace
        self.deployment = deployment
        self.timeout = timeout
        self.before: DeploymentInfo | None = None
        self.before_json: dict[str, Any] | None = None
        self.after: DeploymentInfo | None = None
        self.target_generation = 0

    @property
    def path(self) -> str:
        return deployment_path(self.namespace, self.deployment)

    def locks(self) -> list[LockKey]:
        return [LockKey(key_name("k8s-deploy", self.namespace, self.deployment),
                        f"deployment {self.target}")]

    async def fetch(self) -> dict[str, Any]:
        return await self.api.get(self.path, f"get deployment {self.target}")

    # ---------------------------------------------------------------- preflight

    async def preflight(self) -> list[CheckResult]:
        permission = Permission(self.verb, "deployments", "apps", self.namespace,
                                self.subresource, self.deployment)
        try:
            checks = [await self.api.rbac_check([permission])]
        except KubeError as exc:
            return [CheckResult.failed("API server", str(exc))]
        try:
            self.before_json = await self.fetch()
        except KubeError as exc:
            detail = (f"deployment {self.target} not found"
                      if isinstance(exc, KubeApiError) and exc.not_found else str(exc))
            return [*checks, CheckResult.failed("deployment exists", detail)]
        self.before = deployment_from_json(self.before_json)
        rollout = rollout_status(self.before)
        checks.append(CheckResult.passed(
            "deployment exists",
            f"{self.before.ready}/{self.before.desired} ready, revision "
            f"{self.before.revision}, {', '.join(f'{c}={i}' for c, i in self.before.images)}"))
        if rollout.state is RolloutState.FAILED:
            checks.append(CheckResult.warned("current rollout", rollout.message))
        elif rollout.state is RolloutState.ROLLING:
            checks.append(CheckResult.warned("current rollout",
                                             f"already in progress: {rollout.message}"))
        checks.extend(await self.specific_checks(self.before, self.before_json))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """Re-check; read, plan and write the change; follow the rollout up to its timeout
        (or wait for the controller to observe it), the read in flight then; verify."""
        read, write = self.api.read_bound(), self.api.write_bound()
        wait = (("rollout timeout", self.timeout) if self.follow
                else ("observed wait", min(self.timeout, 60.0)))
        return WorstCase((
            ("re-check", 2 * read),
            ("change", 2 * read + write),
            (wait[0], wait[1] + read + FOLLOW_INTERVAL),
            ("verify", read),
        ), self.api.bound_note())

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        return []

    # ---------------------------------------------------------------- execute

    async def current(self) -> tuple[DeploymentInfo, dict[str, Any]]:
        obj = await self.fetch()
        return deployment_from_json(obj), obj

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        """The one write the change makes on this deployment state (None: nothing to change).
        Raises KubeActionError when the change must not be made. Reads at most."""
        raise NotImplementedError

    async def change(self, d: DeploymentInfo, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Make the one write; returns the updated object (None: nothing to change)."""
        patch = await self.patch_for(d, obj)
        return None if patch is None else await self.write(patch)

    async def write(self, patch: Patch) -> dict[str, Any]:
        path, body, content_type = patch
        what = f"{self.name.split('.')[-1].replace('-', ' ')} {self.target}"
        return await self.api.write(
            lambda: self.api.client.patch(path, body, content_type, what=what), what)

    # ---------------------------------------------------------------- dry run, re-check

    def unchanged(self, d: DeploymentInfo) -> str:
        """Why :meth:`patch_for` found nothing to change."""
        return "the deployment is already in that state"

    def then(self) -> str:
        if self.follow:
            return (f"then: follow the rollout for up to {self.timeout:g} s (until it "
                    "completes or exceeds its progress deadline)")
        return "then: wait for the deployment controller to observe the change"

    async def planned(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[str]:
        patch = await self.patch_for(d, obj)
        if patch is None:
            return [f"nothing: {self.unchanged(d)}"]
        return [*patch_lines(patch), self.then()]

    async def would_change(self) -> list[str]:
        """The resource path and the exact patch body, from the deployment as it is now."""
        try:
            d, obj = await self.current()
        except KubeError as exc:
            return [f"cannot tell: reading {self.target} failed: {describe_api_error(exc)}"]
        try:
            return await self.planned(d, obj)
        except KubeActionError as exc:
            return [f"nothing: the change would be refused: {exc}"]
        except KubeError as exc:
            return [f"cannot tell: {exc}"]

    async def recheck(self) -> list[CheckResult]:
        """Right before the write: the deployment still exists (one GET), and the action's own
        critical conditions on it (:meth:`critical`)."""
        try:
            d, obj = await self.current()
        except KubeError as exc:
            detail = (f"deployment {self.target} not found"
                      if isinstance(exc, KubeApiError) and exc.not_found else str(exc))
            return [CheckResult.failed("deployment exists", detail)]
        return [CheckResult.passed("deployment exists",
                                   f"{d.ready}/{d.desired} ready, revision {d.revision}"),
                *await self.critical(d, obj)]

    async def critical(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[CheckResult]:
        return []

    def done_message(self, d: DeploymentInfo) -> str:
        return (f"rolled out: {d.available}/{d.desired} available, revision {d.revision}")

    async def execute(self) -> AsyncIterator[Step]:
        d, obj = await self.current()
        self.before, self.before_json = d, obj
        updated = await self.change(d, obj)
        if updated is None:
            self.after = d
            yield Step("nothing to change", 1.0)
            return
        self.target_generation = int((updated.get("metadata") or {}).get("generation") or 0)
        yield Step(self.changed_message(deployment_from_json(updated)), 0.05)
        if not self.follow:
            async for step in self.wait_observed():
                yield step
            return
        async for step in self.follow_rollout():
            yield step

    def changed_message(self, d: DeploymentInfo) -> str:
        return f"{self.name.split('.')[-1]} applied (generation {d.generation})"

    async def wait_observed(self) -> AsyncIterator[Step]:
        deadline = time.monotonic() + min(self.timeout, 60.0)
        while True:
            d, _ = await self.current()
            if d.observed_generation >= self.target_generation:
                self.after = d
                yield Step(f"observed by the deployment controller: "
                           f"{rollout_status(d).message}", 1.0)
                return
            if time.monotonic() > deadline:
                raise KubeActionError(
                    f"the deployment controller did not observe generation "
                    f"{self.target_generation} within {min(self.timeout, 60.0):g} s "
                    "(is kube-controller-manager running?)")
            await asyncio.sleep(FOLLOW_INTERVAL)

    async def follow_rollout(self) -> AsyncIterator[Step]:
        started = time.monotonic()
        last = ""
        last_shown = 0.0
        while True:
            d, _ = await self.current()
            self.after = d
            if d.observed_generation < self.target_generation:
                message = "waiting for the deployment controller to observe the change"
            else:
                rollout = rollout_status(d)
                if rollout.state is RolloutState.COMPLETE:
                    yield Step(self.done_message(d), 1.0)
                    return
                if rollout.state is RolloutState.FAILED:
                    raise RolloutFailed(
                        f"rollout of {self.target} failed: {rollout.message} "
                        f"({d.updated}/{d.desired} updated, {d.available} available); "
                        f"undo with: sfops k8s undo {self.deployment} -n {self.namespace}")
                if rollout.state is RolloutState.PAUSED:
                    yield Step(f"deployment is paused: {d.updated}/{d.desired} updated; "
                               "resume to continue", 1.0)
                    return
                message = (f"{rollout.message} ({d.updated}/{d.desired} updated, "
                           f"{d.available} available)")
            elapsed = time.monotonic() - started
            if message != last or elapsed - last_shown >= 10:
                yield Step(f"{message} [{elapsed:.0f} s]", _fraction(d))
                last, last_shown = message, elapsed
            if elapsed > self.timeout:
                raise KubeActionError(
                    f"rollout of {self.target} not finished after {self.timeout:g} s: {message}; "
                    f"undo with: sfops k8s undo {self.deployment} -n {self.namespace}")
            await asyncio.sleep(FOLLOW_INTERVAL)

    # ---------------------------------------------------------------- verify

    async def verify(self) -> list[CheckResult]:
        d, _ = await self.current()
        self.after = d
        rollout = rollout_status(d)
        if not self.follow:
            return [self.verify_state(d)]
        checks = [self.verify_state(d)]
        if rollout.state is RolloutState.COMPLETE:
            checks.append(CheckResult.passed(
                "rollout complete", f"{d.available}/{d.desired} available, revision {d.revision}"))
        elif rollout.state is RolloutState.PAUSED:
            checks.append(CheckResult.warned("rollout complete", "paused"))
        else:
            checks.append(CheckResult.failed("rollout complete", rollout.message))
        return checks

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        return CheckResult.passed("deployment updated", f"generation {d.generation}")


class RestartDeployment(DeploymentAction):
    """``kubectl rollout restart``: a new restartedAt annotation on the pod template."""

    name = "k8s.restart"

    def describe(self) -> str:
        return f"Restart deployment {self.target} (rolling, as kubectl rollout restart)"

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        if d.paused:
            return [CheckResult.failed("not paused",
                                       "deployment is paused: resume it first (sfops k8s resume)")]
        return [CheckResult.passed("not paused")]

    async def critical(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[CheckResult]:
        return await self.specific_checks(d, obj)

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch:
        if d.paused:
            raise KubeActionError(f"{self.target} is paused: resume it first")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now}}}}}
        return self.path, body, STRATEGIC_PATCH

    async def change(self, d: DeploymentInfo, obj: dict[str, Any]) -> dict[str, Any] | None:
        patch = await self.patch_for(d, obj)
        self.params["restarted_at"] = patch[1]["spec"]["template"]["metadata"]["annotations"][
            RESTARTED_AT_ANNOTATION]
        return await self.write(patch)

    async def planned(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[str]:
        lines = await super().planned(d, obj)
        return [*lines[:2], f"({RESTARTED_AT_ANNOTATION}: the time of the change; revision "
                f"{d.revision} → a new one with the same template)", *lines[2:]]

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        before = self.before.revision if self.before else None
        if before is not None and d.revision is not None and d.revision > before:
            return CheckResult.passed("new revision", f"revision {before} → {d.revision}")
        return CheckResult.failed("new revision", f"revision still {d.revision}")


class SetImage(DeploymentAction):
    name = "k8s.set-image"

    def __init__(self, client: KubeClient, namespace: str, deployment: str, container: str,
                 image: str, **kwargs: Any) -> None:
        super().__init__(client, namespace, deployment,
                         params={"container": container, "image": image}, **kwargs)
        self.container = container
        self.image = image

    def describe(self) -> str:
        return f"Set image of {self.target} container {self.container} to {self.image}"

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        checks: list[CheckResult] = []
        problem = image_reference_problem(self.image)
        checks.append(CheckResult.failed("image reference", f"{self.image!r}: {problem}")
                      if problem else CheckResult.passed("image reference", self.image))
        images = dict(d.images)
        if self.container not in images:
            checks.append(CheckResult.failed(
                "container exists",
                f"no container {self.container!r}; containers: {', '.join(images) or 'none'}"))
        elif images[self.container] == self.image:
            checks.append(CheckResult.warned("container exists",
                                             f"{self.container} already runs {self.image}"))
        else:
            checks.append(CheckResult.passed(
                "container exists", f"{self.container}: {images[self.container]} → {self.image}"))
        if d.paused:
            checks.append(CheckResult.warned("not paused",
                                             "paused: the new image rolls out only on resume"))
        return checks

    async def critical(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[CheckResult]:
        images = dict(d.images)
        if self.container not in images:
            return [CheckResult.failed("container exists",
                                       f"no container {self.container!r}; containers: "
                                       f"{', '.join(images) or 'none'}")]
        return [CheckResult.passed("container exists",
                                   f"{self.container}: {images[self.container]}")]

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        problem = image_reference_problem(self.image)
        if problem:
            raise KubeActionError(f"invalid image reference {self.image!r}: {problem}")
        images = dict(d.images)
        if self.container not in images:
            raise KubeActionError(f"{self.target} has no container {self.container!r}")
        if images[self.container] == self.image:
            return None
        body = {"spec": {"template": {"spec": {"containers": [
            {"name": self.container, "image": self.image}]}}}}
        return self.path, body, STRATEGIC_PATCH

    def unchanged(self, d: DeploymentInfo) -> str:
        return f"{self.container} already runs {self.image}"

    async def planned(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[str]:
        lines = await super().planned(d, obj)
        if len(lines) == 1:
            return lines
        note = f"container {self.container}: {dict(d.images)[self.container]} → {self.image}"
        if d.paused:
            note += " (paused: it rolls out only on resume)"
        return [note, *lines]

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        image = dict(d.images).get(self.container)
        if image == self.image:
            return CheckResult.passed("image set", f"{self.container}={image}")
        return CheckResult.failed("image set", f"{self.container}={image}")


class PauseDeployment(DeploymentAction):
    name = "k8s.pause"
    follow = False

    def describe(self) -> str:
        return f"Pause rollouts of {self.target}"

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        return [CheckResult.warned("not paused", "already paused") if d.paused
                else CheckResult.passed("not paused")]

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        if d.paused:
            return None
        return self.path, {"spec": {"paused": True}}, MERGE_PATCH

    def unchanged(self, d: DeploymentInfo) -> str:
        return f"{self.target} is already paused"

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        return (CheckResult.passed("paused") if d.paused
                else CheckResult.failed("paused", "spec.paused is false"))


class ResumeDeployment(DeploymentAction):
    name = "k8s.resume"

    def describe(self) -> str:
        return f"Resume rollouts of {self.target}"

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        return [CheckResult.passed("paused") if d.paused
                else CheckResult.warned("paused", "not paused: nothing to resume")]

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        if not d.paused:
            return None
        return self.path, {"spec": {"paused": False}}, MERGE_PATCH

    def unchanged(self, d: DeploymentInfo) -> str:
        return f"{self.target} is not paused"

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        return (CheckResult.failed("resumed", "still paused") if d.paused
                else CheckResult.passed("resumed"))


class ScaleDeployment(DeploymentAction):
    """``kubectl scale``: the scale subresource. ``replicas`` is the count to set; without
    it (``sfops k8s scale-up|scale-down``) the preflight reads the live count and fixes
    ``replicas`` at that count + ``step``, so what the operator confirms is what is written."""

    name = "k8s.scale"
    subresource = "scale"

    def __init__(self, client: KubeClient, namespace: str, deployment: str,
                 replicas: int | None, *, step: int = 0, **kwargs: Any) -> None:
        if replicas is None and step == 0:
            raise ValueError("scale: give replicas or a step")
        params: dict[str, Any] = {"replicas": replicas}
        if replicas is None:
            params["step"] = step
        super().__init__(client, namespace, deployment, params=params, **kwargs)
        self.replicas = replicas
        self.step = step

    def describe(self) -> str:
        if self.replicas is None:
            return (f"Scale {self.target} by {self.step:+d} "
                    f"replica{'s' if abs(self.step) != 1 else ''} (from its live count)")
        return f"Scale {self.target} to {self.replicas} replicas"

    def wanted(self, d: DeploymentInfo) -> int:
        return d.desired + self.step if self.replicas is None else self.replicas

    def _fix(self, d: DeploymentInfo) -> int:
        """Pin a relative scale to a count (once: at the preflight, or at the change)."""
        if self.replicas is None:
            self.replicas = self.wanted(d)
            self.params["replicas"] = self.replicas
        return self.replicas

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        if self.wanted(d) < 0:
            return [CheckResult.failed("replicas", f"must be >= 0 (now {d.desired})")]
        replicas = self._fix(d)
        if replicas == d.desired:
            return [CheckResult.warned("replicas", f"already {d.desired}")]
        if replicas == 0:
            return [CheckResult.warned("replicas", f"{d.desired} → 0: the service stops")]
        return [CheckResult.passed("replicas", f"{d.desired} → {replicas}")]

    async def critical(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[CheckResult]:
        seen = self.before.desired if self.before is not None else None
        if seen is not None and d.desired != seen:
            return [CheckResult.warned("replicas unchanged",
                                       f"now {d.desired} (was {seen} at the preflight); "
                                       f"will set {self.wanted(d)}")]
        return [CheckResult.passed("replicas unchanged", str(d.desired))]

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        replicas = self.wanted(d)
        if replicas < 0:
            raise KubeActionError("replicas must be >= 0")
        if replicas == d.desired:
            return None
        return self.path + "/scale", {"spec": {"replicas": replicas}}, MERGE_PATCH

    async def change(self, d: DeploymentInfo, obj: dict[str, Any]) -> dict[str, Any] | None:
        if self.wanted(d) < 0:
            raise KubeActionError("replicas must be >= 0")
        self._fix(d)
        if await super().change(d, obj) is None:
            return None
        # The Scale answer has no Deployment generation; read it back (a read: retried).
        return await self.fetch()

    def unchanged(self, d: DeploymentInfo) -> str:
        return f"{self.target} already has {d.desired} replicas"

    async def planned(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[str]:
        lines = await super().planned(d, obj)
        if len(lines) == 1:
            return lines
        return [f"replicas {d.desired} → {self.wanted(d)}", *lines]

    def changed_message(self, d: DeploymentInfo) -> str:
        before = self.before.desired if self.before else "?"
        return f"replicas {before} → {d.desired}"

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        if d.desired == self.replicas:
            return CheckResult.passed("replicas", f"{d.available}/{d.desired} available")
        return CheckResult.failed("replicas", f"spec.replicas is {d.desired}")


def _revision_of(rs: Mapping[str, Any]) -> int:
    return int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION, 0))


def _images_of(template: Mapping[str, Any]) -> str:
    return ", ".join(f"{c.get('name')}={c.get('image')}"
                     for c in (template.get("spec") or {}).get("containers") or ())


class UndoDeployment(DeploymentAction):
    """``kubectl rollout undo``: copy an older ReplicaSet's pod template into the Deployment
    (there is no rollback endpoint). The controller then scales that ReplicaSet back up and
    gives it the next revision number."""

    name = "k8s.undo"

    def __init__(self, client: KubeClient, namespace: str, deployment: str,
                 to_revision: int | None = None, **kwargs: Any) -> None:
        super().__init__(client, namespace, deployment,
                         params={"to_revision": to_revision}, **kwargs)
        self.to_revision = to_revision
        self.chosen_revision: int | None = None

    def describe(self) -> str:
        to = f"revision {self.to_revision}" if self.to_revision else "the previous revision"
        return f"Undo the rollout of {self.target} to {to}"

    async def replicasets(self, d: DeploymentInfo) -> list[dict[str, Any]]:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/replicasets"
        selector = ",".join(f"{k}={v}" for k, v in d.selector.match_labels)
        what = f"list replicasets of {self.target}"
        answer = await self.api.read(
            lambda: self.api.client.get(path, {"labelSelector": selector} if selector else None,
                                        what=what), what)
        owned = []
        for rs in answer.get("items") or ():
            refs = (rs.get("metadata") or {}).get("ownerReferences") or ()
            if any(r.get("uid") == d.uid and r.get("controller") for r in refs):
                owned.append(rs)
        return owned

    def choose(self, d: DeploymentInfo, owned: list[dict[str, Any]]) -> dict[str, Any]:
        by_revision: dict[int, dict[str, Any]] = {}
        for rs in owned:
            value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
            if value is not None and str(value).isdigit():
                by_revision[int(value)] = rs
        available = ", ".join(str(r) for r in sorted(by_revision)) or "none"
        if self.to_revision:
            if self.to_revision not in by_revision:
                raise KubeActionError(f"{self.target} has no revision {self.to_revision} "
                                      f"(revisions kept: {available})")
            return by_revision[self.to_revision]
        current = d.revision or max(by_revision, default=0)
        older = [r for r in by_revision if r < current]
        if not older:
            raise KubeActionError(f"{self.target} has no previous revision to undo to "
                                  f"(revisions kept: {available})")
        return by_revision[max(older)]

    @staticmethod
    def template_of(rs: Mapping[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        labels = (template.get("metadata") or {}).get("labels") or {}
        labels.pop(POD_TEMPLATE_HASH, None)
        return template

    async def pick(self, d: DeploymentInfo) -> dict[str, Any]:
        """The ReplicaSet whose template goes back (one LIST)."""
        return self.choose(d, await self.replicasets(d))

    async def specific_checks(self, d: DeploymentInfo, obj: dict[str, Any]
                              ) -> list[CheckResult]:
        checks: list[CheckResult] = []
        if d.paused:
            checks.append(CheckResult.failed(
                "not paused", "cannot undo a paused deployment: resume it first"))
        try:
            chosen = await self.pick(d)
        except KubeActionError as exc:
            return [*checks, CheckResult.failed("revision", str(exc))]
        revision = _revision_of(chosen)
        images = _images_of((chosen.get("spec") or {}).get("template") or {})
        if self.template_of(chosen) == (obj.get("spec") or {}).get("template"):
            checks.append(CheckResult.warned(
                "revision", f"revision {revision} ({images}) is what runs now: nothing to do"))
        else:
            checks.append(CheckResult.passed(
                "revision", f"revision {d.revision} → template of revision {revision}: {images}"))
        return checks

    async def critical(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[CheckResult]:
        """The revision to go back to is still kept (a rollout meanwhile may have pruned it
        past revisionHistoryLimit), and the deployment is not paused."""
        checks: list[CheckResult] = []
        if d.paused:
            checks.append(CheckResult.failed("not paused", "paused meanwhile: resume it first"))
        try:
            chosen = await self.pick(d)
        except KubeActionError as exc:
            return [*checks, CheckResult.failed("revision", str(exc))]
        return [*checks, CheckResult.passed("revision",
                                            f"revision {_revision_of(chosen)} still kept")]

    def template_patch(self, chosen: Mapping[str, Any], obj: dict[str, Any]) -> Patch | None:
        template = self.template_of(chosen)
        if template == (obj.get("spec") or {}).get("template"):
            return None
        return self.path, [{"op": "replace", "path": "/spec/template", "value": template}], \
            JSON_PATCH

    async def patch_for(self, d: DeploymentInfo, obj: dict[str, Any]) -> Patch | None:
        if d.paused:
            raise KubeActionError(f"{self.target} is paused: resume it first")
        return self.template_patch(await self.pick(d), obj)

    async def change(self, d: DeploymentInfo, obj: dict[str, Any]) -> dict[str, Any] | None:
        if d.paused:
            raise KubeActionError(f"{self.target} is paused: resume it first")
        chosen = await self.pick(d)
        self.chosen_revision = _revision_of(chosen)
        self.params["chosen_revision"] = self.chosen_revision
        patch = self.template_patch(chosen, obj)
        return None if patch is None else await self.write(patch)

    def unchanged(self, d: DeploymentInfo) -> str:
        return "the chosen revision's template is what runs now"

    async def planned(self, d: DeploymentInfo, obj: dict[str, Any]) -> list[str]:
        """The revision it goes back to, the template change it copies (a diff), the patch."""
        if d.paused:
            raise KubeActionError(f"{self.target} is paused: resume it first")
        chosen = await self.pick(d)
        patch = self.template_patch(chosen, obj)
        revision = _revision_of(chosen)
        if patch is None:
            return [f"nothing: revision {revision}'s template is what runs now"]
        now = (obj.get("spec") or {}).get("template") or {}
        after = self.template_of(chosen)
        diff = difflib.unified_diff(
            json.dumps(now, indent=2, sort_keys=True).splitlines(),
            json.dumps(after, indent=2, sort_keys=True).splitlines(),
            f"pod template now (revision {d.revision})",
            f"pod template of revision {revision}", lineterm="", n=1)
        return [f"revision {d.revision} → the template of revision {revision} "
                f"({_images_of(after)}), which the controller gives the next revision number",
                *diff, *patch_lines(patch), self.then()]

    def changed_message(self, d: DeploymentInfo) -> str:
        return (f"template of revision {self.chosen_revision} restored "
                f"(generation {d.generation})")

    def verify_state(self, d: DeploymentInfo) -> CheckResult:
        return CheckResult.passed("template restored", f"now revision {d.revision}: "
                                  + ", ".join(f"{c}={i}" for c, i in d.images))


DEPLOYMENT_ACTIONS: tuple[type[DeploymentAction], ...] = (
    RestartDeployment, SetImage, UndoDeployment, PauseDeployment, ResumeDeployment,
    ScaleDeployment,
)

__all__ = [
    "DEFAULT_ROLLOUT_TIMEOUT",
    "DEPLOYMENT_ACTIONS",
    "DeploymentAction",
    "PauseDeployment",
    "RestartDeployment",
    "ResumeDeployment",
    "RolloutFailed",
    "ScaleDeployment",
    "SetImage",
    "UndoDeployment",
    "describe_api_error",
]
