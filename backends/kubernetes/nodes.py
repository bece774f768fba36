"""Node actions: cordon, uncordon, drain.

Drain is cordon, then the Eviction API for every pod on the node except DaemonSet and mirror
pods, one pod at a time: evict, wait until it is gone, next. An eviction refused with 429 means
a PodDisruptionBudget allows no disruption right now; nothing happened, so asking again is safe
(that is the one "write" we repeat, as kubectl does) — with backoff, naming the budget, until
the overall timeout (default 300 s, not k9s's 5 s).

``--dry-run`` (:meth:`~NodeAction.would_change`) shows the exact ``spec.unschedulable`` patch
and, for a drain, the pods it would evict and the ones it would skip and why. An action borrows
its client (the CLI's or the TUI's shared one): it holds nothing of its own to close.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backends.actions import Action, CheckResult, Step, WorstCase
from backends.kubernetes.access import Api, KubeActionError, Permission, node_path
from backends.kubernetes.client import MERGE_PATCH, KubeApiError, KubeClient, KubeError
from backends.kubernetes.contract import DEFAULT_DRAIN_TIMEOUT
from backends.kubernetes.objects import (
    DRAIN_ANNOTATION,
    BudgetInfo,
    NodeInfo,
    PodInfo,
    budget_from_json,
    node_from_json,
    pod_from_json,
)
from backends.locks import LockKey, key_name
from backends.resilience import CircuitBreaker
from backends.topology.blast import cross_layer, node_drain
from backends.topology.config import topology_of

EVICTION_BACKOFF = (1.0, 2.0, 4.0, 5.0)  # then every 5 s
DELETE_POLL = 0.5
LIST_SHOWN = 20


@dataclass(frozen=True)
class DrainPlan:
    evict: tuple[PodInfo, ...]
    skipped: tuple[tuple[PodInfo, str], ...]  # (pod, why)
    unmanaged: tuple[PodInfo, ...]  # bare pods: evicted and never recreated
    budgets: tuple[BudgetInfo, ...]  # budgets covering pods to evict

    def blocking(self) -> list[tuple[BudgetInfo, list[PodInfo]]]:
        """Budgets that will make evictions wait: allowing fewer disruptions right now than
        pods of theirs on this node."""
        out = []
        for budget in self.budgets:
            covered = [p for p in self.evict if budget.covers(p)]
            if covered and budget.disruptions_allowed < len(covered):
                out.append((budget, covered))
        return out


def plan_drain(pods: Sequence[PodInfo], budgets: Sequence[BudgetInfo]) -> DrainPlan:
    """Which pods a drain evicts and which it leaves (pure: unit-tested)."""
    evict: list[PodInfo] = []
    skipped: list[tuple[PodInfo, str]] = []
    unmanaged: list[PodInfo] = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.owner_kind == "DaemonSet":
            skipped.append((pod, "DaemonSet"))
        elif pod.mirror:
            skipped.append((pod, "mirror pod"))
        elif pod.deleting:
            skipped.append((pod, "already terminating"))
        else:
            evict.append(pod)
            if not pod.owner_kind:
                unmanaged.append(pod)
    relevant = tuple(b for b in budgets if any(b.covers(p) for p in evict))
    return DrainPlan(tuple(evict), tuple(skipped), tuple(unmanaged), relevant)


def _names(pods: Sequence[PodInfo]) -> str:
    names = [p.key for p in pods[:LIST_SHOWN]]
    if len(pods) > LIST_SHOWN:
        names.append(f"… and {len(pods) - LIST_SHOWN} more")
    return ", ".join(names) or "none"


class NodeAction(Action):
    def __init__(self, client: KubeClient, node: str, *, breaker: CircuitBreaker | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(node, {"node": node, **(params or {})})
        self.api = Api(client, breaker)
        self.node = node
        self.before: NodeInfo | None = None

    def locks(self) -> list[LockKey]:
        return [LockKey(key_name("k8s-node", self.node), f"node {self.node}")]

    async def fetch(self) -> NodeInfo:
        return node_from_json(await self.api.get(node_path(self.node), f"get node {self.node}"))

    async def base_checks(self, extra: Sequence[Permission] = ()) -> list[CheckResult] | None:
        """RBAC and existence; returns the checks, or None-terminated failure list."""
        try:
            checks = [await self.api.rbac_check(
                [Permission("patch", "nodes", name=self.node), *extra])]
        except KubeError as exc:
            return [CheckResult.failed("API server", str(exc))]
        try:
            self.before = await self.fetch()
        except KubeError as exc:
            detail = (f"node {self.node} not found"
                      if isinstance(exc, KubeApiError) and exc.not_found else str(exc))
            return [*checks, CheckResult.failed("node exists", detail)]
        state = "Ready" if self.before.ready else "NotReady"
        if self.before.unschedulable:
            state += ", cordoned"
        checks.append(CheckResult.passed("node exists", state))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """Cordon, uncordon: re-check, the patch, verify."""
        read, write = self.api.read_bound(), self.api.write_bound()
        return WorstCase((("re-check", read), ("patch", write), ("verify", read)),
                         self.api.bound_note())

    def unschedulable_body(self, value: bool, *, drain_mark: bool | None = None
                           ) -> dict[str, Any]:
        """The merge patch of ``spec.unschedulable`` (and of our drain-started mark)."""
        body: dict[str, Any] = {"spec": {"unschedulable": value or None}}
        if drain_mark is not None:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if drain_mark else None
            body["metadata"] = {"annotations": {DRAIN_ANNOTATION: stamp}}
        return body

    def patch_lines(self, body: dict[str, Any]) -> list[str]:
        return [f"PATCH {node_path(self.node)} (merge patch)", json.dumps(body)]

    async def recheck(self) -> list[CheckResult]:
        """Right before the change: the node still exists (one GET)."""
        try:
            node = await self.fetch()
        except KubeError as exc:
            detail = (f"node {self.node} not found"
                      if isinstance(exc, KubeApiError) and exc.not_found else str(exc))
            return [CheckResult.failed("node exists", detail)]
        return [CheckResult.passed("node exists",
                                   "cordoned" if node.unschedulable else "schedulable")]

    async def would_change(self) -> list[str]:
        try:
            node = await self.fetch()
        except KubeError as exc:
            detail = ("not found" if isinstance(exc, KubeApiError) and exc.not_found
                      else str(exc))
            return [f"cannot tell: reading node {self.node} failed: {detail}"]
        try:
            return await self.planned(node)
        except KubeError as exc:
            return [f"cannot tell: {exc}"]

    async def planned(self, node: NodeInfo) -> list[str]:
        raise NotImplementedError

    async def set_unschedulable(self, value: bool, *, drain_mark: bool | None = None
                                ) -> NodeInfo:
        body = self.unschedulable_body(value, drain_mark=drain_mark)
        what = f"{'cordon' if value else 'uncordon'} node {self.node}"
        answer = await self.api.write(
            lambda: self.api.client.patch(node_path(self.node), body, MERGE_PATCH, what=what),
            what)
        return node_from_json(answer)


class CordonNode(NodeAction):
    name = "k8s.cordon"

    def describe(self) -> str:
        return f"Cordon node {self.node} (no new pods scheduled; running pods stay)"

    async def preflight(self) -> list[CheckResult]:
        checks = await self.base_checks()
        if self.before is not None and self.before.unschedulable:
            checks = [*(checks or []), CheckResult.warned("schedulable", "already cordoned")]
        return checks or []

    async def planned(self, node: NodeInfo) -> list[str]:
        if node.unschedulable:
            return [f"nothing: node {self.node} is already cordoned (the patch changes nothing)"]
        return ["spec.unschedulable: false → true (running pods stay)",
                *self.patch_lines(self.unschedulable_body(True))]

    async def execute(self) -> AsyncIterator[Step]:
        await self.set_unschedulable(True)
        yield Step(f"node {self.node} cordoned", 1.0)

    async def verify(self) -> list[CheckResult]:
        node = await self.fetch()
        return [CheckResult.passed("cordoned") if node.unschedulable
                else CheckResult.failed("cordoned", "spec.unschedulable is false")]


class UncordonNode(NodeAction):
    name = "k8s.uncordon"

    def describe(self) -> str:
        return f"Uncordon node {self.node} (schedulable again)"

    async def preflight(self) -> list[CheckResult]:
        checks = await self.base_checks()
        if self.before is not None and not self.before.unschedulable:
            checks = [*(checks or []), CheckResult.warned("cordoned", "not cordoned")]
        return checks or []

    async def planned(self, node: NodeInfo) -> list[str]:
        if not node.unschedulable and node.drain_started is None:
            return [f"nothing: node {self.node} is schedulable (the patch changes nothing)"]
        lines: list[str] = []
        if node.unschedulable:
            lines.append("spec.unschedulable: true → unset (schedulable)")
        if node.drain_started is not None:
            lines.append(f"remove the {DRAIN_ANNOTATION} annotation")
        return [*lines, *self.patch_lines(self.unschedulable_body(False, drain_mark=False))]

    async def execute(self) -> AsyncIterator[Step]:
        await self.set_unschedulable(False, drain_mark=False)
        yield Step(f"node {self.node} schedulable", 1.0)

    async def verify(self) -> list[CheckResult]:
        node = await self.fetch()
        return [CheckResult.failed("schedulable", "still cordoned") if node.unschedulable
                else CheckResult.passed("schedulable")]


class DrainNode(NodeAction):
    name = "k8s.drain"
    destructive = True

    def __init__(self, client: KubeClient, node: str, *, timeout: float = DEFAULT_DRAIN_TIMEOUT,
                 grace_period: int | None = None, breaker: CircuitBreaker | None = None,
                 sleep: Any = asyncio.sleep) -> None:
        super().__init__(client, node, breaker=breaker,
                         params={"timeout": timeout, "grace_period": grace_period})
        self.timeout = timeout
        self.grace_period = grace_period
        self.plan: DrainPlan | None = None
        self.waited_429 = 0
        self.evicted: list[str] = []
        self._sleep = sleep

    def describe(self) -> str:
        return (f"Drain node {self.node}: cordon, then evict its pods one at a time honouring "
                f"PodDisruptionBudgets (timeout {self.timeout:g} s)")

    async def load_plan(self) -> DrainPlan:
        what = f"list pods on {self.node}"
        pods = await self.api.read(lambda: self.api.client.get(
            "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}, what=what), what)
        pod_infos = [pod_from_json(p) for p in pods.get("items") or ()]
        budgets: list[BudgetInfo] = []
        for namespace in sorted({p.namespace for p in pod_infos}):
            budgets += await self._budgets(namespace)
        self.plan = plan_drain(pod_infos, budgets)
        return self.plan

    async def preflight(self) -> list[CheckResult]:
        checks = await self.base_checks()
        if checks is None or any(c.status.value == "fail" for c in checks):
            return checks or []
        try:
            plan = await self.load_plan()
        except KubeError as exc:
            return [*checks, CheckResult.failed("pods on node", str(exc))]
        namespaces = sorted({p.namespace for p in plan.evict})
        if namespaces:
            try:
                checks.append(await self.api.rbac_check(
                    [Permission("create", "pods", namespace=ns, subresource="eviction")
                     for ns in namespaces]))
            except KubeError as exc:
                return [*checks, CheckResult.failed("API server", str(exc))]
        checks.append(CheckResult.passed(f"will evict {len(plan.evict)} pods",
                                         _names(plan.evict)))
        if plan.skipped:
            checks.append(CheckResult.passed(
                f"will skip {len(plan.skipped)} pods",
                ", ".join(f"{p.key} ({why})" for p, why in plan.skipped[:LIST_SHOWN])))
        if plan.unmanaged:
            checks.append(CheckResult.warned(
                "unmanaged pods", f"not recreated after eviction: {_names(plan.unmanaged)}"))
        blocking = plan.blocking()
        for budget in plan.budgets:
            covered = [p for p in plan.evict if budget.covers(p)]
            detail = (f"{budget.spec_text}; allows {budget.disruptions_allowed} now "
                      f"({budget.current_healthy}/{budget.expected_pods} healthy); "
                      f"{len(covered)} of its pods here")
            if budget.disruptions_allowed == 0:
                checks.append(CheckResult.warned(
                    f"budget {budget.key} blocks",
                    f"{detail}: evictions of {_names(covered)} will wait until it allows one"))
            elif any(b is budget for b, _ in blocking):
                checks.append(CheckResult.warned(
                    f"budget {budget.key}", f"{detail}: evictions will wait in turn"))
            else:
                checks.append(CheckResult.passed(f"budget {budget.key}", detail))
        checks += await self._blast_radius(plan)
        return checks

    async def _blast_radius(self, plan: DrainPlan) -> list[CheckResult]:
        """The API members whose pods it evicts (and their nginx members), the PostgreSQL
        members and Kafka brokers ``[topology.placement]`` puts on the node."""
        if self.layers is None:
            return []
        placed = topology_of(self.layers.config).placement
        on_node = {key for key, node in placed.items() if node == self.node}
        needed = ["kubernetes", "nginx"]
        if any(not key.startswith("broker-") for key in on_node):
            needed.append("postgres")
        if any(key.startswith("broker-") for key in on_node):
            needed.append("kafka")
        evicted = {p.key for p in plan.evict}
        return await cross_layer(self.layers, needed,
                                 lambda topology: node_drain(topology, self.node, evicted))

    async def planned(self, node: NodeInfo) -> list[str]:
        """The cordon patch, then every pod it would evict (in order) and every one it
        would skip and why, from the pods on the node now."""
        plan = await self.load_plan()
        lines = ["cordon: spec.unschedulable → true"
                 + (" (already)" if node.unschedulable else "")
                 + f", {DRAIN_ANNOTATION} set",
                 *self.patch_lines(self.unschedulable_body(True, drain_mark=True))]
        lines.append(f"evict {len(plan.evict)} pods, one at a time (Eviction API; waits while "
                     f"a PodDisruptionBudget allows none, up to {self.timeout:g} s in all"
                     + (f"; grace period {self.grace_period} s" if self.grace_period is not None
                        else "") + "):")
        unmanaged = {p.key for p in plan.unmanaged}
        for pod in plan.evict:
            note = " (no controller: not recreated)" if pod.key in unmanaged else ""
            lines.append(f"  evict {pod.key}{note}")
        lines.append(f"skip {len(plan.skipped)} pods" + (":" if plan.skipped else ""))
        lines += [f"  skip {pod.key} ({why})" for pod, why in plan.skipped]
        for budget, covered in plan.blocking():
            lines.append(f"budget {budget.key} ({budget.spec_text}) allows "
                         f"{budget.disruptions_allowed} now for {len(covered)} of these pods: "
                         "evictions will wait in turn")
        lines.append(f"then: remove the {DRAIN_ANNOTATION} annotation; the node stays cordoned")
        return lines

    async def execute(self) -> AsyncIterator[Step]:
        deadline = time.monotonic() + self.timeout
        await self.set_unschedulable(True, drain_mark=True)
        try:
            yield Step(f"node {self.node} cordoned", 0.02)
            plan = await self.load_plan()
            total = len(plan.evict)
            if plan.skipped:
                yield Step(f"skipping {len(plan.skipped)}: "
                           + ", ".join(f"{p.key} ({why})" for p, why in plan.skipped), 0.03)
            for index, pod in enumerate(plan.evict):
                async for step in self.evict(pod, index, total, deadline):
                    yield step
            yield Step(f"node {self.node} drained: {total} pods evicted", 1.0)
        finally:
            # The mark says "a drain is running"; the node stays cordoned whatever happened.
            await asyncio.shield(self._clear_mark())

    def worst_case(self) -> WorstCase:
        """Re-check; the drain timeout (cordon, plan, evictions, waits); the step in flight
        at the deadline (an eviction and its budget reads, or a poll); the mark's removal;
        verify (the node, the pods on it and their budgets)."""
        read, write = self.api.read_bound(), self.api.write_bound()
        namespaces = len({p.namespace for p in self.plan.evict}) if self.plan else 1
        plan = read * (1 + max(1, namespaces))
        return WorstCase((
            ("re-check", read),
            ("drain timeout", self.timeout),
            ("step in flight at the deadline", max(write + 2 * read, DELETE_POLL + read)),
            ("unmark", write),
            ("verify", read + plan),
        ), self.api.bound_note())

    async def _clear_mark(self) -> None:
        try:
            body = {"metadata": {"annotations": {DRAIN_ANNOTATION: None}}}
            await self.api.client.patch(node_path(self.node), body, MERGE_PATCH,
                                        what=f"unmark node {self.node}")
        except KubeError:
            pass

    def _blocking_budget(self, pod: PodInfo, budgets: Sequence[BudgetInfo]) -> str:
        covering = [b for b in budgets if b.covers(pod)]
        if not covering:
            return "a PodDisruptionBudget"
        return ", ".join(f"PodDisruptionBudget {b.key} ({b.spec_text}, allows "
                         f"{b.disruptions_allowed})" for b in covering)

    async def _budgets(self, namespace: str) -> list[BudgetInfo]:
        path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
        what = f"list budgets in {namespace}"
        answer = await self.api.read(lambda: self.api.client.get(path, what=what), what)
        return [budget_from_json(b) for b in answer.get("items") or ()]

    async def evict(self, pod: PodInfo, index: int, total: int, deadline: float
                    ) -> AsyncIterator[Step]:
        base = 0.05 + 0.95 * index / max(total, 1)
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction"
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": pod.name, "namespace": pod.namespace}}
        if self.grace_period is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": self.grace_period}
        attempt = 0
        what = f"evict {pod.key}"
        while True:
            try:
                await self.api.write(
                    lambda: self.api.client.post(path, body, what=what), what)
            except KubeApiError as exc:
                if exc.not_found:
                    yield Step(f"[{index + 1}/{total}] {pod.key} already gone", base)
                    return
                if exc.status != 429:
                    raise KubeActionError(f"eviction of {pod.key} refused: {exc}") from exc
                self.waited_429 += 1
                delay = EVICTION_BACKOFF[min(attempt, len(EVICTION_BACKOFF) - 1)]
                attempt += 1
                if time.monotonic() + delay > deadline:
                    raise KubeActionError(
                        f"drain of {self.node} timed out after {self.timeout:g} s waiting to "
                        f"evict {pod.key}: blocked by "
                        f"{self._blocking_budget(pod, await self._budgets(pod.namespace))}; "
                        f"evicted so far: {', '.join(self.evicted) or 'none'}; "
                        "the node stays cordoned") from exc
                budgets = await self._budgets(pod.namespace)
                yield Step(f"[{index + 1}/{total}] {pod.key}: blocked by "
                           f"{self._blocking_budget(pod, budgets)} — retrying in {delay:g} s",
                           base)
                await self._sleep(delay)
                continue
            break
        yield Step(f"[{index + 1}/{total}] evicting {pod.key}", base)
        await self.wait_gone(pod, deadline)
        self.evicted.append(pod.key)
        yield Step(f"[{index + 1}/{total}] {pod.key} evicted", 0.05 + 0.95 * (index + 1) / total)

    async def wait_gone(self, pod: PodInfo, deadline: float) -> None:
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}"
        while True:
            try:
                current = await self.api.get(path, f"get pod {pod.key}")
            except KubeApiError as exc:
                if exc.not_found:
                    return
                raise
            if (current.get("metadata") or {}).get("uid") != pod.uid:
                return  # a new pod with the same name (StatefulSet): ours is gone
            if time.monotonic() > deadline:
                raise KubeActionError(f"drain of {self.node} timed out after {self.timeout:g} s: "
                                      f"{pod.key} still terminating; the node stays cordoned")
            await self._sleep(DELETE_POLL)

    async def verify(self) -> list[CheckResult]:
        node = await self.fetch()
        checks = [CheckResult.passed("cordoned") if node.unschedulable
                  else CheckResult.failed("cordoned", "spec.unschedulable is false")]
        plan = await self.load_plan()
        if plan.evict:
            checks.append(CheckResult.failed("pods evicted",
                                             f"still on the node: {_names(plan.evict)}"))
        else:
            detail = f"{len(self.evicted)} evicted"
            if self.waited_429:
                detail += f", waited on a budget {self.waited_429} times"
            checks.append(CheckResult.passed("pods evicted", detail))
        return checks


NODE_ACTIONS: tuple[type[NodeAction], ...] = (CordonNode, UncordonNode, DrainNode)
