"""Shared pieces of the Kubernetes actions: RBAC preflight by SelfSubjectAccessReview, reads
with retries, writes exactly once, and image reference validation."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from backends.actions import CheckResult
from backends.kubernetes.client import DEFAULT_TIMEOUT, KubeApiError, KubeClient, KubeUnavailable
from backends.resilience import CircuitBreaker, RetryPolicy, call_read, call_write

T = TypeVar("T")

# Only a connection failure is worth another try: a 4xx answer will be the same next time.
READ_POLICY = RetryPolicy(attempts=3, initial_backoff=0.2, max_backoff=1.0, deadline=8.0,
                          retry_on=(KubeUnavailable,))
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


class KubeActionError(Exception):
    """An action cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    namespace: str | None = None
    subresource: str = ""
    name: str = ""

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            resource = f"{resource}.{self.group}"
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {resource}{where}"


class Api:
    """What an action needs: a client, a breaker and the two doors (read / write)."""

    def __init__(self, client: KubeClient, breaker: CircuitBreaker | None = None) -> None:
        self.client = client
        self.breaker = breaker

    def read_bound(self) -> float:
        """One read: its retries start within the policy's deadline, each request bounded
        by the client's total timeout."""
        return (READ_POLICY.deadline or 0.0) + self.write_bound()

    def write_bound(self) -> float:
        return float(getattr(self.client, "timeout", DEFAULT_TIMEOUT))

    def bound_note(self) -> str:
        return (f"an API read ≤ {self.read_bound():.0f} s (retries within "
                f"{READ_POLICY.deadline or 0:g} s), a write ≤ {self.write_bound():.0f} s")

    async def read(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        return await call_read(fn, READ_POLICY, what=what, breaker=self.breaker)

    async def write(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        return await call_write(fn, what=what, breaker=self.breaker)

    async def get(self, path: str, what: str) -> dict[str, Any]:
        return await self.read(lambda: self.client.get(path, what=what), what)

    async def allowed(self, permission: Permission) -> tuple[bool, str]:
        attributes: dict[str, str] = {"verb": permission.verb, "resource": permission.resource,
                                      "group": permission.group}
        if permission.namespace:
            attributes["namespace"] = permission.namespace
        if permission.subresource:
            attributes["subresource"] = permission.subresource
        if permission.name:
            attributes["name"] = permission.name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes}}
        # Creating a review changes nothing: it is a read and may be retried.
        answer = await self.read(lambda: self.client.post(SSAR_PATH, body, what="access review"),
                                 "access review")
        status = answer.get("status") or {}
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        return bool(status.get("allowed")), reason

    async def rbac_check(self, permissions: list[Permission]) -> CheckResult:
        """One check naming every missing permission (or the API error that stopped us)."""
        denied: list[str] = []
        for permission in permissions:
            ok, reason = await self.allowed(permission)
            if not ok:
                denied.append(permission.describe() + (f" ({reason})" if reason else ""))
        wanted = ", ".join(p.describe() for p in permissions)
        if denied:
            return CheckResult.failed("RBAC", "not allowed: " + "; ".join(denied))
        return CheckResult.passed("RBAC", f"allowed: {wanted}")


# ----------------------------------------------------------------- image references
# The distribution/reference grammar (what the API server and container runtimes accept).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")


def image_reference_problem(image: str) -> str | None:
    """Why ``image`` is not a valid image reference, or None when it is."""
    if not image:
        return "empty image reference"
    if image != image.strip() or any(c.isspace() for c in image):
        return "contains whitespace"
    match = _REFERENCE.match(image)
    if match is None:
        if any(c.isupper() for c in image.split("@")[0].rsplit(":", 1)[0].split("/", 1)[-1]):
            return "repository names must be lowercase"
        return "not of the form [registry/]repository[:tag][@digest]"
    if len(match["name"]) > 255:
        return "repository name longer than 255 characters"
    return None


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{name}"


def describe_api_error(exc: BaseException) -> str:
    if isinstance(exc, KubeApiError) and exc.not_found:
        return "not found"
    return str(exc)
