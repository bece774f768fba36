"""Actions (preflight → execute → verify) and the runner that guards and audits them.

The CLI and the TUI run the same :class:`Action` objects through the same
:class:`ActionRunner`, so the guards live here and not in either front end: read-only mode
refuses to *build* a mutating action, a failed preflight check refuses the run unless forced,
and every run — succeeded, failed, refused, cancelled or interrupted — leaves exactly one
final audit record. A run that gets past its preflight first writes its intent (a "started"
record, fsynced) and does not start when that write fails; the final record refers to it.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import getpass
import inspect
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from backends.audit import AuditLog, AuditRecord, StartedRecord, now_iso
from backends.config import REDACTED, Secret
from backends.secrets import redact_known

if TYPE_CHECKING:
    from collections.abc import Sequence

    from backends.locks import HeldLocks, LockKey, LockManager
    from backends.topology.view import LayerView
    from backends.writepath.action import WritePathCheck
    from backends.writepath.canary import WritePathReport

log = logging.getLogger(__name__)


class CheckStatus(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """One named preflight/verify check, e.g. ``("replica streaming", PASS, "lag 0 B")``."""

    name: str
    status: CheckStatus
    detail: str = ""

    @classmethod
    def passed(cls, name: str, detail: str = "") -> CheckResult:
        return cls(name, CheckStatus.PASS, detail)

    @classmethod
    def warned(cls, name: str, detail: str = "") -> CheckResult:
        return cls(name, CheckStatus.WARN, detail)

    @classmethod
    def failed(cls, name: str, detail: str = "") -> CheckResult:
        return cls(name, CheckStatus.FAIL, detail)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail}


@dataclass(frozen=True)
class Step:
    """A progress report from ``execute()``; ``fraction`` in [0, 1] when known."""

    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class WorstCase:
    """The longest a run can take from confirmation to its outcome (re-check, execute, a
    restore on failure, verify), added up from the action's real timeouts. The preflight
    shows it as the check "worst case", e.g. ``75 s: drain timeout 60 s + 5 host steps ≤
    3 s each``."""

    parts: tuple[tuple[str, float], ...]
    note: str = ""  # what one of the parts is made of, e.g. what bounds a host step

    @property
    def seconds(self) -> float:
        return sum(seconds for _, seconds in self.parts)

    def __str__(self) -> str:
        text = f"{self.seconds:.0f} s: " + " + ".join(
            f"{name} {seconds:.0f} s" for name, seconds in self.parts if seconds > 0)
        return f"{text} ({self.note})" if self.note else text

    def check(self) -> CheckResult:
        return CheckResult.passed("worst case", str(self))


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A preflight check failed and the run was not forced, or its start could not be
    # recorded (the audit log is not writable): either way nothing was changed.
    REFUSED = "refused"
    CANCELLED = "cancelled"  # the run's task was cancelled
    INTERRUPTED = "interrupted"  # stopped at a safe point on request (shutdown), or Ctrl-C


class ReadOnlyError(Exception):
    """A mutating action was requested in read-only mode."""


class RecheckFailed(Exception):
    """A re-check right before a later change of :meth:`Action.execute` failed: the action
    stopped there, without that change. ``left`` says plainly what the target was left in
    (e.g. "pg-1 fenced, nothing promoted: …"); the runner shows the message as the last
    step and records it as the run's error."""

    def __init__(self, change: str, failing: Sequence[CheckResult], left: str) -> None:
        self.change, self.failing, self.left = change, list(failing), left
        reasons = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failing)
        super().__init__(f"re-check before {change} failed ({reasons}): stopped without "
                         f"{change}; {left}")


