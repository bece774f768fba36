from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends.actions import (
    Action,
    ActionRunner,
    CheckResult,
    CheckStatus,
    Outcome,
    ReadOnlyError,
    Step,
)
from backends.audit import AuditLog
from backends.config import Secret

PASSWORD = "pa55-w0rd"


class FakeAction(Action):
    name = "test.change"
    destructive = True
    secret_params = frozenset({"token"})

    def __init__(
        self,
        target: str = "api-3",
        *,
        preflight: list[CheckResult] | None = None,
        verify: list[CheckResult] | None = None,
        fail_at: int | None = None,
        hang_at: int | None = None,
        steps: int = 3,
    ) -> None:
        super().__init__(target, {"token": "tok-123", "password": Secret(PASSWORD), "wait": 5})
        self._preflight = preflight if preflight is not None else [CheckResult.passed("ok")]
        self._verify = verify if verify is not None else [CheckResult.passed("done")]
        self.fail_at = fail_at
        self.hang_at = hang_at
        self.steps = steps
        self.executed: list[int] = []
        self.cleaned_up = False
        self.hanging = asyncio.Event()

    async def preflight(self) -> list[CheckResult]:
        return self._preflight

    async def execute(self) -> AsyncIterator[Step]:
        try:
            for index in range(self.steps):
                if index == self.fail_at:
                    raise RuntimeError(f"connect failed: password={PASSWORD} token tok-123")
                if index == self.hang_at:
                    self.hanging.set()
                    await asyncio.sleep(60)
                self.executed.append(index)
                yield Step(f"step {index}", (index + 1) / self.steps)
        finally:
            self.cleaned_up = True

    async def verify(self) -> list[CheckResult]:
        return self._verify


class ReadAction(FakeAction):
    name = "test.read"
    mutating = False


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl")


def runner_for(audit: AuditLog, **kwargs: Any) -> ActionRunner:
    return ActionRunner(audit, user="alice", host="bastion", **kwargs)


def only_record(audit: AuditLog) -> dict[str, Any]:
    records = audit.read()
    assert len(records) == 1, records
    text = json.dumps(records[0])
    assert PASSWORD not in text and "tok-123" not in text
    return records[0]


async def test_success_streams_steps_and_writes_one_record(audit: AuditLog) -> None:
    runner = runner_for(audit)
    seen: list[Step] = []
    action = runner.build(FakeAction, "api-3")
    result = await runner.run(action, on_step=seen.append)
    assert result.outcome is Outcome.SUCCEEDED and result.ok
    assert [s.message for s in seen] == ["step 0", "step 1", "step 2"]
    assert seen[-1].fraction == 1.0
    rec = only_record(audit)
    assert rec["user"] == "alice" and rec["host"] == "bastion"
    assert rec["action"] == "test.change" and rec["target"] == "api-3"
    assert rec["params"] == {"token": "***", "password": "***", "wait": 5}
    assert rec["forced"] is False
    assert rec["preflight"] == [{"name": "ok", "status": "pass", "detail": ""}]
    assert rec["verify"] == [{"name": "done", "status": "pass", "detail": ""}]
    assert rec["outcome"] == "succeeded" and rec["error"] is None
    assert rec["steps"] == 3
    assert rec["duration_s"] >= 0


async def test_failed_preflight_refuses_and_records(audit: AuditLog) -> None:
    action = FakeAction(preflight=[
        CheckResult.passed("nginx -t"),
        CheckResult.failed("other members healthy", "api-3 is the last healthy member"),
        CheckResult.warned("load", "high"),
    ])
    result = await runner_for(audit).run(action)
    assert result.outcome is Outcome.REFUSED
    assert action.executed == []
    assert result.error == (
        "preflight failed: other members healthy: api-3 is the last healthy member"
    )
    rec = only_record(audit)
    assert rec["outcome"] == "refused" and rec["forced"] is False and rec["steps"] == 0
    assert [c["status"] for c in rec["preflight"]] == ["pass", "fail", "warn"]


async def test_force_overrides_failed_preflight_and_is_recorded(audit: AuditLog) -> None:
    action = FakeAction(preflight=[CheckResult.failed("risky")])
    result = await runner_for(audit).run(action, force=True)
    assert result.outcome is Outcome.SUCCEEDED
    assert action.executed == [0, 1, 2]
    rec = only_record(audit)
    assert rec["forced"] is True and rec["outcome"] == "succeeded"


async def test_warnings_do_not_refuse(audit: AuditLog) -> None:
    result = await runner_for(audit).run(FakeAction(preflight=[CheckResult.warned("lag", "1 MB")]))
    assert result.outcome is Outcome.SUCCEEDED


async def test_exception_becomes_failed_outcome_with_redacted_message(audit: AuditLog) -> None:
    action = FakeAction(fail_at=1)
    result = await runner_for(audit).run(action)
    assert result.outcome is Outcome.FAILED
    assert result.error == "RuntimeError: connect failed: password=*** token ***"
    assert action.cleaned_up
    rec = only_record(audit)
    assert rec["outcome"] == "failed" and rec["steps"] == 1
    assert rec["error"] == result.error


async def test_runner_secrets_are_scrubbed_from_check_details(audit: AuditLog) -> None:
    action = FakeAction(verify=[CheckResult.failed("login", "rejected s3cr3t")])
    result = await runner_for(audit, secrets=[Secret("s3cr3t")]).run(action)
    assert result.outcome is Outcome.FAILED
    assert result.error == "verification failed: login: rejected ***"
    rec = only_record(audit)
    assert rec["verify"][0]["detail"] == "rejected ***"


async def test_cancelled_run_still_writes_its_record(audit: AuditLog) -> None:
    action = FakeAction(hang_at=1)
    task = asyncio.create_task(runner_for(audit).run(action))
    await asyncio.wait_for(action.hanging.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert action.cleaned_up
    rec = only_record(audit)
    assert rec["outcome"] == "cancelled" and rec["steps"] == 1


async def test_interrupt_stops_at_next_safe_point(audit: AuditLog) -> None:
    runner = runner_for(audit)
    action = FakeAction(steps=5)

    def on_step(step: Step) -> None:
        if step.message == "step 1":
            runner.interrupt()

    result = await runner.run(action, on_step=on_step)
    assert result.outcome is Outcome.INTERRUPTED
    assert action.executed == [0, 1]
    assert action.cleaned_up
    assert only_record(audit)["outcome"] == "interrupted"


async def test_read_only_refuses_to_build_mutating_actions(audit: AuditLog) -> None:
    runner = runner_for(audit, read_only=True)
    with pytest.raises(ReadOnlyError, match="read-only"):
        runner.build(FakeAction, "api-3")
    assert isinstance(runner.build(ReadAction, "api-3"), ReadAction)
    # Built elsewhere, still refused at run time.
    with pytest.raises(ReadOnlyError):
        await runner.run(FakeAction())
    assert audit.read() == []


async def test_async_step_callback_and_check_helpers(audit: AuditLog) -> None:
    seen: list[str] = []

    async def on_step(step: Step) -> None:
        seen.append(step.message)

    await runner_for(audit).run(FakeAction(steps=1), on_step=on_step)
    assert seen == ["step 0"]
    assert CheckResult.failed("x").status is CheckStatus.FAIL
    action = FakeAction("pg-2")
    assert action.confirmation_phrase == "pg-2"
    assert ReadAction().confirmation_phrase == "api-3"
    assert action.describe() == "test.change pg-2"
