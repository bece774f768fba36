"""Failover, switchover and rejoin: Patroni-style named preflight checks, streamed steps,
verification.

``--force`` (the runner's ``force``) may override a *judgement* — the candidate lags more than
``max_lag_on_failover``, someone else is further ahead — but never a *safety* check: a failover
while the primary answers would make two primaries. Those checks are listed in ``HARD_CHECKS``
and ``execute()`` refuses, before changing anything, when one of them failed — in the
preflight or in the re-check right before the change.

The actions take a :class:`~backends.postgres.cluster.ClusterOps` (what they use of the
cluster), so their checks and plans are unit-tested against fakes. ``close()`` releases what
the action's cluster opened (its SSH executors), never a service it shares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar

from backends.actions import Action, CheckResult, CheckStatus, Step, WorstCase
from backends.config import redact_text
from backends.locks import HostLockFile, LockKey, digest_of, key_name, lock_file_beside
from backends.postgres import worst
from backends.postgres.cluster import (
    PROMOTE_WAIT_SECONDS,
    ClusterOps,
    PgActionError,
    accepts_write,
    checkpoint_received,
    fence,
    fence_first,
    promote,
    rejoin,
    rejoin_plan,
)
from backends.postgres.host import CLEAN_STATES, HostError
from backends.postgres.model import MemberStatus, format_bytes, format_lsn, parse_lsn
from backends.resilience import call_write
from backends.topology.blast import cross_layer, role_change

# The primary must fail this many reads to count as gone (the preflight's first read is the
# first), each starting at least UNREACHABLE_INTERVAL after the one before: the window is never
# shorter than (attempts - 1) intervals, and a read that itself waited out its connect timeout
# (a hung server) is not followed by a pause on top. README: "Failover with a hung primary".
UNREACHABLE_ATTEMPTS = 3
UNREACHABLE_INTERVAL = 1.0
# In the re-check right before the change, a former primary that will be killed before the
# promotion gets this long to answer, connecting included (everyone else gets the full
# connect + contact budget). A server that came back answers in milliseconds; one slower than
# this is killed by the fence, never left running beside the new primary.
RECHECK_FENCED_SECONDS = 1.0
STREAMED_RECENTLY_SECONDS = 300.0

CHECK_KNOWN = "member is configured"
CHECK_PRIMARY_GONE = "primary unreachable"
CHECK_CANDIDATE_UP = "candidate reachable"
CHECK_CANDIDATE_STANDBY = "candidate in recovery"
CHECK_STREAMING = "candidate streaming"
CHECK_LSN_KNOWN = "candidate received LSN known"
CHECK_LAG = "lag within max_lag_on_failover"
CHECK_TIMELINE = "timeline not behind"
CHECK_AHEAD = "nobody further ahead"
CHECK_FENCE = "old primary can be fenced"
CHECK_ONE_PRIMARY = "one reachable primary"
CHECK_TIMELINES_EQUAL = "timelines equal"
CHECK_HOST = "primary host reachable"
CHECK_MEMBER_HOST = "member host reachable"
CHECK_NOT_PRIMARY = "member is not the primary"
CHECK_NEEDS_REJOIN = "member needs rejoining"

HARD_CHECKS = frozenset({
    CHECK_KNOWN, CHECK_PRIMARY_GONE, CHECK_CANDIDATE_UP, CHECK_CANDIDATE_STANDBY,
    CHECK_ONE_PRIMARY, CHECK_TIMELINES_EQUAL, CHECK_HOST, CHECK_MEMBER_HOST,
    CHECK_NOT_PRIMARY, CHECK_NEEDS_REJOIN,
})


def cluster_lock(cluster: ClusterOps) -> LockKey:
    """The cluster's lock: named after its members' addresses (the Lease: the same for every
    operator's configuration listing the same members), and held on every member's host in a
    file named after the member's data directory — whatever else a configuration lists, two
    operators changing one data directory exclude each other there. A failover takes
    whichever hosts still answer (the old primary's may be gone)."""
    members = cluster.members
    name = key_name("pg", digest=digest_of([f"{m.host}:{m.port}" for m in members.values()]))
    executors = getattr(getattr(cluster, "config", None), "executors", {})
    files: list[HostLockFile] = []
    for member in sorted(members.values(), key=lambda m: m.name):
        executor = executors.get(member.executor)
        if executor is None or member.data_dir is None:
            continue
        try:
            prefix = cluster.host(member.name).command_prefix
        except PgActionError:
            continue
        data_dir = PurePosixPath(str(member.data_dir))
        files.append(HostLockFile(executor, lock_file_beside(data_dir, f"pg-{data_dir.name}"),
                                  prefix, f"{member.name}'s host"))
    return LockKey(name, f"PostgreSQL cluster ({', '.join(sorted(members))})", tuple(files))


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


async def host_problem(cluster: ClusterOps, name: str) -> str | None:
    """None when commands run on ``name``'s host, else why not."""
    try:
        return await cluster.host(name).reachable()
    except PgActionError as exc:
        return str(exc)


def _no_primary(statuses: Mapping[str, MemberStatus]) -> str:
    """Why no primary answers, with each unreachable member's error: when none answers at all
    (a wrong CA, a password, the network) a failover is not the fix."""
    errors = "; ".join(f"{m.name}: {m.error}" for m in statuses.values()
                       if not m.reachable and m.error)
    if not any(m.reachable for m in statuses.values()):
        return f"no member answers ({errors})" if errors else "no member answers"
    return "no reachable primary: use `sfops pg failover`" + (f" ({errors})" if errors else "")


def _worst_note(cluster: ClusterOps) -> str:
    return (f"a status read ≤ {worst.status_read(cluster):.0f} s and a statement ≤ "
            f"{worst.query(cluster):.0f} s from connect_timeout and statement_timeout; each "
            "host command to its deadline, then stopped on the host")


def _state(status: MemberStatus) -> str:
    return status.role.value if status.reachable else f"down ({status.error or 'no answer'})"


def _still_primary(primary: MemberStatus) -> CheckResult:
    """The re-check that the primary the preflight saw is still the primary."""
    if primary.is_primary:
        return CheckResult.passed(CHECK_ONE_PRIMARY, f"{primary.name} still the primary")
    return CheckResult.failed(CHECK_ONE_PRIMARY, f"{primary.name} is {_state(primary)} now")


def _still_standby(candidate: MemberStatus) -> CheckResult:
    """The re-check that the member to promote is still a standby."""
    if candidate.is_standby:
        return CheckResult.passed(CHECK_CANDIDATE_STANDBY, f"{candidate.name} still in recovery")
    return CheckResult.failed(CHECK_CANDIDATE_STANDBY,
                              f"{candidate.name} is {_state(candidate)} now")


def _others_primary(statuses: Mapping[str, MemberStatus], candidate: str,
                    name: str) -> CheckResult:
    """The re-check that nobody but ``candidate`` answers as primary (check ``name``)."""
    live = [m.name for m in statuses.values() if m.name != candidate and m.is_primary]
    if live:
        return CheckResult.failed(name, f"{', '.join(live)} answers as primary now: "
                                  f"promoting {candidate} would make two primaries")
    return CheckResult.passed(name, f"no member but {candidate} could be primary: none is")


def _already_follows(status: MemberStatus, primary: MemberStatus,
                     fenced: Mapping[str, Any]) -> bool:
    """``status`` streams from ``primary`` on its timeline and is not fenced: no rejoin."""
    return (status.is_standby and status.streaming and status.timeline == primary.timeline
            and status.name not in fenced)


class _PgAction(Action):
    def __init__(self, cluster: ClusterOps, target: str, params: dict[str, Any]) -> None:
        super().__init__(target, params)
        self.cluster = cluster
        self.checks: list[CheckResult] = []
        self.rechecked: list[CheckResult] = []
        self.statuses: dict[str, MemberStatus] = {}  # as the preflight read them

    def _hard_failures(self) -> list[CheckResult]:
        return [c for c in (*self.checks, *self.rechecked)
                if c.status is CheckStatus.FAIL and c.name in HARD_CHECKS]

    async def close(self) -> None:
        await self.cluster.close()  # its own executors; a shared service stays open

    def locks(self) -> list[LockKey]:
        return [cluster_lock(self.cluster)]  # failover, switchover, rejoin: one key

    async def _statuses(self) -> dict[str, MemberStatus]:
        return self.statuses or await self.cluster.read_all()

    async def _read_roles(self, names: list[str], short: list[str]) -> dict[str, MemberStatus]:
        """One role probe of each of ``names`` at once; the ``short`` ones (killed before the
        promotion) get RECHECK_FENCED_SECONDS."""
        reads = await asyncio.gather(*(
            self.cluster.read_role(n, RECHECK_FENCED_SECONDS if n in short else None)
            for n in names))
        return {m.name: m for m in reads}

    def _promotion_plan(self, name: str, status: MemberStatus | None,
                        timeline: int | None) -> list[str]:
        lines = []
        if status is not None and status.is_standby and status.replay_paused:
            lines.append(f"{name}: resume WAL replay (pg_wal_replay_resume()) so everything "
                         "received is applied")
        after = "a new timeline" if timeline is None else f"timeline {timeline} → {timeline + 1}"
        lines.append(f"{name}: promote (pg_promote(true, {PROMOTE_WAIT_SECONDS})): leaves "
                     f"recovery on {after}; a test write must commit")
        return lines

    def _unsafe(self) -> str | None:
        failures = self._hard_failures()
        if not failures:
            return None
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in failures)
        return f"refused even with --force, nothing was changed: {reasons}"

    def _refuse_unsafe(self) -> None:
        if (reason := self._unsafe()) is not None:
            raise PgActionError(reason)

    async def would_change(self) -> list[str]:
        """Exactly what :meth:`execute` would do (after the preflight: it plans from what the
        preflight read). Reads only; passwords redacted."""
        if (reason := self._unsafe()) is not None:
            return [f"nothing: {reason}"]
        return [redact_text(line) for line in await self._plan()]

    async def _plan(self) -> list[str]:
        return [self.describe()]

    # The layers a role change touches: the API members (nginx and their pods), and the nodes.
    LAYERS = ("nginx", "kubernetes")

    def _prefetch_layers(self) -> None:
        if self.layers is not None:
            self.layers.prefetch(self.LAYERS)

    async def _blast_radius(self, old: list[str], doing: str) -> list[CheckResult]:
        """Every API member reconnects (named, with their pods); refused when the API could
        not reach the new primary ([topology] api_databases). Not a hard check: --force
        overrides it, and the audit record notes that."""
        return await cross_layer(self.layers, self.LAYERS,
                                 lambda topology: role_change(topology, self.target, old, doing))

    def _known(self, name: str) -> CheckResult | None:
        if name in self.cluster.members:
            return None
        known = ", ".join(self.cluster.members)
        return CheckResult.failed(CHECK_KNOWN, f"unknown member {name!r} (configured: {known})")


# --------------------------------------------------------------------------- failover


class Failover(_PgAction):
    """The primary is gone: fence it, promote ``to``.

    A former primary whose host answers is fenced *before* the promotion — standby.signal,
    then SIGKILL of its server, which also ends a hung (SIGSTOPped) one — so it can never
    accept a write beside the new primary, however long it was hung. One whose host does not
    answer cannot be stopped anyway: it is handled after the promotion (fenced if its host
    is back by then, else recorded and alerted on)."""

    name: ClassVar[str] = "pg.failover"
    destructive: ClassVar[bool] = True

    def __init__(self, cluster: ClusterOps, to: str) -> None:
        super().__init__(cluster, to, {"to": to})
        self.to = to
        self.old_primary: list[str] = []
        self.old_timeline: int | None = None
        self.fence_hosts: dict[str, str | None] = {}  # old primary → why its host is out
        self._first_read_at: float | None = None  # the preflight's read_all began
        self._confirmed_at: float | None = None  # the re-check began (the operator said yes)

    def describe(self) -> str:
        return f"fail over to {self.to}: fence the old primary, promote {self.to}"

    def _fenced_first(self) -> list[str]:
        """Former primaries whose host the preflight reached: fenced (standby.signal,
        SIGKILL) before the promotion. The others are handled after it."""
        return [n for n in self.old_primary if n in self.fence_hosts
                and self.fence_hosts[n] is None]

    async def _confirm_gone(self, names: list[str]) -> tuple[dict[str, MemberStatus], float]:
        """Read ``names`` again until UNREACHABLE_ATTEMPTS reads of each failed (the
        preflight's first read counts), each read starting UNREACHABLE_INTERVAL or more after
        the one before; the last status of each and how long the window was. Stops early
        when one answers."""
        started = previous = self._first_read_at or time.monotonic()
        last = {n: self.statuses[n] for n in names if n in self.statuses}
        for _ in range(UNREACHABLE_ATTEMPTS - 1):
            pause = UNREACHABLE_INTERVAL - (time.monotonic() - previous)
            if pause > 0:
                await asyncio.sleep(pause)
            previous = time.monotonic()
            reads = await asyncio.gather(*(self.cluster.read(n) for n in names))
            last = {m.name: m for m in reads}
            if any(m.reachable for m in reads):
                break
        return last, time.monotonic() - started

    async def preflight(self) -> list[CheckResult]:
        self.checks = checks = []
        if (unknown := self._known(self.to)) is not None:
            checks.append(unknown)
            return checks
        self._prefetch_layers()  # the CLI's polls run during the confirm-gone window
        self._first_read_at = time.monotonic()
        self.statuses = statuses = await self.cluster.read_all()
        candidate = statuses[self.to]
        last = self.cluster.last_primary_lsn()
        others = [n for n in statuses if n != self.to]

        # The primary: gone, confirmed over several attempts.
        if candidate.is_primary:
            checks.append(CheckResult.failed(CHECK_PRIMARY_GONE,
                                             f"{self.to} is already the primary"))
        live = [statuses[n] for n in others if statuses[n].is_primary]
        if live:
            names = ", ".join(f"{m.name} (timeline {m.timeline})" for m in live)
            checks.append(CheckResult.failed(
                CHECK_PRIMARY_GONE, f"{names} answers as primary: a failover would make two "
                f"primaries; use `sfops pg switchover --to {self.to}`"))
        elif not candidate.is_primary:
            down = [n for n in others if not statuses[n].reachable]
            former = [last.member] if last and last.member in down else down
            self.old_primary = former
            if not former:
                checks.append(CheckResult.failed(
                    CHECK_PRIMARY_GONE, "no member is down and none is primary: nothing to "
                    "fail over from"))
            else:
                confirmed, window = await self._confirm_gone(former)
                back = [m for m in confirmed.values() if m.reachable]
                if back:
                    checks.append(CheckResult.failed(
                        CHECK_PRIMARY_GONE, f"{back[0].name} answered again "
                        f"({back[0].role.value}): not a failover situation"))
                else:
                    errors = "; ".join(f"{m.name}: {m.error}" for m in confirmed.values())
                    checks.append(CheckResult.passed(
                        CHECK_PRIMARY_GONE, f"{UNREACHABLE_ATTEMPTS} attempts over "
                        f"{window:.1f} s failed ({errors})"))
        self._check_candidate(candidate, statuses, last)
        await self._check_fence()
        checks += await self._blast_radius(self.old_primary, "failover")
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        read = worst.status_read(self.cluster)
        return WorstCase((
            ("re-check", read),
            ("fencing first", sum(worst.fence_first(self.cluster, n)
                                  for n in self._fenced_first())),
            ("re-check before the promotion", read if self._fenced_first() else 0.0),
            ("promotion", worst.promote(self.cluster)),
            ("fencing after", sum(worst.fence_after(self.cluster, n) for n in self.old_primary
                                  if n not in self._fenced_first())),
            ("verify", (1 + len(self.old_primary)) * read + worst.query(self.cluster)),
        ), _worst_note(self.cluster))

    def _check_candidate(self, candidate: MemberStatus, statuses: dict[str, MemberStatus],
                         last: Any) -> None:
        checks = self.checks
        if not candidate.reachable:
            checks.append(CheckResult.failed(CHECK_CANDIDATE_UP,
                                             f"{self.to}: {candidate.error}"))
            return
        checks.append(CheckResult.passed(CHECK_CANDIDATE_UP, f"{self.to} answers"))
        if not candidate.is_standby:
            checks.append(CheckResult.failed(CHECK_CANDIDATE_STANDBY,
                                             f"{self.to} is not in recovery"))
            return
        checks.append(CheckResult.passed(CHECK_CANDIDATE_STANDBY,
                                         f"{self.to} in recovery, timeline {candidate.timeline}"))
        self.old_timeline = candidate.timeline
        receiver = candidate.wal_receiver
        streamed_at = self.cluster.streaming_seen(self.to)
        if candidate.streaming:
            checks.append(CheckResult.passed(CHECK_STREAMING, "streaming now"))
        elif receiver is not None and receiver.seconds_since_message is not None and (
                receiver.seconds_since_message <= STREAMED_RECENTLY_SECONDS):
            checks.append(CheckResult.passed(
                CHECK_STREAMING, f"receiver {receiver.status}, last message "
                f"{_ago(receiver.seconds_since_message)}"))
        elif streamed_at is not None and (
                time.time() - streamed_at <= STREAMED_RECENTLY_SECONDS):
            checks.append(CheckResult.passed(
                CHECK_STREAMING,
                f"not now; sfops saw it streaming {_ago(time.time() - streamed_at)}"))
        elif streamed_at is not None:
            checks.append(CheckResult.failed(
                CHECK_STREAMING, f"last seen streaming {_ago(time.time() - streamed_at)}"))
        else:
            checks.append(CheckResult.warned(
                CHECK_STREAMING, "not streaming now and sfops never saw it stream"))
        position = candidate.position
        if position is None:
            checks.append(CheckResult.failed(CHECK_LSN_KNOWN,
                                             f"{self.to} reports no received/replayed LSN"))
        else:
            checks.append(CheckResult.passed(
                CHECK_LSN_KNOWN, f"received {format_lsn(candidate.received_lsn)}, replayed "
                f"{format_lsn(candidate.replayed_lsn)}"))
        bound = self.cluster.max_lag_on_failover
        if last is None:
            checks.append(CheckResult.warned(
                CHECK_LAG, "sfops never saw the primary's WAL position: the data loss "
                "cannot be bounded"))
        elif position is not None:
            lag = max(0, last.lsn - position)
            detail = (f"{format_bytes(lag)} behind {last.member}'s last seen "
                      f"{format_lsn(last.lsn)} ({_ago(time.time() - last.seen_at)}), bound "
                      f"{format_bytes(bound)}")
            checks.append(CheckResult.passed(CHECK_LAG, detail) if lag <= bound
                          else CheckResult.failed(CHECK_LAG, detail + "; --force accepts the "
                                                  "loss"))
            if last.timeline is not None and candidate.timeline is not None:
                if candidate.timeline < last.timeline:
                    checks.append(CheckResult.failed(
                        CHECK_TIMELINE, f"{self.to} on timeline {candidate.timeline}, the "
                        f"primary was on {last.timeline}"))
                else:
                    checks.append(CheckResult.passed(CHECK_TIMELINE,
                                                     f"timeline {candidate.timeline}"))
        ahead = [m for m in statuses.values()
                 if m.name != self.to and m.is_standby and m.position is not None
                 and position is not None and m.position > position]
        if ahead:
            best = max(ahead, key=lambda m: m.position or 0)
            checks.append(CheckResult.failed(
                CHECK_AHEAD, f"{best.name} has more WAL ({format_lsn(best.position)} > "
                f"{format_lsn(position)}): fail over to {best.name} instead"))
        else:
            checks.append(CheckResult.passed(CHECK_AHEAD, "no standby has more WAL"))

    async def _check_fence(self) -> None:
        for name in self.old_primary:
            problem = self.fence_hosts[name] = await host_problem(self.cluster, name)
            if problem is None:
                self.checks.append(CheckResult.passed(
                    CHECK_FENCE, f"{name}'s host reachable: before the promotion, "
                    "standby.signal is written and its server SIGKILLed"))
            else:
                self.checks.append(CheckResult.warned(
                    CHECK_FENCE, f"{name}'s host unreachable ({problem}): it will be recorded "
                    "as fenced and alerted on if it returns as a primary"))

    async def recheck(self) -> list[CheckResult]:
        """Right before the change (one role probe of every member, at once, no window): the
        old primary still does not answer, nobody else is primary, the candidate is still a
        standby. A former primary about to be killed gets RECHECK_FENCED_SECONDS to answer:
        the fence, not this read, keeps it from running beside the new primary."""
        self._confirmed_at = time.monotonic()
        if self.to not in self.cluster.members:
            return []
        fenced_first = self._fenced_first()
        statuses = await self._read_roles(list(self.cluster.members), fenced_first)
        gone = ", ".join(self.old_primary) or "no member"
        within = (f" (given {RECHECK_FENCED_SECONDS:g} s: it is killed before the "
                  "promotion)" if fenced_first else "")
        self.rechecked = self._still_safe(statuses, f"{gone} still does not answer{within}")
        return self.rechecked

    def _still_safe(self, statuses: Mapping[str, MemberStatus], gone: str
                    ) -> list[CheckResult]:
        """What :meth:`recheck` and the re-check before the promotion judge: nobody but the
        candidate answers as primary, no former primary read here answers again (``gone``:
        the detail when none does), the candidate is still a standby."""
        results = []
        others = _others_primary(statuses, self.to, CHECK_PRIMARY_GONE)
        back = [statuses[n] for n in self.old_primary if n in statuses and statuses[n].reachable]
        if others.status is CheckStatus.FAIL:
            results.append(others)
        elif back:
            results.append(CheckResult.failed(
                CHECK_PRIMARY_GONE, f"{back[0].name} answers again ({_state(back[0])})"))
        else:
            results.append(CheckResult.passed(CHECK_PRIMARY_GONE, gone))
        results.append(_still_standby(statuses[self.to]))
        return results

    async def _recheck_before_promotion(self, fenced: list[str]) -> Step:
        """Between fencing and promoting (the fence can take seconds): every member but the
        fenced ones read again — nobody else became primary, the candidate is still a
        standby. Stops with nothing promoted when one fails."""
        names = [n for n in self.cluster.members if n not in fenced]
        statuses = await self._read_roles(names, [])
        killed = ", ".join(fenced)
        checks = self._still_safe(statuses, f"no member answers as primary ({killed} fenced "
                                  "and killed)")
        return self.recheck_before(
            f"promoting {self.to}", checks, hard=HARD_CHECKS,
            left=f"{killed} fenced (standby.signal written, server killed), nothing promoted: "
                 f"no member accepts writes; check `sfops pg status`, then run "
                 f"`sfops pg failover` again, or `sfops pg rejoin {fenced[0]}` to follow a "
                 "primary that exists now")

    async def _plan(self) -> list[str]:
        """How each old primary is fenced (before or after the promotion), the promotion,
        what is left to the operator."""
        statuses = await self._statuses()
        candidate = statuses.get(self.to)
        timeline = self.old_timeline if self.old_timeline is not None else (
            candidate.timeline if candidate is not None else None)
        for name in self.old_primary:
            if name not in self.fence_hosts:
                self.fence_hosts[name] = await host_problem(self.cluster, name)
        lines = []
        for name in self._fenced_first():
            path = self.cluster.host(name).path("standby.signal")
            lines.append(f"{name}: fence first: write {path} (a restart comes up read-only as "
                         "a standby), then SIGKILL its server (the postmaster and every process it "
                         "started, a hung one too); if either fails, standby.signal is removed and "
                         f"nothing is promoted; recorded as fenced, new primary {self.to}")
        lines += self._promotion_plan(self.to, candidate, timeline)
        for name in self.old_primary:
            if (problem := self.fence_hosts[name]) is not None:
                lines.append(f"{name}: fence: its host is unreachable ({problem}): after the "
                             "promotion, fenced if the host answers by then, else only "
                             "recorded as fenced; sfops alerts if it returns as a primary")
        if not self.old_primary:
            lines.append("no former primary to fence")
        for name in self.old_primary:
            lines.append(f"{name}: no primary_conninfo written and no pg_rewind now: that is "
                         f"`sfops pg rejoin {name}` once it can start")
        for name, status in statuses.items():
            if name != self.to and name not in self.old_primary and status.is_standby:
                lines.append(f"{name}: not changed (it still follows the old primary: "
                             f"`sfops pg rejoin {name}`)")
        return lines

    async def execute(self) -> AsyncIterator[Step]:
        self._refuse_unsafe()
        started = self._confirmed_at or time.monotonic()
        fenced_first = self._fenced_first()
        for name in fenced_first:
            async for step in fence_first(self.cluster, name, self.to):
                yield step
        if fenced_first:  # another actor may have promoted someone meanwhile
            yield await self._recheck_before_promotion(fenced_first)
        try:
            async for step in promote(self.cluster, self.to, self.old_timeline):
                yield step
        except PgActionError as exc:
            if not fenced_first:
                raise
            raise PgActionError(
                f"{exc}; {', '.join(fenced_first)} is already fenced (standby.signal, "
                f"killed): no member accepts writes until {self.to} is primary") from None
        yield Step(f"{self.to} accepts writes {time.monotonic() - started:.2f} s after "
                   "confirmation")
        for name in self.old_primary:
            if name not in fenced_first:
                async for step in fence(self.cluster, name, self.to):
                    yield step
        if self.old_primary:
            names = ", ".join(self.old_primary)
            yield Step(f"next: `sfops pg rejoin {self.old_primary[0]}` once {names} can be "
                       "started again")

    async def verify(self) -> list[CheckResult]:
        results = await _verify_primary(self.cluster, self.to, self.old_timeline,
                                        self.old_primary)
        for name in self._fenced_first():
            results.append(await _verify_fenced(self.cluster, name))
        return results


async def _verify_fenced(cluster: ClusterOps, name: str) -> CheckResult:
    """``standby.signal`` is still in ``name``'s data directory: whatever restarts it, it
    comes up read-only."""
    label = "old primary fenced"
    try:
        host = cluster.host(name)
        path = host.path("standby.signal")
        present = await host.exists(path)
    except (PgActionError, HostError) as exc:
        return CheckResult.failed(label, f"{name}: {exc}")
    return (CheckResult.passed(label, f"{name}: {path} in place, server killed") if present
            else CheckResult.failed(label, f"{name}: {path} is missing: a restart would make "
                                    "it a primary again"))


async def _verify_primary(cluster: ClusterOps, name: str, old_timeline: int | None,
                          others: list[str]) -> list[CheckResult]:
    results: list[CheckResult] = []
    status = await cluster.read(name)
    if status.is_primary:
        results.append(CheckResult.passed("new primary out of recovery", name))
    else:
        results.append(CheckResult.failed("new primary out of recovery",
                                          status.error or status.role.value))
    if old_timeline is not None and status.timeline is not None:
        new = status.timeline > old_timeline
        results.append(CheckResult(
            "new timeline", CheckStatus.PASS if new else CheckStatus.FAIL,
            f"{old_timeline} → {status.timeline}"))
    error = await accepts_write(cluster.conn(name))
    results.append(CheckResult.passed("accepts a write") if error is None
                   else CheckResult.failed("accepts a write", error))
    for other in others:
        other_status = await cluster.read(other)
        if other_status.is_primary:
            results.append(CheckResult.failed("old primary not writable",
                                              f"{other} answers as a primary"))
        else:
            state = other_status.role.value if other_status.reachable else "down"
            results.append(CheckResult.passed("old primary not writable", f"{other}: {state}"))
    return results


# --------------------------------------------------------------------------- switchover


class Switchover(_PgAction):
    """Planned role change with no data loss: clean shutdown, checkpoint received, promote,
    old primary rejoins as a standby."""

    name: ClassVar[str] = "pg.switchover"
    destructive: ClassVar[bool] = True

    def __init__(self, cluster: ClusterOps, to: str) -> None:
        super().__init__(cluster, to, {"to": to})
        self.to = to
        self.primary: str | None = None
        self.old_timeline: int | None = None

    def describe(self) -> str:
        return f"switch over to {self.to}: stop the primary cleanly, promote, rejoin it"

    async def preflight(self) -> list[CheckResult]:
        self.checks = checks = []
        if (unknown := self._known(self.to)) is not None:
            checks.append(unknown)
            return checks
        self._prefetch_layers()
        self.statuses = statuses = await self.cluster.read_all()
        primaries = [m for m in statuses.values() if m.is_primary]
        if len(primaries) != 1:
            detail = ("several primaries: " + ", ".join(m.name for m in primaries)
                      if primaries else _no_primary(statuses))
            checks.append(CheckResult.failed(CHECK_ONE_PRIMARY, detail))
            return checks
        primary = primaries[0]
        self.primary, self.old_timeline = primary.name, primary.timeline
        if primary.name == self.to:
            checks.append(CheckResult.failed(CHECK_ONE_PRIMARY,
                                             f"{self.to} is already the primary"))
            return checks
        checks.append(CheckResult.passed(CHECK_ONE_PRIMARY,
                                         f"{primary.name}, timeline {primary.timeline}"))
        candidate = statuses[self.to]
        if not candidate.is_standby:
            checks.append(CheckResult.failed(
                CHECK_CANDIDATE_STANDBY, (candidate.error or "unreachable")
                if not candidate.reachable else f"{self.to} is not in recovery"))
            return checks
        checks.append(CheckResult.passed(CHECK_CANDIDATE_STANDBY, f"{self.to} in recovery"))
        row = next((s for s in primary.standbys if s.application_name == self.to), None)
        if not candidate.streaming or row is None or row.state != "streaming":
            checks.append(CheckResult.failed(
                CHECK_STREAMING, f"{self.to} is not streaming from {primary.name}"))
        else:
            checks.append(CheckResult.passed(CHECK_STREAMING,
                                             f"streaming from {primary.name} ({row.sync_state})"))
        if row is not None:
            lag = row.replay_lag_bytes or 0
            bound = self.cluster.max_lag_on_failover
            detail = f"replay lag {format_bytes(lag)}, bound {format_bytes(bound)}"
            checks.append(CheckResult.passed(CHECK_LAG, detail) if lag <= bound
                          else CheckResult.failed(CHECK_LAG, detail))
        if candidate.timeline != primary.timeline:
            checks.append(CheckResult.failed(
                CHECK_TIMELINES_EQUAL, f"{self.to} on {candidate.timeline}, {primary.name} on "
                f"{primary.timeline}: `sfops pg rejoin {self.to}` first"))
        else:
            checks.append(CheckResult.passed(CHECK_TIMELINES_EQUAL,
                                             f"timeline {primary.timeline}"))
        problem = await host_problem(self.cluster, primary.name)
        checks.append(CheckResult.passed(CHECK_HOST, f"{primary.name}: commands run there")
                      if problem is None else CheckResult.failed(CHECK_HOST, problem))
        checks += await self._blast_radius([primary.name], "switchover")
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        old, cluster = self.primary or self.to, self.cluster
        read = worst.status_read(cluster)
        return WorstCase((
            ("re-check", read),
            (f"stopping {old}", worst.switchover_stop(cluster, old)),
            ("re-check before the promotion", read),
            ("promotion", worst.promote(cluster)),
            (f"rejoining {old}", worst.rejoin(cluster, old)),
            ("verify", 3 * read + worst.query(cluster)),
        ), _worst_note(cluster))

    async def recheck(self) -> list[CheckResult]:
        """Right before the shutdown: the primary is still the primary and the target still
        streams from it (two reads)."""
        if self.primary is None:
            return []
        primary, candidate = await asyncio.gather(self.cluster.read(self.primary),
                                                  self.cluster.read(self.to))
        results = [_still_primary(primary)]
        row = next((s for s in primary.standbys if s.application_name == self.to), None)
        if candidate.is_standby and candidate.streaming and row is not None and (
                row.state == "streaming"):
            results.append(CheckResult.passed(CHECK_STREAMING,
                                              f"{self.to} still streams from {primary.name}"))
        else:
            results.append(CheckResult.failed(
                CHECK_STREAMING, f"{self.to} ({_state(candidate)}) no longer streams from "
                f"{primary.name}"))
        self.rechecked = results
        return results

    async def _recheck_before_promotion(self, old: str) -> Step:
        """Between the old primary's shutdown and the promotion (the wait for its shutdown
        checkpoint can take 30 s): every other member read again — the target is still a
        standby, nobody else became primary. Stops with nothing promoted when one fails."""
        names = [n for n in self.cluster.members if n != old]
        statuses = await self._read_roles(names, [])
        checks = [_others_primary(statuses, self.to, CHECK_ONE_PRIMARY),
                  _still_standby(statuses[self.to])]
        path = self.cluster.host(old).path("standby.signal")
        return self.recheck_before(
            f"promoting {self.to}", checks, hard=HARD_CHECKS,
            left=f"{old} stopped cleanly and fenced (standby.signal), {self.to} not promoted: "
                 f"no member accepts writes, nothing was lost; check `sfops pg status`, then "
                 f"`sfops pg failover` to a standby, or remove {path} and start {old} again")

    async def _plan(self) -> list[str]:
        """Shutdown, the no-loss condition, promotion, and the old primary's rejoin (the
        primary_conninfo it gets, pg_rewind)."""
        if self.primary is None:
            return ["nothing: the preflight found no primary to switch over from"]
        old, new = self.primary, self.to
        statuses = await self._statuses()
        path = self.cluster.host(old).path("standby.signal")
        lines = [
            f"{old}: CHECKPOINT, then fast shutdown (sessions end, in-flight transactions "
            "roll back)",
            f"{old}: write {path}; recorded as fenced (switchover, new primary {new})",
            f"{new}: must receive {old}'s shutdown checkpoint within 30 s; if not, "
            f"{path} is removed, {old} restarts as the primary and nothing else changes",
            *self._promotion_plan(new, statuses.get(new), self.old_timeline),
            f"{old}: rejoins as a standby of {new}:",
        ]
        timeline = None if self.old_timeline is None else self.old_timeline + 1
        lines += ["  " + line for line in await rejoin_plan(
            self.cluster, old, new, statuses, stopped=True, primary_timeline=timeline)]
        return lines

    async def execute(self) -> AsyncIterator[Step]:
        self._refuse_unsafe()
        if self.primary is None:
            raise PgActionError("no primary known: run the preflight first")
        old, new, cluster = self.primary, self.to, self.cluster
        host = cluster.host(old)
        yield Step(f"{old}: CHECKPOINT (shortens the shutdown)")
        await call_write(lambda: cluster.conn(old).fetch(
            "CHECKPOINT", what="CHECKPOINT", statement_timeout=120), what="CHECKPOINT")
        yield Step(f"{old}: fast shutdown (sessions end, in-flight transactions roll back, "
                   "committed WAL is sent to the standby)")
        started = time.monotonic()
        try:
            await host.stop("fast")
        except HostError as exc:
            raise PgActionError(f"{old} did not stop cleanly ({exc}); {new} is still a "
                                f"standby: check {old} and `sfops pg status`") from None
        await host.write_standby_signal()
        cluster.fence(old, reason="switchover", method="standby.signal",
                            new_primary=new)
        control = await host.controldata()
        state = control.get("Database cluster state", "")
        checkpoint = parse_lsn(control.get("Latest checkpoint location"))
        if state not in CLEAN_STATES or checkpoint is None:
            raise PgActionError(
                f"{old} is stopped but its control file says {state!r}; {new} was not "
                f"promoted. To go back: remove {host.path('standby.signal')} and start {old}")
        yield Step(f"{old}: stopped cleanly, shutdown checkpoint at {format_lsn(checkpoint)}")
        received = await checkpoint_received(cluster, new, checkpoint)
        if received is None:
            yield Step(f"{new} never received the shutdown checkpoint: restarting {old} as "
                       "the primary")
            await host.remove_standby_signal()
            await host.start()
            cluster.unfence(old)
            raise PgActionError(
                f"switchover aborted: {new} did not receive {old}'s shutdown checkpoint "
                f"{format_lsn(checkpoint)}; {old} was restarted as the primary, nothing was "
                "lost; check replication with `sfops pg status`")
        yield Step(f"{new}: received {format_lsn(received)} ≥ shutdown checkpoint: nothing "
                   "can be lost")
        yield await self._recheck_before_promotion(old)
        async for step in promote(cluster, new, self.old_timeline):
            yield step
        yield Step(f"write outage so far {time.monotonic() - started:.2f} s; rejoining {old}")
        try:
            async for step in rejoin(cluster, old, new):
                yield step
        except (PgActionError, HostError) as exc:
            raise PgActionError(f"{new} is the primary and accepts writes, but {old} did not "
                                f"rejoin: {exc}; it stays fenced: fix the cause, then "
                                f"`sfops pg rejoin {old}`") from None

    async def verify(self) -> list[CheckResult]:
        results = await _verify_primary(self.cluster, self.to, self.old_timeline,
                                        [self.primary] if self.primary else [])
        if self.primary:
            results.append(await _verify_streaming(self.cluster, self.primary, self.to))
        return results


async def _verify_streaming(cluster: ClusterOps, name: str, primary: str) -> CheckResult:
    status = await cluster.read(name)
    label = f"{name} streams from {primary}"
    if status.is_standby and status.streaming:
        sender = status.wal_receiver
        port = sender.sender_port if sender else None
        if port is not None and port != cluster.member(primary).port:
            return CheckResult.failed(label, f"streams from port {port}")
        return CheckResult.passed(label, f"timeline {status.timeline}")
    return CheckResult.failed(label, status.error or f"{status.role.value}, not streaming")


# --------------------------------------------------------------------------- rejoin


class Rejoin(_PgAction):
    """Make a former primary (or a lost standby) a streaming standby of the current primary."""

    name: ClassVar[str] = "pg.rejoin"
    destructive: ClassVar[bool] = True

    def __init__(self, cluster: ClusterOps, member: str) -> None:
        super().__init__(cluster, member, {"member": member})
        self.member = member
        self.primary: str | None = None

    def describe(self) -> str:
        return f"rejoin {self.member} as a standby of the primary (pg_rewind if needed)"

    async def preflight(self) -> list[CheckResult]:
        self.checks = checks = []
        if (unknown := self._known(self.member)) is not None:
            checks.append(unknown)
            return checks
        self.statuses = statuses = await self.cluster.read_all()
        primaries = [m for m in statuses.values() if m.is_primary and m.name != self.member]
        if len(primaries) != 1:
            checks.append(CheckResult.failed(
                CHECK_ONE_PRIMARY, "no other reachable primary to follow" if not primaries
                else "several primaries: " + ", ".join(m.name for m in primaries)))
            return checks
        primary = primaries[0]
        self.primary = primary.name
        checks.append(CheckResult.passed(CHECK_ONE_PRIMARY,
                                         f"{primary.name}, timeline {primary.timeline}"))
        status = statuses[self.member]
        if status.is_primary:
            checks.append(CheckResult.warned(
                CHECK_NOT_PRIMARY, f"{self.member} answers as a primary too (split brain): "
                "rejoining stops it and rewinds away its divergent writes"))
        else:
            checks.append(CheckResult.passed(
                CHECK_NOT_PRIMARY, status.role.value if status.reachable else "down"))
        if _already_follows(status, primary, self.cluster.fenced_members()):
            checks.append(CheckResult.failed(
                CHECK_NEEDS_REJOIN, f"{self.member} already streams from {primary.name} on "
                f"timeline {primary.timeline}: nothing to do"))
        else:
            checks.append(CheckResult.passed(CHECK_NEEDS_REJOIN, "not streaming from the "
                                             "primary" if status.reachable else "down"))
        problem = await host_problem(self.cluster, self.member)
        checks.append(CheckResult.passed(CHECK_MEMBER_HOST, "commands run there")
                      if problem is None else CheckResult.failed(CHECK_MEMBER_HOST, problem))
        checks.append(self.worst_case().check())
        return checks

    def worst_case(self) -> WorstCase:
        read = worst.status_read(self.cluster)
        return WorstCase((
            ("re-check", read),
            ("rejoin", worst.rejoin(self.cluster, self.member)),
            ("verify", read),
        ), _worst_note(self.cluster))

    async def recheck(self) -> list[CheckResult]:
        """Right before the change: the primary is still the primary and the member is still
        not its streaming standby (two reads)."""
        if self.primary is None:
            return []
        primary, status = await asyncio.gather(self.cluster.read(self.primary),
                                               self.cluster.read(self.member))
        results = [_still_primary(primary)]
        if primary.is_primary and _already_follows(status, primary,
                                                   self.cluster.fenced_members()):
            results.append(CheckResult.failed(
                CHECK_NEEDS_REJOIN, f"{self.member} streams from {primary.name} on timeline "
                f"{primary.timeline} now: nothing to do"))
        else:
            results.append(CheckResult.passed(CHECK_NEEDS_REJOIN,
                                              f"{self.member} is {_state(status)}"))
        self.rechecked = results
        return results

    async def _plan(self) -> list[str]:
        """The rejoin's steps: rewind or not, the primary_conninfo and slot it gets."""
        if self.primary is None:
            return ["nothing: the preflight found no primary to follow"]
        return await rejoin_plan(self.cluster, self.member, self.primary,
                                 await self._statuses())

    async def execute(self) -> AsyncIterator[Step]:
        self._refuse_unsafe()
        if self.primary is None:
            raise PgActionError("no primary known: run the preflight first")
        async for step in rejoin(self.cluster, self.member, self.primary):
            yield step

    async def verify(self) -> list[CheckResult]:
        if self.primary is None:
            return []
        return [await _verify_streaming(self.cluster, self.member, self.primary)]