class Action(abc.ABC):
    """Base for every operation. Subclasses set ``name`` (e.g. ``"nginx.drain"``) and the
    flags, take their dependencies (adapter, executor) in ``__init__`` and call
    ``super().__init__(target, params)``."""

    name: ClassVar[str] = "action"
    mutating: ClassVar[bool] = True
    destructive: ClassVar[bool] = False  # confirmation requires typing the target's name
    secret_params: ClassVar[frozenset[str]] = frozenset()
    # The locks the runner took for this action (backends.locks); released when it is closed.
    held_locks: HeldLocks | None = None
    # The other layers' latest statuses, for the blast-radius checks of its preflight
    # (backends.topology); set by ActionSpec.make, None when built without a context (unit
    # tests of one action): then those checks are left out.
    layers: LayerView | None = None
    # Set by the runner before execute(): the run was forced. A re-check during execute()
    # then stops it only for the action's hard checks, as the preflight refused only for them.
    forced: bool = False

    def __init__(self, target: str, params: Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.params: dict[str, Any] = dict(params or {})
        # The re-checks read during execute() right before its later changes
        # (:meth:`recheck_before`); the audit record keeps them as "re-check: …".
        self.step_rechecks: list[CheckResult] = []

    def describe(self) -> str:
        """One line for the confirmation dialog: what this will do."""
        return f"{self.name} {self.target}"

    @property
    def confirmation_phrase(self) -> str | None:
        """What the user must type to confirm, or None when a yes/no is enough."""
        return self.target if self.destructive else None

    async def preflight(self) -> list[CheckResult]:
        return []

    async def identify(self) -> None:
        """Read what :meth:`locks` needs to name the target as every operator would (e.g. a
        Kafka cluster's id, whatever bootstrap list each configuration has). Runs right
        before the locks are taken; an exception refuses the action (no lock, no change)."""
        return None

    def locks(self) -> Sequence[LockKey]:
        """What this action locks from before its preflight to its end (backends.locks): one
        key per target it changes — a PostgreSQL cluster, an nginx upstream file, a Kafka
        cluster, a Kubernetes deployment or node. Read-only actions lock nothing."""
        return ()

    @abc.abstractmethod
    def execute(self) -> AsyncIterator[Step]:
        """Do the work, yielding progress. Between two steps is a safe point: the runner may
        stop there (closing the generator) when an interruption is requested."""

    async def verify(self) -> list[CheckResult]:
        return []

    async def recheck(self) -> list[CheckResult]:
        """The named critical conditions, read again right before the change (the preflight
        the operator confirmed may be minutes old). Cheap and few: not the whole preflight."""
        return []

    def recheck_before(self, change: str, checks: Sequence[CheckResult], *, left: str,
                       hard: Collection[str] = ()) -> Step:
        """For a multi-step :meth:`execute`: the conditions another actor can change, read
        again right before its later ``change`` (e.g. "promoting pg-2") — the same helpers as
        :meth:`recheck`, not a second copy. They are kept for the audit record ("re-check:
        …", their detail saying before what); when one failed (when the run was forced: one
        named in ``hard``) :class:`RecheckFailed` is raised, saying what the target is
        ``left`` in, and nothing more is changed. Else the step to report."""
        self.step_rechecks += [replace(c, detail=f"before {change}: {c.detail}" if c.detail
                                       else f"before {change}") for c in checks]
        failing = [c for c in checks if c.status is CheckStatus.FAIL
                   and (not self.forced or c.name in hard)]
        if failing:
            raise RecheckFailed(change, failing, left)
        return Step(f"re-checked before {change}: " + "; ".join(
            c.detail or c.name for c in checks))

    async def would_change(self) -> list[str]:
        """Exactly what :meth:`execute` would change, for ``--dry-run`` (the upstream-file
        diff, the replica-order changes, the patch body, the pods to evict). Reads only."""
        return [self.describe()]

    def worst_case(self) -> WorstCase | None:
        """The longest a run can take once confirmed, from the action's own timeouts (its
        preflight shows it as the check "worst case"); None when not stated. Pure."""
        return None

    async def close(self) -> None:
        """Release what the action holds (connections, worker processes). The runner calls it
        in ``finally``; front ends call it for an action they built but did not run. It may
        be called more than once."""
        return None

    def redacted_params(self) -> dict[str, Any]:
        return {
            key: REDACTED if key in self.secret_params or isinstance(value, Secret) else value
            for key, value in self.params.items()
        }

    def secret_values(self) -> list[str]:
        values = [v.reveal() if isinstance(v, Secret) else str(v)
                  for k, v in self.params.items() if k in self.secret_params]
        values += [v.reveal() for v in self.params.values() if isinstance(v, Secret)]
        return values


A = TypeVar("A", bound=Action)


@dataclass(frozen=True)
class RunResult:
    action: str
    target: str
    outcome: Outcome
    error: str | None
    forced: bool
    preflight: list[CheckResult]
    verify: list[CheckResult]
    steps: int
    duration_s: float
    started_at: str = field(default_factory=now_iso)
    # The canary sent after the action (backends.writepath): None when none was sent.
    write_path: WritePathReport | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED


StepCallback = Callable[[Step], object]
# The longest a run waits for its observers at one milestone (each bounds its own reads).
OBSERVER_TIMEOUT = 15.0


class RunObserver(Protocol):
    """Told of a run's milestones — ``preparing`` (before the lock and preflight),
    ``started`` (the intent record is on disk; ``record`` holds its ``id``) and ``finished``
    (the final record) — e.g. to keep the status before and after each action
    (backends.timeline.capture). It never changes the run: it is bounded by
    OBSERVER_TIMEOUT and its errors are logged."""

    async def action_event(self, event: str, action: Action,
                           record: Mapping[str, Any]) -> None: ...


@dataclass
class _Progress:
    steps: int = 0
    verify: list[CheckResult] = field(default_factory=list)
    started_id: str | None = None  # the intent record, once written
    not_recorded: bool = False  # the intent record could not be written: nothing started
    write_path: WritePathReport | None = None  # the canary after the action (issue #17)


def _failing(checks: Iterable[CheckResult]) -> list[CheckResult]:
    return [c for c in checks if c.status is CheckStatus.FAIL]


def _summarise(prefix: str, failing: list[CheckResult]) -> str:
    return prefix + "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failing)


class ActionRunner:
    def __init__(
        self,
        audit: AuditLog,
        *,
        read_only: bool = False,
        user: str | None = None,
        host: str | None = None,
        secrets: Iterable[Secret | str] = (),
        clock: Callable[[], float] = time.monotonic,
        locks: LockManager | None = None,
        write_path: WritePathCheck | None = None,
        observers: Iterable[RunObserver] = (),
    ) -> None:
        self.audit = audit
        self.write_path = write_path  # None: no canary after actions (backends.writepath)
        self.observers = list(observers)
        self.locks = locks  # None: nothing is locked (unit tests of single actions)
        self.read_only = read_only
        self.user = user or _current_user()
        self.host = host or socket.gethostname()
        self.secrets = list(secrets)
        self._clock = clock
        self._interrupt = asyncio.Event()

    def check_allowed(self, action_cls: type[Action]) -> None:
        if self.read_only and action_cls.mutating:
            raise ReadOnlyError(f"{action_cls.name}: refused, sfops is in read-only mode")

    def build(self, action_cls: type[A], *args: Any, **kwargs: Any) -> A:
        """Construct an action, refusing mutating ones in read-only mode."""
        self.check_allowed(action_cls)
        return action_cls(*args, **kwargs)

    def interrupt(self) -> None:
        """Ask running actions to stop at their next safe point (between two steps)."""
        self._interrupt.set()

    def _redact(self, text: str, action: Action) -> str:
        return redact_known(text, [*self.secrets, *action.secret_values()])

    def _redact_checks(self, checks: Iterable[CheckResult], action: Action) -> list[CheckResult]:
        """Check details as every front end shows them: redacted (a detail may quote a
        server's error or a conninfo)."""
        return [replace(c, detail=self._redact(c.detail, action)) if c.detail else c
                for c in checks]

    async def run(
        self, action: Action, *, force: bool = False, on_step: StepCallback | None = None,
        preflight: Iterable[CheckResult] | None = None,
    ) -> RunResult:
        """Preflight, then (unless refused) execute and verify; one audit record always; the
        action is closed at the end.

        ``preflight`` is the result the operator already saw and confirmed: it is not run
        again (a failover would pay its unreachable-primary window twice), it is what the
        audit record holds, and only the action's :meth:`~Action.recheck` conditions are read
        again right before the change (their results are added, prefixed "re-check").

        Errors become a ``failed`` result with a redacted message. Cancellation and
        KeyboardInterrupt/SystemExit are recorded and then re-raised."""
        self.check_allowed(type(action))  # defence in depth: built elsewhere, still refused
        started, started_iso = self._clock(), now_iso()
        outcome, error = Outcome.FAILED, None
        checks: list[CheckResult] = []
        progress = _Progress()
        try:
            if preflight is None:
                checks = await self.prepare(action)
            else:  # its locks were taken by the front end's prepare() (if not: now)
                checks = list(preflight)
                if not refusing(checks, force=force):
                    checks = [*await self.take_locks(action), *checks]
                if not (_failing(checks) and not force):
                    checks += [CheckResult(f"re-check: {c.name}", c.status, c.detail)
                               for c in self._redact_checks(await action.recheck(), action)]
            checks += _lost_lock_check(action)  # e.g. while the operator read the preflight
            failing = refusing(checks, force=force)
            if failing:
                outcome = Outcome.REFUSED
                error = self._redact(_summarise("preflight failed: ", failing), action)
            elif (error := await self._record_start(action, checks, force, progress,
                                                    lock=_lock_record(action))):
                outcome = Outcome.REFUSED  # the intent is not on disk: nothing may change
            else:
                await self._tell("started", action, {"id": progress.started_id})
                action.forced = force
                outcome, error = await self._execute(action, on_step, progress)
                progress.write_path = await self._check_write_path(action, outcome, on_step)
        except asyncio.CancelledError:
            if outcome is not Outcome.SUCCEEDED:  # else only its write-path canary was cut
                outcome, error = Outcome.CANCELLED, "cancelled"
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            outcome, error = Outcome.INTERRUPTED, type(exc).__name__
            raise
        except Exception as exc:
            outcome = Outcome.FAILED
            error = self._redact(f"{type(exc).__name__}: {exc}", action)
        finally:
            checks = [*checks, *self._step_rechecks(action)]
            result_ = replace(self._result(action, outcome, error, force, checks,
                                           progress.verify, progress.steps, started,
                                           started_iso), write_path=progress.write_path)
            try:
                record = await self._record(action, result_, progress)
                await self._tell("finished", action, record)
            finally:
                await close_quietly(action)
        return result_

    def _step_rechecks(self, action: Action) -> list[CheckResult]:
        """The re-checks read during execute() before its later changes, recorded after the
        preflight and the first re-check, prefixed "re-check" as that one is."""
        return [CheckResult(f"re-check: {c.name}", c.status, c.detail) for c in
                self._redact_checks(getattr(action, "step_rechecks", ()), action)]

    async def _check_write_path(self, action: Action, outcome: Outcome,
                                on_step: StepCallback | None) -> WritePathReport | None:
        """Issue #17: after a mutating action succeeded, can users still write? The canary
        (backends.writepath) is bounded by its own timeout and never raises."""
        if self.write_path is None:
            return None
        return await self.write_path.after(action, outcome, on_step)

    async def _tell(self, event: str, action: Action, record: Mapping[str, Any]) -> None:
        for observer in self.observers:
            try:
                async with asyncio.timeout(OBSERVER_TIMEOUT):
                    await observer.action_event(event, action, record)
            except Exception as exc:  # the class only: a message may carry a secret
                log.warning("run observer %s at %s failed: %s", type(observer).__name__,
                            event, type(exc).__name__)

    # -- the intent record (issue #14) ------------------------------------------------------
    async def _record_start(self, action: Action, checks: list[CheckResult], force: bool,
                            progress: _Progress, lock: Mapping[str, Any] | None = None,
                            ) -> str | None:
        """Write the fsynced "started" record before the first change; None when it is on
        disk, else the error that keeps the action from starting. ``lock``: the lock held
        for the target, recorded with the intent."""
        record = StartedRecord(
            user=self.user, host=self.host, action=action.name, target=action.target,
            params=action.redacted_params(), forced=force,
            preflight=[self._check_json(c, action) for c in checks], lock=lock,
        )
        # Known before the write: cancelled while it is under way (shielded, it completes),
        # the final record still refers to it.
        progress.started_id = record.id
        try:
            await asyncio.shield(self.audit.write(record))
        except OSError as exc:
            progress.started_id, progress.not_recorded = None, True
            reason = exc.strerror or type(exc).__name__
            return self._redact(f"not started: cannot write the audit log {self.audit.path} "
                                f"({reason}); nothing was changed", action)
        return None

    # -- locks (backends.locks) --------------------------------------------------------------
    async def prepare(self, action: Action) -> list[CheckResult]:
        """Take the action's locks, then run its preflight: what a front end shows before
        asking for confirmation. A busy target's lock check fails, naming the holder, and the
        preflight is not run. The locks stay held until the action is closed (the end of
        :meth:`run`, or the front end's ``close_quietly`` for an action never run)."""
        await self._tell("preparing", action, {})
        checks = await self.take_locks(action)
        if _failing(checks):
            return self._redact_checks(checks, action)
        after = [] if self.write_path is None else self.write_path.announce(action)
        return self._redact_checks([*checks, *await action.preflight(), *after], action)

    async def take_locks(self, action: Action) -> list[CheckResult]:
        """The lock checks (recorded with the preflight); nothing when none are configured
        or the action already holds its locks."""
        if action.held_locks is not None:
            return []
        keys, checks = await self._lock_keys(action)
        if checks or not keys or self.locks is None:
            return checks
        held = await self.locks.acquire(keys, user=self.user, host=self.host,
                                        action=f"{action.name} {action.target}")
        if not held.refused:
            action.held_locks = held
        return held.checks

    async def peek_locks(self, action: Action) -> list[CheckResult]:
        """For ``--dry-run``: whether the action's locks are free, naming the holder when
        not, without holding them (backends.locks.LockManager.peek)."""
        keys, checks = await self._lock_keys(action)
        if checks or not keys or self.locks is None:
            return checks
        return await self.locks.peek(keys, user=self.user, host=self.host,
                                     action=f"{action.name} {action.target}")

    async def _lock_keys(self, action: Action) -> tuple[list[LockKey], list[CheckResult]]:
        """The action's lock keys, or the failed lock check that refuses it; nothing when no
        locks are configured or the action changes nothing."""
        from backends.locks import CHECK_NAME

        if self.locks is None or not action.mutating:
            return [], []
        try:
            await action.identify()
            return list(action.locks()), []
        except Exception as exc:  # the action is refused, the cause named
            detail = self._redact(f"cannot name the target to lock: {exc}", action)
            return [], [CheckResult.failed(CHECK_NAME, detail)]

    async def _execute(
        self, action: Action, on_step: StepCallback | None, progress: _Progress
    ) -> tuple[Outcome, str | None]:
        interrupted = False
        lost: str | None = None
        stopped: RecheckFailed | None = None
        generator = action.execute()
        try:
            async for step in generator:
                progress.steps += 1
                await self._show(step, action, on_step)
                if self._interrupt.is_set() or (lost := _lock_lost(action)):
                    interrupted = True
                    break
        except RecheckFailed as exc:
            stopped = exc
        finally:
            await _aclose(generator)  # runs the action's own cleanup at the safe point
        if stopped is not None:  # what the target was left in: the last step, and the error
            message = self._redact(str(stopped), action)
            await self._show(Step(message), action, on_step)
            return Outcome.FAILED, message
        if lost:
            return Outcome.INTERRUPTED, self._redact(f"stopped at a safe point: lock lost: "
                                                     f"{lost}", action)
        if interrupted:
            return Outcome.INTERRUPTED, "stopped at a safe point on request"
        progress.verify = self._redact_checks(await action.verify(), action)
        if failing := _failing(progress.verify):
            return Outcome.FAILED, self._redact(_summarise("verification failed: ", failing),
                                                action)
        return Outcome.SUCCEEDED, None

    async def _show(self, step: Step, action: Action, on_step: StepCallback | None) -> None:
        if on_step is not None:
            shown = on_step(replace(step, message=self._redact(step.message, action)))
            if inspect.isawaitable(shown):
                await shown

    def _result(self, action: Action, outcome: Outcome, error: str | None, force: bool,
                preflight: list[CheckResult], verify: list[CheckResult], steps: int,
                started: float, started_iso: str) -> RunResult:
        return RunResult(
            action=action.name, target=action.target, outcome=outcome, error=error,
            forced=force, preflight=preflight, verify=verify, steps=steps,
            duration_s=max(0.0, self._clock() - started), started_at=started_iso,
        )

    async def _record(self, action: Action, result: RunResult, progress: _Progress
                      ) -> dict[str, Any]:
        record = AuditRecord(
            ts=result.started_at,
            user=self.user,
            host=self.host,
            action=result.action,
            target=result.target,
            params=action.redacted_params(),
            forced=result.forced,
            preflight=[self._check_json(c, action) for c in result.preflight],
            verify=[self._check_json(c, action) for c in result.verify],
            outcome=result.outcome.value,
            error=result.error,
            duration_s=result.duration_s,
            steps=result.steps,
            started_id=progress.started_id,
            write_path=None if result.write_path is None else result.write_path.to_json(),
        )
        # Shielded: a second cancellation (e.g. shutdown) must not lose the record; the
        # write thread completes even if this await is abandoned.
        try:
            await asyncio.shield(self.audit.write(record))
        except OSError as exc:
            if not progress.not_recorded:
                raise
            # The log already refused the intent (the result says so): nothing changed.
            log.warning("audit log %s still not writable: %s", self.audit.path,
                        exc.strerror or type(exc).__name__)
        return record.to_json()

    def _check_json(self, check: CheckResult, action: Action) -> dict[str, str]:
        data = check.to_json()
        data["detail"] = self._redact(data["detail"], action)
        return data


async def close_quietly(action: Action, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Close an action and release its locks; a failure to release is logged, never changes
    the outcome."""
    try:
        async with asyncio.timeout(timeout):
            if action.layers is not None:
                await action.layers.close()
            await action.close()
    except Exception as exc:  # the class only: an error message may carry a secret
        log.warning("closing %s %s failed: %s", action.name, action.target, type(exc).__name__)
    finally:
        held, action.held_locks = action.held_locks, None
        if held is not None:
            # Shielded: a second cancellation must not leave a lock process or a Lease held.
            await asyncio.shield(held.release())


def refusing(checks: Iterable[CheckResult], *, force: bool) -> list[CheckResult]:
    """The failed checks that refuse a run: all of them unless forced; a busy target (its
    lock check) even when forced."""
    from backends.locks import CHECK_NAME

    failing = _failing(checks)
    return failing if not force else [c for c in failing if c.name == CHECK_NAME]


def _lock_lost(action: Action) -> str | None:
    return None if action.held_locks is None else action.held_locks.lost


def _lock_record(action: Action) -> dict[str, Any] | None:
    """The lock held for the target, as the intent record keeps it: each key (its name — the
    Lease's and the lock file's — and title), the holder (``user@host``, since when, the
    action, the pid) and the lock checks (where each was taken)."""
    held = action.held_locks
    if held is None:
        return None
    record: dict[str, Any] = {"keys": [{"name": k.name, "title": k.title} for k in held.keys]}
    if held.holder is not None:
        record.update(holder=held.holder.identity, since=held.holder.since,
                      action=held.holder.action, pid=held.holder.pid)
    record["checks"] = [c.to_json() for c in held.checks]
    return record


def _lost_lock_check(action: Action) -> list[CheckResult]:
    """A failed lock check when the lock was lost before the change (refuses, even forced)."""
    from backends.locks import CHECK_NAME

    lost = _lock_lost(action)
    return [] if lost is None else [CheckResult.failed(CHECK_NAME, f"lock lost: {lost}")]


async def _aclose(generator: AsyncIterator[Step]) -> None:
    aclose = getattr(generator, "aclose", None)
    if aclose is not None:
        await aclose()


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
