"""nginx drain/undrain preflights, the re-check before the edit, and --dry-run's diff,
against the fake nginx host of test_nginx_reload (no lab: the cases a real one cannot
produce on demand, such as a colleague draining the others between preflight and change)."""

from __future__ import annotations

from pathlib import Path

from backends.actions import ActionRunner, CheckStatus, Outcome
from backends.audit import AuditLog
from backends.nginx.actions import DrainMember, UndrainMember
from tests.unit.test_nginx_reload import RELOAD, UPSTREAM, FakeNginxHost, service_for


def statuses(checks) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in checks}


async def test_drain_preflight_passes_on_a_healthy_upstream(tmp_path: Path) -> None:
    service = service_for(FakeNginxHost(tmp_path, RELOAD))
    checks = await DrainMember(service, "api-3").preflight()
    assert set(statuses(checks).values()) == {CheckStatus.PASS}, checks
    assert statuses(checks)["another healthy member remains"] is CheckStatus.PASS


async def test_drain_preflight_refuses_an_unknown_member(tmp_path: Path) -> None:
    service = service_for(FakeNginxHost(tmp_path, RELOAD))
    checks = await DrainMember(service, "api-9").preflight()
    failed = [c for c in checks if c.status is CheckStatus.FAIL]
    assert [c.name for c in failed] == ["member configured"]
    assert "api-1, api-2, api-3" in failed[0].detail


async def test_drain_preflight_refuses_the_last_member_up(tmp_path: Path) -> None:
    host = FakeNginxHost(tmp_path, RELOAD)
    host.files[str(tmp_path / "upstream.conf")] = UPSTREAM.replace(
        b"8001;", b"8001 down;").replace(b"8002;", b"8002 down;")
    checks = await DrainMember(service_for(host), "api-3").preflight()
    assert statuses(checks)["another healthy member remains"] is CheckStatus.FAIL


async def test_undrain_warns_when_the_member_is_already_up(tmp_path: Path) -> None:
    checks = await UndrainMember(service_for(FakeNginxHost(tmp_path, RELOAD)),
                                 "api-2").preflight()
    assert statuses(checks)["currently drained"] is CheckStatus.WARN


async def test_dry_run_shows_the_exact_upstream_change_and_changes_nothing(
        tmp_path: Path) -> None:
    host = FakeNginxHost(tmp_path, RELOAD)
    lines = await DrainMember(service_for(host), "api-3", timeout=7).would_change()
    assert "-    server 127.0.0.1:8003;" in lines
    assert "+    server 127.0.0.1:8003 down;" in lines
    assert lines[-1].startswith("then: nginx -t, graceful reload") and "7 s" in lines[-1]
    assert host.upstream == UPSTREAM and host.reloads == 0


async def test_a_colleague_draining_the_others_after_the_preflight_refuses_the_change(
        tmp_path: Path) -> None:
    """Prepare once: the confirmed preflight is not run again, but the named critical
    condition is, right before the edit — and the refusal is audited with both."""
    host = FakeNginxHost(tmp_path, RELOAD)
    action = DrainMember(service_for(host), "api-3")
    confirmed = await action.preflight()
    assert all(c.status is CheckStatus.PASS for c in confirmed)
    drained_meanwhile = UPSTREAM.replace(b"8001;", b"8001 down;").replace(b"8002;",
                                                                          b"8002 down;")
    host.files[str(tmp_path / "upstream.conf")] = drained_meanwhile
    calls = {"preflight": 0}
    original = action.preflight

    async def counted():  # type: ignore[no-untyped-def]
        calls["preflight"] += 1
        return await original()

    action.preflight = counted  # type: ignore[method-assign]
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"))
    result = await runner.run(action, preflight=confirmed)
    assert result.outcome is Outcome.REFUSED and calls["preflight"] == 0
    assert host.upstream == drained_meanwhile and host.reloads == 0
    record = AuditLog(tmp_path / "audit.jsonl").read()[-1]
    names = [c["name"] for c in record["preflight"]]
    assert names[: len(confirmed)] == [c.name for c in confirmed]
    assert "re-check: another healthy member remains" in names


