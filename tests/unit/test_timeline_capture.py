"""The status before and after an action (backends.timeline.capture) through the real
ActionRunner and its observers: the CLI's way (a reading beside the preflight, a fresh one
after), the TUI's way (its last snapshot before), nothing for a refused action, and an
observer that fails never changes the outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from backends.actions import Action, ActionRunner, CheckResult, Step
from backends.audit import AuditLog
from backends.nginx.model import MemberState, summarize_status
from backends.snapshot import Snapshot
from backends.timeline.capture import ActionSnapshots
from backends.timeline.observer import TimelineWriter
from backends.timeline.store import TimelineStore
from tests.unit.test_timeline_changes import member, nginx

UP = nginx(member("api-1", MemberState.UP), member("api-2", MemberState.UP))
DRAINED = nginx(member("api-1", MemberState.UP), member("api-2", MemberState.DRAINED))


class FakeNginx:
    name, title, breaker, contact_timeout = "nginx", "Load balancer", None, 1.0

    def __init__(self) -> None:
        self.status = UP
        self.polls = 0

    async def contact(self) -> None:
        return None

    async def poll(self) -> Any:
        self.polls += 1
        return self.status

    def summarize(self, snapshot: Snapshot[Any]) -> Any:
        return summarize_status(snapshot.best)

    async def close(self) -> None:
        return None


class Source:
    """The CLI's context: services only (no live snapshots)."""

    def __init__(self, service: FakeNginx) -> None:
        self._service = service

    def service(self, backend: str) -> FakeNginx:
        assert backend == "nginx"
        return self._service


class LiveSource(Source):
    """The TUI: its last snapshot of each backend."""

    def __init__(self, service: FakeNginx, last: Snapshot[Any]) -> None:
        super().__init__(service)
        self.last = last

    def last_snapshot(self, backend: str) -> Snapshot[Any]:
        return self.last


class Drain(Action):
    name = "nginx.drain"  # a contract's action: the capture finds its backend by it

    def __init__(self, service: FakeNginx, *, refuse: bool = False) -> None:
        super().__init__("api-2")
        self.service, self.refuse = service, refuse

    async def preflight(self) -> list[CheckResult]:
        return [CheckResult.failed("another healthy member", "no")] if self.refuse else []

    async def execute(self) -> AsyncIterator[Step]:
        self.service.status = DRAINED
        yield Step("drained")


class Broken:
    async def action_event(self, event: str, action: Action,
                           record: Mapping[str, Any]) -> None:
        raise RuntimeError("observer bug")


async def run(tmp_path, source: Source, action: Drain) -> tuple[Any, TimelineStore]:
    writer = TimelineWriter(TimelineStore(tmp_path / "t.sqlite3"))
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"),
                          observers=[Broken(), ActionSnapshots(writer, source, None)])
    result = await runner.run(action)
    await writer.stop()
    return result, TimelineStore(tmp_path / "t.sqlite3").open()


def member_states(status: Any) -> dict[str, str]:
    return {m["name"]: m["state"] for m in status["members"]}


async def test_cli_way_before_beside_the_preflight_after_fresh_both_recorded(tmp_path):
    service = FakeNginx()
    result, store = await run(tmp_path, Source(service), Drain(service))
    assert result.ok  # the broken observer changed nothing
    before, after = store.snapshots(0)
    started = next(r for r in AuditLog(tmp_path / "audit.jsonl").records()
                   if r["event"] == "started")
    assert (before.phase, after.phase) == ("before", "after")
    assert before.action_id == after.action_id == started["id"]
    assert member_states(before.status)["api-2"] == "up"
    assert member_states(after.status)["api-2"] == "drained"
    assert before.summary["health"] == "ok" and after.ok
    # Both readings are timeline readings too: the drain shows without any TUI watching.
    assert [e.message for e in store.events(0)] == ["api-2 up → drained"]
    assert service.polls == 2


async def test_tui_way_before_is_the_last_snapshot_not_a_new_reading(tmp_path):
    service = FakeNginx()
    last = Snapshot.success(UP)
    result, store = await run(tmp_path, LiveSource(service, last), Drain(service))
    assert result.ok
    before, after = store.snapshots(0)
    assert before.taken_at == last.taken_at.timestamp()
    assert member_states(after.status)["api-2"] == "drained"
    assert service.polls == 1  # only the "after" reading


async def test_a_refused_action_keeps_no_snapshot(tmp_path):
    service = FakeNginx()
    result, store = await run(tmp_path, Source(service), Drain(service, refuse=True))
    assert result.outcome.value == "refused"
    assert store.snapshots(0) == []
