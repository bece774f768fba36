"""``sfops verify`` as an Action, and the ActionRunner's after-action hook.

The canary writes (a row in the API's ``canary`` table, a record on the events topic), so it
is a mutating action like any other: read-only mode refuses it — an SRE handed a read-only
rotation expects it to write nothing at all, canary data included — and each run leaves one
audit record (action ``verify``, its hops as the verify checks, the report as
``write_path``). It locks nothing (each run writes its own key) and asks for no confirmation.

After every other mutating action that succeeded, :class:`WritePathCheck` runs the same canary
and the action's audit record carries its report: an action whose write path fails afterwards
is "done, but users cannot write", with the hop that failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from backends.actions import Action, CheckResult, Outcome, Step, StepCallback, WorstCase
from backends.secrets import Secret
from backends.writepath.canary import Canary, WritePathReport, new_key
from backends.writepath.config import VerifySettings

if TYPE_CHECKING:
    from backends.config import SfopsConfig

ACTION_NAME = "verify"
TARGET = "write-path"
READ_ONLY_REASON = ("the canary writes a row to PostgreSQL and a record to Kafka (canary data "
                    "only, but a write)")


class VerifyWritePath(Action):
    name: ClassVar[str] = ACTION_NAME
    mutating: ClassVar[bool] = True  # canary data only, but a write: refused in read-only

    def __init__(self, canary: Canary, key: str | None = None) -> None:
        self.canary = canary
        self.key = key or new_key()
        super().__init__(TARGET, {"url": canary.shown_url, "timeout": canary.timeout,
                                  "key": self.key})
        self.report: WritePathReport | None = None

    def describe(self) -> str:
        return f"verify the write path through {self.canary.shown_url} (canary {self.key})"

    async def preflight(self) -> list[CheckResult]:
        return [CheckResult.passed(
            "canary", f"writes key {self.key}: one row in table canary (deleted by the API "
            "after its TTL) and one record on the events topic; nothing else"),
            self.worst_case().check()]

    def worst_case(self) -> WorstCase:
        return WorstCase((("canary timeout", self.canary.timeout),),
                         note="every hop and every attempt")

    async def execute(self) -> AsyncIterator[Step]:
        # The canary reports progress through a callback; the runner wants steps yielded
        # (its safe points), so they are passed through a queue.
        steps: asyncio.Queue[Step | None] = asyncio.Queue()
        run = asyncio.create_task(self.canary.run(self.key, on_step=steps.put_nowait))
        run.add_done_callback(lambda _: steps.put_nowait(None))
        try:
            while (step := await steps.get()) is not None:
                yield step
            self.report = await run
        finally:
            if not run.done():  # stopped at a safe point (interrupt): stop the canary too
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

    async def verify(self) -> list[CheckResult]:
        if self.report is None:
            return [CheckResult.failed("write path", "the canary did not finish")]
        return self.report.checks()

    async def would_change(self) -> list[str]:
        return [f"POST {self.canary.shown_url}/canary/{self.key}: one canary row and one "
                "Kafka record"]


class WritePathCheck:
    """The ActionRunner's hook (``write_path=``): after a mutating action succeeded, send the
    canary and return its report for the action's audit record. For ``verify`` itself, its
    own report, whatever its outcome (no second canary)."""

    def __init__(self, settings: VerifySettings, secrets: Iterable[Secret | str] = ()) -> None:
        self.settings = settings
        self.secrets = list(secrets)

    def canary(self, timeout: float | None = None) -> Canary:
        return Canary(self.settings, secrets=self.secrets, timeout=timeout)

    def announce(self, action: Action) -> list[CheckResult]:
        """The preflight line that says a canary follows (a write of canary data, and time
        beyond the action's own worst case)."""
        if isinstance(action, VerifyWritePath) or not action.mutating:
            return []
        return [CheckResult.passed(
            "then: write path", f"once it succeeded, a canary through "
            f"{self.canary().shown_url} (canary data only), at most "
            f"{self.settings.timeout:g} s more")]

    async def after(self, action: Action, outcome: Outcome,
                    on_step: StepCallback | None) -> WritePathReport | None:
        if isinstance(action, VerifyWritePath):
            return action.report
        if outcome is not Outcome.SUCCEEDED or not action.mutating:
            return None

        def step(shown: Step) -> object:
            return None if on_step is None else on_step(
                replace(shown, message=f"write path: {shown.message}"))

        return await self.canary().run(on_step=step)


def write_path_check(config: SfopsConfig) -> WritePathCheck | None:
    """The hook for a runner of ``config``: None when ``[verify]`` is absent or disabled, or
    in read-only mode (which writes nothing)."""
    settings = config.verify
    if settings is None or not settings.enabled or config.sfops.read_only:
        return None
    return WritePathCheck(settings, config.secrets())


def done_but_cannot_write(report: WritePathReport | None) -> str | None:
    """"done, but users cannot write — <hop>: <reason>" for an action that succeeded whose
    write path then failed; None otherwise."""
    if report is None or report.ok:
        return None
    return f"done, but users cannot write — {report.problem()}"


__all__ = ["READ_ONLY_REASON", "VerifyWritePath", "WritePathCheck", "done_but_cannot_write",
           "write_path_check"]