async def test_the_preflight_states_the_worst_case_from_the_real_timeouts(
        tmp_path: Path) -> None:
    """Drain timeout, then each phase's host steps at the executor's bound (the fake host
    states none: its steps count at the control's own timeouts)."""
    service = service_for(FakeNginxHost(tmp_path, RELOAD))
    drain = DrainMember(service, "api-3", timeout=60)
    checks = await drain.preflight()
    assert checks[-1].name == "worst case" and checks[-1].status is CheckStatus.PASS
    worst = drain.worst_case()
    step = service.control.step_bound()
    assert step == 5 + 10  # a read's retry within 5 s, then a 10 s command
    assert worst.seconds == (step + 3.5) + 6 * step + 60 + 6 * step + (3 * step + 7.5)
    assert checks[-1].detail.startswith(f"{worst.seconds:.0f} s: re-check ")
    assert "edit and reload 90 s + drain timeout 60 s + " in checks[-1].detail
    assert str(service.control.executor.host) in checks[-1].detail
    undrain = UndrainMember(service, "api-2", timeout=60)
    assert (await undrain.preflight())[-1].name == "worst case"
    assert undrain.worst_case().seconds == 6 * step + 10 + 2 * step + (3 * step + 7.5)


async def test_preflight_names_an_interrupted_nginx_action(tmp_path: Path) -> None:
    """A drain that was SIGKILLed between its edit and its outcome: the next nginx action's
    preflight warns, naming the record (the file may be edited but not applied)."""
    from backends.audit import StartedRecord, process_identity

    log = AuditLog(tmp_path / "audit.jsonl")
    killed = StartedRecord(user="bob", host="bastion", action="nginx.drain", target="api-2",
                           params={"member": "api-2"}, forced=False, preflight=[],
                           process={**process_identity(), "pid_start": -1})  # gone
    log.append(killed)
    service = service_for(FakeNginxHost(tmp_path, RELOAD))
    checks = await DrainMember(service, "api-3", audit=log).preflight()
    (warned,) = [c for c in checks if c.name == "earlier nginx actions finished"]
    assert warned.status is CheckStatus.WARN
    assert killed.id in warned.detail and "nginx.drain api-2" in warned.detail
    assert "edited but not applied" in warned.detail
    assert CheckStatus.FAIL not in statuses(checks).values()
    # Without one, the check passes.
    clean = AuditLog(tmp_path / "clean.jsonl")
    checks = await DrainMember(service, "api-3", audit=clean).preflight()
    assert statuses(checks)["earlier nginx actions finished"] is CheckStatus.PASS


class TimesHost:
    """Answers the three commands of NginxControl.upstream_vs_running."""

    host = "fake"

    def __init__(self, root: Path, *, mtime: int, now: int, ages: tuple[int, ...]) -> None:
        self.files = {str(root / "nginx.pid"): b"100\n", str(root / "upstream.conf"): UPSTREAM}
        self.mtime, self.now, self.ages = mtime, now, ages

    async def run(self, argv, *, timeout=10.0, input=None, check=False):  # type: ignore
        from backends.executors import CommandResult

        out = {"ps": "".join(f" {101 + i} {age} nginx: worker process\n"
                             for i, age in enumerate(self.ages))
               + " 200 1 nginx: worker process is shutting down\n",
               "stat": f"{self.mtime}\n", "date": f"{self.now}\n"}[argv[0]]
        return CommandResult(tuple(argv), 0, out, "")

    async def read_file(self, path):  # type: ignore[no-untyped-def]
        return self.files[str(path)]


async def test_upstream_file_modified_after_nginx_loaded_it(tmp_path: Path) -> None:
    """An edit on disk that nginx does not run: the file is newer than the running workers
    (the oldest current one: a shutting-down worker of an older generation does not count)."""
    from backends.nginx.control import NginxControl

    config = service_for(FakeNginxHost(tmp_path, RELOAD)).config
    stale = NginxControl(config, TimesHost(tmp_path, mtime=1000, now=1100, ages=(300, 50)))
    assert await stale.upstream_vs_running() == (1000, 800)  # loaded 800, edited 1000
    fresh = NginxControl(config, TimesHost(tmp_path, mtime=1000, now=1100, ages=(100,)))
    assert await fresh.upstream_vs_running() == (1000, 1000)
