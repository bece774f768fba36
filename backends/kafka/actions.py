"""Kafka actions: preferred leader election, and drain/undrain of a broker (Cruise Control's
"demote": move the broker to the end of every replica list — no data moves — then a
preferred election takes leadership elsewhere).

A drain persists the original replica orders *before* changing anything; a failure anywhere
after that leaves a stated condition and the way back (``sfops kafka undrain N``). Writes
(reassignment, election) are never retried blindly: each is one request, and what we wait for
afterwards is read from fresh metadata.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from backends.actions import Action, CheckResult, CheckStatus, Step, WorstCase
from backends.kafka.model import (
    ClusterView,
    ElectionOutcome,
    OngoingReassignment,
    PartitionResult,
    PartitionState,
)
from backends.kafka.plan import (
    DrainRecord,
    PartitionKey,
    drain_blockers,
    drain_plan,
    load_record,
    names,
    now_iso,
    restore_plan,
    save_record,
    state_path,
)
from backends.kafka.worker import GRACE, KILL_MARGIN, METADATA_POLICY, STARTUP_ALLOWANCE
from backends.locks import LockKey, digest_of, key_name
from backends.resilience import call_read, describe_error
from backends.topology.blast import min_isr
from backends.topology.config import topology_of

REASSIGN_BATCH = 1000
REASSIGN_TIMEOUT = 60.0  # for the controller to finish the (metadata-only) reassignments
LEADERSHIP_TIMEOUT = 60.0
ISR_TIMEOUT = 90.0  # a restarted broker catching up before an undrain elects it
WAIT_INTERVAL = 0.5
VERIFY_TIMEOUT = 10.0
REASSIGN_REQUEST_TIMEOUT = 30.0  # one AlterPartitionReassignments request
REELECT_INTERVAL = 3.0
# Before the election that follows a drain's reassignment, a replica briefly out of the ISR
# (a follower catching up under load: seen on a quiet lab with 3,000 partitions) is waited
# for this long, re-reading every ISR_SETTLE_INTERVAL, before the re-check gives up. Only
# the ISR conditions are waited for: a broker gone or a cluster unreachable stops at once, and
# a forced drain (which goes past them anyway) does not wait.
ISR_SETTLE_SECONDS = 15.0
ISR_SETTLE_INTERVAL = 1.0
CHECK_REACHABLE = "cluster reachable"
CHECK_BROKER_UP = "broker still up"
# The re-checks a drain's re-read does not wait out (every other one is an ISR condition).
NOT_WAITED_FOR = (CHECK_BROKER_UP, CHECK_REACHABLE)
MAX_LISTED = 20


class KafkaActionError(Exception):
    pass


class ActionAdmin(Protocol):
    """What an action uses of its admin worker (:class:`~backends.kafka.worker.IsolatedAdmin`):
    metadata reads, the two writes, and closing it."""

    async def view(self) -> ClusterView: ...

    async def elect_preferred(
        self, partitions: Sequence[PartitionKey] | None) -> list[ElectionOutcome]: ...

    async def reassign(self, assignments: dict[PartitionKey, list[int]],
                       *, timeout: float = 30.0  # noqa: ASYNC109
                       ) -> list[PartitionResult]: ...

    async def ongoing_reassignments(
        self, partitions: Sequence[PartitionKey] | None = None
    ) -> list[OngoingReassignment]: ...

    async def close(self) -> None: ...


class AdminSource(Protocol):
    """What an action uses of :class:`~backends.kafka.service.KafkaService`: a fresh admin
    worker of its own (never the service's polling one, never the service itself — the TUI's
    service is shared and outlives every action)."""

    def action_admin(self) -> ActionAdmin: ...


def partition_keys(partitions: Sequence[PartitionState]) -> list[PartitionKey]:
    return [(p.topic, p.partition) for p in partitions]


def shown(replicas: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, replicas)) + "]"


async def _wait_until(check: Callable[[], Awaitable[bool]], timeout: float,  # noqa: ASYNC109
                      confirmations: int = 2) -> bool:
    """True once ``check`` held on ``confirmations`` consecutive reads. Metadata requests go
    to any broker and each applies the metadata log on its own, so one up-to-date answer may
    be followed by a slightly older one; two in a row make that unlikely."""
    deadline = time.monotonic() + timeout
    held = 0
    while True:
        held = held + 1 if await check() else 0
        if held >= confirmations:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(WAIT_INTERVAL if held == 0 else 0.1)


class _KafkaAction(Action):
    def __init__(self, service: AdminSource, target: str, params: dict[str, object]) -> None:
        super().__init__(target, params)
        self.service = service
        self.cluster_id: str | None = None
        self._admin: ActionAdmin | None = None
        self._closed = False
        # The preflight's metadata read: --dry-run's would_change shows the plan the
        # preflight judged, without reading the cluster again.
        self.seen: ClusterView | None = None

    @property
    def admin(self) -> ActionAdmin:
        """This action's own admin worker, started on first use: a fresh process, so a
        fresh AdminClient, never the service's long-lived polling one. Why: librdkafka
        crashed the process twice with one AdminClient kept across polls (a segfault after an
        undrain; an ``eonce->refcnt > 0`` assertion when a broker was killed mid-poll), and a
        long-lived client kept asking a killed "controller" broker until timeout. An action
        is short and runs while brokers move, restart or die, so it starts with no history;
        in its own process a crash fails this action (its reads retried once on a fresh
        worker, its writes never), not the UI, and the polls go on undisturbed. Its worker
        ends with :meth:`close` (the runner's ``finally``; the front ends' for an action
        refused at preflight or never confirmed); a closed action starts no new one."""
        if self._closed:
            raise KafkaActionError(f"{self.name} {self.target}: the action is closed")
        if self._admin is None:
            self._admin = self.service.action_admin()
        return self._admin

    async def identify(self) -> None:
        """The cluster's id (one metadata read, kept for the preflight): two operators'
        configurations may list different bootstrap brokers of one cluster, and the lock
        must be the same for both."""
        if self.cluster_id is None:
            self.seen = await self.view()

    def locks(self) -> list[LockKey]:
        """The cluster: a drain's reassignments, an undrain and an election all move the
        same partitions. Named by the cluster id once :meth:`identify` read it; by the
        bootstrap list only where it could not (a unit test's fake admin without an id)."""
        if self.cluster_id:
            name = key_name("kafka", digest=self.cluster_id)
            return [LockKey(name, f"Kafka cluster {self.cluster_id}")]
        config = getattr(self.service, "config", None)
        servers = str(getattr(config, "bootstrap_servers", "") or "")
        name = key_name("kafka", digest=digest_of([s.strip() for s in servers.split(",")]))
        return [LockKey(name, f"Kafka cluster ({servers or 'unknown'})")]

    async def close(self) -> None:
        """End this action's worker process, if it started one, now (not at garbage
        collection). Only the action's own worker: the service (shared with the TUI's polls)
        is never closed here. Idempotent."""
        self._closed = True
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    def _bounds(self) -> tuple[float, float, float, float]:
        """The longest metadata read (its retry within the policy's deadline), election,
        reassignment request and reassignment listing: the admin worker's budgets
        (:class:`~backends.kafka.worker.IsolatedAdmin`), the margin before a silent worker is
        killed, a fresh worker's start-up allowance."""
        timeout = float(getattr(getattr(self.service, "config", None), "request_timeout", 5.0))
        worker = KILL_MARGIN + STARTUP_ALLOWANCE
        view = (METADATA_POLICY.deadline or 0.0) + 3 * (timeout + GRACE) + worker
        elect = 2 * timeout + 2 * GRACE + worker
        setup = 2 * timeout + GRACE  # IsolatedAdmin.reassign_setup: kafka-python's start-up
        request = setup + REASSIGN_REQUEST_TIMEOUT + GRACE + worker
        listing = setup + timeout + GRACE + worker
        return view, elect, request, listing

    def _note(self) -> str:
        view, elect, request, _ = self._bounds()
        return (f"a metadata read ≤ {view:.0f} s, an election ≤ {elect:.0f} s, a reassignment "
                f"request ≤ {request:.0f} s, each including a fresh admin worker's start-up")

    def _reorder_bound(self, partitions: int) -> float:
        """Reassignment batches sent, their wait, the listing of the ones not done."""
        view, _, request, listing = self._bounds()
        batches = max(1, math.ceil(partitions / REASSIGN_BATCH))
        return view + batches * request + REASSIGN_TIMEOUT + view + listing

    async def verify(self) -> list[CheckResult]:
        # The last phase the runner calls: the worker is not needed after it.
        try:
            return await self._verify()
        finally:
            await self.close()

    async def _verify(self) -> list[CheckResult]:
        raise NotImplementedError

    async def view(self) -> ClusterView:
        # A read: retried once, which also covers a worker that crashed (the retry runs on
        # the fresh worker started in its place).
        view = await call_read(self.admin.view, METADATA_POLICY, what="kafka metadata")
        self.cluster_id = view.cluster_id
        return view

    async def partitions(self) -> list[PartitionState]:
        return (await self.view()).partitions()

    async def seen_view(self) -> ClusterView:
        """The preflight's read, else a fresh one."""
        if self.seen is None:
            self.seen = await self.view()
        return self.seen

    async def _read_checks(self) -> tuple[ClusterView | None, list[CheckResult]]:
        try:
            view = self.seen = await self.view()
        except Exception as exc:
            return None, [CheckResult.failed(CHECK_REACHABLE, describe_error(exc))]
        partitions = view.partitions()
        offline = [p.name for p in partitions if p.offline]
        checks = [CheckResult.passed(CHECK_REACHABLE,
                                     f"cluster {self.cluster_id}, {len(partitions)} partitions")]
        if offline:
            checks.append(CheckResult.failed(
                "no offline partitions", f"{len(offline)} offline: {', '.join(offline[:10])}"))
        else:
            checks.append(CheckResult.passed("no offline partitions"))
        return view, checks

    async def reassign(self, plan: dict[PartitionKey, list[int]]) -> AsyncIterator[Step]:
        """Send ``plan`` in batches, then wait until fresh metadata shows every new order."""
        keys = sorted(plan)
        for start in range(0, len(keys), REASSIGN_BATCH):
            batch = {k: plan[k] for k in keys[start:start + REASSIGN_BATCH]}
            results = await self.admin.reassign(batch, timeout=REASSIGN_REQUEST_TIMEOUT)
            failed = [r for r in results if not r.ok]
            if failed:
                raise KafkaActionError(
                    f"reassignment refused for {len(failed)} partition(s): "
                    + "; ".join(r.describe() for r in failed[:MAX_LISTED]))
            yield Step(f"reassignment accepted for {start + len(batch)}/{len(keys)} partitions")

        pending: list[PartitionKey] = keys

        async def applied() -> bool:
            nonlocal pending
            current = {(p.topic, p.partition): list(p.replicas)
                       for p in await self.partitions()}
            pending = [k for k in pending if current.get(k) != plan[k]]
            return not pending

        if not await _wait_until(applied, REASSIGN_TIMEOUT):
            ongoing = await self.admin.ongoing_reassignments(pending[:MAX_LISTED])
            raise KafkaActionError(
                f"{len(pending)} reassignment(s) not visible after {REASSIGN_TIMEOUT:g} s: "
                f"{names(pending)} ({len(ongoing)} still in progress at the controller)")
        yield Step(f"replica orders applied to {len(keys)} partitions")

    async def elect(self, keys: list[PartitionKey]) -> list[ElectionOutcome]:
        outcomes: list[ElectionOutcome] = []
        for start in range(0, len(keys), REASSIGN_BATCH):
            outcomes += await self.admin.elect_preferred(
                keys[start:start + REASSIGN_BATCH])
        return outcomes


def election_summary(outcomes: list[ElectionOutcome]) -> str:
    elected = sum(o.elected for o in outcomes)
    not_needed = sum(o.not_needed for o in outcomes)
    failed = [o for o in outcomes if o.failed]
    text = f"{elected} elected, {not_needed} already preferred"
    if failed:
        text += f", {len(failed)} failed: " + "; ".join(
            f"{o.name}: {o.error}" for o in failed[:MAX_LISTED])
    return text


# --------------------------------------------------------------------------- elect leaders


class ElectLeaders(_KafkaAction):
    name: ClassVar[str] = "kafka.elect-leaders"

    def __init__(self, service: AdminSource, topic: str | None = None) -> None:
        super().__init__(service, topic or "all-partitions", {"topic": topic})
        self.topic = topic
        self.outcomes: list[ElectionOutcome] = []

    def describe(self) -> str:
        scope = f"topic {self.topic}" if self.topic else "every partition"
        return f"preferred leader election for {scope}"

    def _scope(self, partitions: list[PartitionState]) -> list[PartitionState]:
        return [p for p in partitions if self.topic is None or p.topic == self.topic]

    async def preflight(self) -> list[CheckResult]:
        view, checks = await self._read_checks()
        if view is None:
            return checks
        checks = [c for c in checks if c.name != "no offline partitions"]
        scope = self._scope(view.partitions())
        if self.topic is not None and not scope:
            checks.append(CheckResult.failed("topic exists", f"no topic named {self.topic!r}"))
            return checks
        moving = [p for p in scope if p.not_preferred]
        detail = f"{len(moving)} of {len(scope)}"
        if moving:
            detail += ": " + names(partition_keys(moving))
        checks.append(CheckResult.passed("partitions not on their preferred leader", detail))
        unavailable = [p for p in moving if p.preferred_leader not in p.isr]
        if unavailable:
            checks.append(CheckResult.warned(
                "preferred leader in sync",
                f"{len(unavailable)} partition(s) keep their leader (preferred replica not "
                f"in ISR): {names(partition_keys(unavailable))}"))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        view, elect, _, _ = self._bounds()
        return WorstCase((("election", view + elect),
                          ("verify", VERIFY_TIMEOUT + view + WAIT_INTERVAL)), self._note())

    async def would_change(self) -> list[str]:
        """Each partition whose leadership would move (from → to); those off their preferred
        leader that would stay, and why."""
        scope = self._scope((await self.seen_view()).partitions())
        if self.topic is not None and not scope:
            return [f"nothing: no topic named {self.topic!r}"]
        moving = [p for p in scope if p.electable]
        lines = [f"leader {p.name}: {p.leader} → {p.preferred_leader}" for p in moving]
        if not moving:
            lines.append(f"nothing: no leadership would move ({len(scope)} partition(s))")
        lines += [f"stays {p.name}: leader {p.leader} (preferred replica "
                  f"{p.preferred_leader} is not in sync)"
                  for p in scope if p.not_preferred and not p.electable]
        return lines

    async def execute(self) -> AsyncIterator[Step]:
        yield Step("requesting a preferred leader election", 0.1)
        keys = None if self.topic is None else partition_keys(
            self._scope(await self.partitions()))
        self.outcomes = await self.admin.elect_preferred(keys)
        for outcome in self.outcomes:
            if outcome.elected:
                yield Step(f"{outcome.name}: elected")
            elif outcome.failed:
                yield Step(f"{outcome.name}: {outcome.error}")
        yield Step(election_summary(self.outcomes), 1.0)

    async def _verify(self) -> list[CheckResult]:
        remaining: list[PartitionState] = []

        async def balanced() -> bool:
            nonlocal remaining
            remaining = [p for p in self._scope(await self.partitions())
                         if p.not_preferred and p.preferred_leader in p.isr]
            return not remaining

        if await _wait_until(balanced, VERIFY_TIMEOUT):
            return [CheckResult.passed("preferred leaders", "every partition whose preferred "
                                       "replica is in sync is led by it")]
        return [CheckResult.failed(
            "preferred leaders", f"{len(remaining)} partition(s) still not on their preferred "
            f"leader: {names(partition_keys(remaining))}")]


# --------------------------------------------------------------------------- drain / undrain


TAKEOVER = "another in-sync replica takes over, ISR above min.insync.replicas"


class _BrokerAction(_KafkaAction):
    def __init__(self, service: AdminSource, broker_id: int, state_dir: Path) -> None:
        super().__init__(service, str(broker_id), {"broker_id": broker_id})
        self.broker_id = broker_id
        self.state_file = state_path(Path(state_dir), broker_id)

    def _broker_check(self, view: ClusterView) -> CheckResult:
        registered = set(view.brokers)
        in_replicas = {r for p in view.partitions() for r in p.replicas}
        known = sorted(registered | in_replicas)
        if self.broker_id not in known:
            return CheckResult.failed(
                "broker exists", f"broker {self.broker_id} is not in this cluster "
                f"(brokers: {', '.join(map(str, known)) or 'none'})")
        state = "registered" if self.broker_id in registered else "NOT registered (down)"
        return CheckResult.passed("broker exists", f"broker {self.broker_id} is {state}")

    def _leadership(self, p: PartitionState, new_order: Sequence[int]) -> str:
        """What a preferred election after the new order does to ``p``'s leadership."""
        to = new_order[0] if new_order else None
        if to is None or to == p.leader:
            return f"leader {p.name}: stays on {p.leader}"
        if to not in p.isr:
            return f"leader {p.name}: {p.leader} → {to} once {to} is in sync"
        return f"leader {p.name}: {p.leader} → {to}"


class DrainBroker(_BrokerAction):
    name: ClassVar[str] = "kafka.drain"

    def __init__(self, service: AdminSource, broker_id: int, state_dir: Path) -> None:
        super().__init__(service, broker_id, state_dir)
        self.plan: dict[PartitionKey, list[int]] = {}
        self.was_up: bool | None = None  # registered at the preflight (None: not read)

    def describe(self) -> str:
        return (f"drain Kafka broker {self.broker_id}: move it last in every replica list "
                "(no data moves) and elect other leaders")

    def _takeover(self, partitions: list[PartitionState]) -> CheckResult:
        led = [p for p in partitions if p.leader == self.broker_id]
        blockers = drain_blockers(partitions, self.broker_id)
        if not blockers:
            return CheckResult.passed(TAKEOVER, f"all {len(led)} partition(s) it leads")
        return CheckResult.failed(
            TAKEOVER, f"{len(blockers)} of {len(led)} led partition(s) unsafe: "
            + "; ".join(b.describe() for b in blockers[:MAX_LISTED])
            + (f" and {len(blockers) - MAX_LISTED} more" if len(blockers) > MAX_LISTED
               else ""))

    def _min_isr(self, view: ClusterView) -> CheckResult:
        """Blast radius: the partitions it is in sync for that would fall to or under
        ``min.insync.replicas`` once it is stopped (what a drain prepares). The ones it leads
        are the takeover check's: this adds the ones it follows."""
        partitions = view.partitions()
        internal = {t.name for t in view.topics if t.internal}
        configured = topology_of(self.layers.config if self.layers else None).api_topics

        def api_topic(topic: str) -> bool:
            return topic in configured if configured is not None else topic not in internal

        led = {p.name for p in partitions if p.leader == self.broker_id}
        return min_isr(partitions, {self.broker_id}, api_topic=api_topic,
                       when="once it is stopped", refused_elsewhere=led)

    async def preflight(self) -> list[CheckResult]:
        view, checks = await self._read_checks()
        if view is None:
            return checks
        partitions = view.partitions()
        checks.append(broker := self._broker_check(view))
        if broker.status is CheckStatus.FAIL:
            return checks
        self.was_up = self.broker_id in view.brokers
        led = [p for p in partitions if p.leader == self.broker_id]
        checks.append(self._takeover(partitions))
        checks.append(self._min_isr(view))
        self.plan = drain_plan(partitions, self.broker_id)
        checks.append(CheckResult.passed(
            "plan", f"reorder {len(self.plan)} partition(s), move leadership of {len(led)}"))
        try:
            record = load_record(self.state_file)
        except (OSError, ValueError, KeyError) as exc:
            checks.append(CheckResult.failed("drain record readable",
                                             f"{self.state_file}: {exc}"))
        else:
            if record is not None:
                checks.append(CheckResult.warned(
                    "already drained", f"since {record.drained_at}; the original orders "
                    f"recorded then are kept ({self.state_file})"))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """Re-check; reorder (batches, their wait); elect and wait for the leadership to
        move (re-electing as it goes); verify. A wait's last read may overrun it."""
        view, elect, _, _ = self._bounds()
        batches = max(1, math.ceil(len(self.plan) / REASSIGN_BATCH))
        return WorstCase((
            ("re-check", view),
            ("reorder", self._reorder_bound(len(self.plan))),
            ("ISR settling before the election", ISR_SETTLE_SECONDS + view),
            ("leadership", view + batches * elect + LEADERSHIP_TIMEOUT + view + elect),
            ("verify", VERIFY_TIMEOUT + view + WAIT_INTERVAL),
        ), self._note())

    async def recheck(self) -> list[CheckResult]:
        """Right before the first change (the confirmed preflight may be minutes old), one
        metadata read: the broker is still up (unless the preflight already saw it down),
        and every partition it leads still has another in-sync replica, above
        ``min.insync.replicas``, to take over."""
        return (await self._recheck_read())[1]

    async def _recheck_read(self) -> tuple[ClusterView | None, list[CheckResult]]:
        """One metadata read and :meth:`recheck`'s conditions judged on it (the view is None
        when the read failed)."""
        try:
            view = await self.view()
        except Exception as exc:
            return None, [CheckResult.failed(CHECK_REACHABLE, describe_error(exc))]
        checks: list[CheckResult] = []
        if self.was_up is not False:
            if self.broker_id in view.brokers:
                checks.append(CheckResult.passed(CHECK_BROKER_UP,
                                                 f"broker {self.broker_id} is registered"))
            else:
                checks.append(CheckResult.failed(
                    CHECK_BROKER_UP, f"broker {self.broker_id} is no longer registered "
                    "(down or fenced since the preflight): look again before draining it"))
        checks.append(self._min_isr(view))
        checks.append(self._takeover(view.partitions()))
        return view, checks

    async def would_change(self) -> list[str]:
        """Each replica order that changes (before → after), each leadership that moves, and
        the drain record."""
        partitions = (await self.seen_view()).partitions()
        plan = drain_plan(partitions, self.broker_id)
        current = {(p.topic, p.partition): p for p in partitions}
        led = sorted((p for p in partitions if p.leader == self.broker_id),
                     key=lambda p: (p.topic, p.partition))
        lines = [f"replicas {t}-{n}: {shown(current[(t, n)].replicas)} → {shown(new)}"
                 for (t, n), new in sorted(plan.items())]
        lines += [self._leadership(p, plan.get((p.topic, p.partition), p.replicas))
                  for p in led]
        if not lines:
            lines.append(f"nothing in the cluster: broker {self.broker_id} is already last in "
                         "every replica list and leads no partition")
        try:
            record = load_record(self.state_file)
        except (OSError, ValueError, KeyError) as exc:
            lines.append(f"the drain record cannot be read: {self.state_file}: {exc}")
        else:
            if record is None:
                lines.append(f"record the original order of {len(plan)} partition(s) in "
                             f"{self.state_file}")
            else:
                added = sum(k not in record.original for k in plan)
                lines.append(f"keep the orders recorded at {record.drained_at} in "
                             f"{self.state_file}, adding {added} partition(s)")
        return lines

    async def execute(self) -> AsyncIterator[Step]:
        yield Step("reading cluster metadata", 0.05)
        partitions = await self.partitions()
        self.plan = plan = drain_plan(partitions, self.broker_id)
        current = {(p.topic, p.partition): list(p.replicas) for p in partitions}
        original = {k: current[k] for k in plan}
        record = load_record(self.state_file)
        record = (record.merged(original) if record is not None
                  else DrainRecord(self.broker_id, self.cluster_id, now_iso(), original))
        save_record(self.state_file, record)
        yield Step(f"original replica orders saved to {self.state_file} "
                   f"({len(record.original)} partitions)", 0.15)
        if plan:
            async for step in self.reassign(plan):
                yield Step(step.message, 0.5)
        else:
            yield Step(f"broker {self.broker_id} is already last in every replica list", 0.5)
        # The reassignment can take minutes: before the election, the re-check's conditions
        # again, on the read that finds the partitions to elect (no read more).
        view, checks = await self._recheck_read()
        settle_until = time.monotonic() + ISR_SETTLE_SECONDS
        said = False
        while not self.forced and _isr_only(checks) and time.monotonic() < settle_until:
            if not said:
                said = True
                reasons = "; ".join(c.detail for c in checks if c.status is CheckStatus.FAIL)
                yield Step(f"before the leader election: {reasons}; waiting up to "
                           f"{ISR_SETTLE_SECONDS:g} s for the ISR to recover", 0.55)
            await asyncio.sleep(ISR_SETTLE_INTERVAL)
            view, checks = await self._recheck_read()
        led = [] if view is None else [p for p in view.partitions()
                                       if p.leader == self.broker_id]
        yield self.recheck_before(
            "the leader election", checks,
            left=f"replica orders demoted (broker {self.broker_id} last) and the originals "
                 f"recorded in {self.state_file}; no leadership moved"
                 + (f" (broker {self.broker_id} still leads {len(led)} partition(s))"
                    if view is not None else "") + "; undo "
                 f"with `sfops kafka undrain {self.broker_id}`, or drain again once the "
                 "check passes")
        to_elect = sorted((p.topic, p.partition) for p in led)
        if to_elect:
            yield Step(f"preferred election for the {len(to_elect)} partition(s) it leads",
                       0.6)
            outcomes = await self.elect(to_elect)
            yield Step(election_summary(outcomes), 0.8)
        still: list[PartitionKey] = []
        last_election = time.monotonic()

        async def led_nothing() -> bool:
            nonlocal still, last_election
            still = [(p.topic, p.partition) for p in await self.partitions()
                     if p.leader == self.broker_id]
            if still and time.monotonic() - last_election > REELECT_INTERVAL:
                # A metadata answer older than the reassignment hid these from the first
                # election; electing again is harmless (ELECTION_NOT_NEEDED at worst).
                last_election = time.monotonic()
                await self.elect(still)
            return not still

        if not await _wait_until(led_nothing, LEADERSHIP_TIMEOUT):
            raise KafkaActionError(
                f"broker {self.broker_id} still leads {len(still)} partition(s) "
                f"({names(still)}); replica orders are demoted and recorded in "
                f"{self.state_file}; retry the drain, or undo with "
                f"`sfops kafka undrain {self.broker_id}`")
        yield Step(f"broker {self.broker_id} leads no partition", 1.0)

    async def _verify(self) -> list[CheckResult]:
        led: list[PartitionKey] = []
        not_last: list[PartitionKey] = []

        async def drained() -> bool:
            nonlocal led, not_last
            partitions = await self.partitions()
            led = [(p.topic, p.partition) for p in partitions if p.leader == self.broker_id]
            not_last = [(p.topic, p.partition) for p in partitions
                        if self.broker_id in p.replicas and p.replicas[-1] != self.broker_id]
            return not led and not not_last

        await _wait_until(drained, VERIFY_TIMEOUT)
        return [
            CheckResult.passed("leads nothing", f"broker {self.broker_id} leads 0 partitions")
            if not led else CheckResult.failed("leads nothing", f"still leads {names(led)}"),
            CheckResult.passed("last in every replica list")
            if not not_last else CheckResult.failed("last in every replica list",
                                                    names(not_last)),
            CheckResult.passed("drain recorded", str(self.state_file))
            if self.state_file.exists()
            else CheckResult.failed("drain recorded", f"{self.state_file} missing"),
        ]


class UndrainBroker(_BrokerAction):
    name: ClassVar[str] = "kafka.undrain"

    def __init__(self, service: AdminSource, broker_id: int, state_dir: Path) -> None:
        super().__init__(service, broker_id, state_dir)
        self.restored: dict[PartitionKey, list[int]] = {}
        self.seen_record: DrainRecord | None = None  # what the preflight read

    def describe(self) -> str:
        return (f"undrain Kafka broker {self.broker_id}: restore the recorded replica orders "
                "and elect the preferred leaders")

    def _record(self) -> DrainRecord:
        record = load_record(self.state_file)
        if record is None:
            raise KafkaActionError(f"no drain recorded for broker {self.broker_id} "
                                   f"({self.state_file} does not exist)")
        return record

    async def preflight(self) -> list[CheckResult]:
        view, checks = await self._read_checks()
        if view is None:
            return checks
        partitions = view.partitions()
        checks.append(broker := self._broker_check(view))
        try:
            record = self.seen_record = self._record()
        except (OSError, ValueError, KeyError, KafkaActionError) as exc:
            checks.append(CheckResult.failed("drain recorded", str(exc)))
            return checks
        checks.append(CheckResult.passed(
            "drain recorded", f"{len(record.original)} partition(s) since {record.drained_at}"))
        if record.cluster_id and self.cluster_id and record.cluster_id != self.cluster_id:
            checks.append(CheckResult.failed(
                "same cluster", f"recorded for cluster {record.cluster_id}, this is "
                f"{self.cluster_id}"))
        if broker.status is CheckStatus.PASS and self.broker_id not in view.brokers:
            checks.append(CheckResult.failed("broker up", f"broker {self.broker_id} is not "
                                             "registered: start it first"))
        plan, skipped = restore_plan(partitions, record.original)
        if skipped:
            checks.append(CheckResult.warned("partitions left alone",
                                             "; ".join(list(skipped.values())[:10])))
        lagging = [(p.topic, p.partition) for p in partitions
                   if (p.topic, p.partition) in record.original
                   and record.original[(p.topic, p.partition)][0] == self.broker_id
                   and self.broker_id not in p.isr]
        if lagging:
            checks.append(CheckResult.warned(
                "broker in sync", f"not yet in the ISR of {len(lagging)} partition(s) it will "
                f"lead ({names(lagging)}); the undrain waits up to {ISR_TIMEOUT:g} s"))
        checks.append(CheckResult.passed("plan", f"restore the order of {len(plan)} "
                                         "partition(s), then elect preferred leaders"))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        """Reorder; wait for the broker to be in sync; elect and wait for its leadership;
        verify. A wait's last read may overrun it."""
        view, elect, _, _ = self._bounds()
        count = len(self.seen_record.original) if self.seen_record is not None else 0
        batches = max(1, math.ceil(count / REASSIGN_BATCH))
        return WorstCase((
            ("reorder", self._reorder_bound(count)),
            ("catch-up", ISR_TIMEOUT + view),
            ("leadership", batches * elect + LEADERSHIP_TIMEOUT + view),
            ("verify", VERIFY_TIMEOUT + view + WAIT_INTERVAL),
        ), self._note())

    async def recheck(self) -> list[CheckResult]:
        """Right before the first change: the drain record still exists and is the one the
        preflight read (another operator's undrain removes it, a repeated drain adds to it).
        A file read, no request."""
        name = "drain record unchanged"
        try:
            record = load_record(self.state_file)
        except (OSError, ValueError, KeyError) as exc:
            return [CheckResult.failed(name, f"{self.state_file}: {exc}")]
        if record is None:
            return [CheckResult.failed(name, f"{self.state_file} no longer exists (undrained "
                                       "since the preflight?)")]
        if self.seen_record is not None and record != self.seen_record:
            return [CheckResult.failed(
                name, f"{self.state_file} changed since the preflight (then "
                f"{len(self.seen_record.original)} partition(s) since "
                f"{self.seen_record.drained_at}, now {len(record.original)} since "
                f"{record.drained_at})")]
        return [CheckResult.passed(name, f"{len(record.original)} partition(s) since "
                                   f"{record.drained_at}")]

    async def would_change(self) -> list[str]:
        """The recorded order each partition gets back (now → restored), the partitions left
        alone, the leaderships the election then moves, and the record's removal."""
        try:
            record = self._record()
        except (OSError, ValueError, KeyError, KafkaActionError) as exc:
            return [f"nothing: {exc}"]
        partitions = (await self.seen_view()).partitions()
        current = {(p.topic, p.partition): p for p in partitions}
        plan, skipped = restore_plan(partitions, record.original)
        lines = [f"replicas {t}-{n}: {shown(current[(t, n)].replicas)} → {shown(new)}"
                 for (t, n), new in sorted(plan.items())]
        lines += [f"left alone: {reason}" for reason in skipped.values()]
        restored = sorted((k, v) for k, v in record.original.items() if k not in skipped)
        lines += [self._leadership(current[k], new) for k, new in restored
                  if current[k].leader != new[0]]
        lines.append(f"remove {self.state_file}")
        return lines

    def _should_lead(self, record: DrainRecord) -> list[PartitionKey]:
        return sorted(k for k, order in record.original.items() if order[0] == self.broker_id)

    async def execute(self) -> AsyncIterator[Step]:
        record = self._record()
        yield Step(f"read {self.state_file}", 0.05)
        partitions = await self.partitions()
        plan, skipped = restore_plan(partitions, record.original)
        for line in skipped.values():
            yield Step(f"left alone: {line}")
        if plan:
            async for step in self.reassign(plan):
                yield Step(step.message, 0.4)
        self.restored = {k: v for k, v in record.original.items() if k not in skipped}
        self.state_file.unlink()
        yield Step(f"original replica orders restored; {self.state_file} removed", 0.5)
        should_lead = [k for k in self._should_lead(record) if k in self.restored]
        lagging: list[PartitionKey] = []

        async def in_sync() -> bool:
            nonlocal lagging
            isr = {(p.topic, p.partition): p.isr for p in await self.partitions()}
            lagging = [k for k in should_lead if self.broker_id not in isr.get(k, ())]
            return not lagging

        yield Step(f"waiting for broker {self.broker_id} to be in sync", 0.55)
        if not await _wait_until(in_sync, ISR_TIMEOUT):
            raise KafkaActionError(
                f"broker {self.broker_id} is not in the ISR of {names(lagging)} after "
                f"{ISR_TIMEOUT:g} s; replica orders are restored — run "
                "`sfops kafka elect-leaders` once it has caught up")
        yield Step(f"preferred election for {len(self.restored)} partition(s)", 0.7)
        outcomes = await self.elect(sorted(self.restored))
        yield Step(election_summary(outcomes), 0.85)
        wrong: list[PartitionKey] = []

        async def leading() -> bool:
            nonlocal wrong
            leaders = {(p.topic, p.partition): p.leader for p in await self.partitions()}
            wrong = [k for k in should_lead if leaders.get(k) != self.broker_id]
            return not wrong

        if not await _wait_until(leading, LEADERSHIP_TIMEOUT):
            raise KafkaActionError(
                f"broker {self.broker_id} does not lead {names(wrong)}; replica orders are "
                "restored — run `sfops kafka elect-leaders`")
        yield Step(f"broker {self.broker_id} leads its {len(should_lead)} preferred "
                   "partition(s) again", 1.0)

    async def _verify(self) -> list[CheckResult]:
        wrong_order: list[PartitionKey] = []
        not_preferred: list[PartitionKey] = []

        async def restored() -> bool:
            nonlocal wrong_order, not_preferred
            partitions = {(p.topic, p.partition): p for p in await self.partitions()}
            wrong_order = [k for k, order in self.restored.items()
                           if k in partitions and list(partitions[k].replicas) != order]
            not_preferred = [k for k in self.restored
                             if k in partitions and partitions[k].not_preferred]
            return not wrong_order and not not_preferred

        await _wait_until(restored, VERIFY_TIMEOUT)
        return [
            CheckResult.passed("original replica orders", f"{len(self.restored)} partition(s)")
            if not wrong_order else CheckResult.failed("original replica orders",
                                                       names(sorted(wrong_order))),
            CheckResult.passed("preferred leaders")
            if not not_preferred else CheckResult.failed("preferred leaders",
                                                         names(sorted(not_preferred))),
        ]


def _isr_only(checks: list[CheckResult]) -> bool:
    """Some re-check failed, and only ISR conditions did (what a catching-up follower ends)."""
    failing = [c.name for c in checks if c.status is CheckStatus.FAIL]
    return bool(failing) and not any(name in NOT_WAITED_FOR for name in failing)
