"""Write-path verification (backends/writepath): hop parsing and failure naming (pure), the
[verify] section, read-only refusal, and the runner's after-action hook recording the canary
in the audit record. The HTTP side of the canary runs against an httpx MockTransport (a fake
API); tests/integration/test_writepath.py runs it through the lab's real nginx, API,
PostgreSQL, Kafka and consumer."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.actions import Action, ActionRunner, CheckStatus, Outcome, ReadOnlyError, Step
from backends.audit import AuditLog
from backends.config import ConfigError, parse
from backends.writepath.action import (
    VerifyWritePath,
    WritePathCheck,
    done_but_cannot_write,
    write_path_check,
)
from backends.writepath.canary import (
    Answer,
    Canary,
    HopStatus,
    WritePathReport,
    consumer_hop,
    new_key,
    post_hops,
)
from backends.writepath.config import VerifySettings
from tui import exitcodes
from tui.commands import _action
from tui.commands.verify import report_rows

URL = "http://lb.example:8080"


def report_body(postgres: dict[str, Any] | None = None,
                kafka: dict[str, Any] | None = None) -> dict[str, Any]:
    hops = [postgres or {"hop": "postgres", "status": "ok", "ms": 2.5}]
    if kafka is not None or postgres is None or postgres.get("status") == "ok":
        hops.append(kafka or {"hop": "kafka", "status": "ok", "ms": 7.0})
    return {"key": "k", "token": "t1", "served_by": "api-2", "ok": True, "api_ms": 11.0,
            "hops": hops}


def statuses(hops: Any) -> dict[str, str]:
    return {h.name: h.status.value for h in hops}


# ------------------------------------------------------------------ hop parsing (pure)


def test_connection_refused_names_nginx() -> None:
    result = post_hops(Answer(error="lb.example:8080: Connection refused", connected=False))
    assert result.failed is not None and result.failed.name == "nginx"
    assert "Connection refused" in result.failed.detail
    assert statuses(result.hops) == {"nginx": "failed", "api": "not reached",
                                     "postgres": "not reached", "kafka": "not reached"}
    assert not result.permanent


def test_no_answer_after_connecting_names_the_api() -> None:
    result = post_hops(Answer(error="no answer within 5.0 s", connected=True, elapsed_ms=5000))
    assert statuses(result.hops)["nginx"] == "ok"
    assert result.failed is not None and result.failed.name == "api"


def test_nginx_answering_itself_names_the_api_hop() -> None:
    result = post_hops(Answer(status=502, served_by=None, elapsed_ms=3.0))
    assert result.failed is not None and result.failed.name == "api"
    assert result.failed.detail == "nginx answered 502 itself: no API worker answered"
    assert not result.permanent  # a worker may be back in a moment: worth another attempt


def test_an_api_without_the_canary_endpoint_is_named_and_not_retried() -> None:
    result = post_hops(Answer(status=404, served_by="api-1", body={"detail": "Not Found"}))
    assert result.failed is not None and result.failed.name == "api"
    assert "api-1: no canary endpoint (404)" in result.failed.detail
    assert result.permanent


def test_postgres_failure_is_named_with_the_servers_reason() -> None:
    body = report_body(postgres={"hop": "postgres", "status": "failed", "ms": 3000.0,
                                 "error": "database is read-only (SQLSTATE 25006)"})
    result = post_hops(Answer(status=200, served_by="api-2", body=body, elapsed_ms=3010.0))
    assert statuses(result.hops) == {"nginx": "ok", "api": "ok", "postgres": "failed",
                                     "kafka": "not reached"}
    assert result.failed is not None
    assert result.failed.detail == "api-2: database is read-only (SQLSTATE 25006)"


def test_kafka_failure_is_named() -> None:
    body = report_body(kafka={"hop": "kafka", "status": "failed", "ms": 9000.0,
                              "error": "delivery failed: NOT_ENOUGH_REPLICAS"})
    result = post_hops(Answer(status=200, served_by="api-3", body=body, elapsed_ms=9100.0))
    assert result.failed is not None and result.failed.name == "kafka"
    assert result.failed.detail == "api-3: delivery failed: NOT_ENOUGH_REPLICAS"
    assert result.token == "t1" and result.served_by == "api-3"


def test_every_hop_timed_when_it_all_works() -> None:
    result = post_hops(Answer(status=200, served_by="api-2", body=report_body(),
                              elapsed_ms=14.2))
    assert result.failed is None
    assert [(h.name, h.ms) for h in result.hops] == [
        ("nginx", 14.2), ("api", 11.0), ("postgres", 2.5), ("kafka", 7.0)]


def test_hostile_server_text_is_made_safe_and_cut() -> None:
    body = report_body(postgres={"hop": "postgres", "status": "failed",
                                 "error": "\x1b]52;c;ZXZpbA==\x07[@click=app.quit]" + "x" * 500})
    hop = post_hops(Answer(status=200, served_by="api\x1b[2J", body=body)).failed
    assert hop is not None
    assert "\x1b" not in hop.detail and "\\x1b" in hop.detail
    assert len(hop.detail) < 420  # worker name and reason, each capped at one line


def test_a_report_that_is_not_one_fails_the_api_hop() -> None:
    result = post_hops(Answer(status=200, served_by="api-1", body={"events": []}))
    assert result.failed is not None and result.failed.name == "api"
    assert result.permanent


def test_consumer_hop_needs_this_writes_token() -> None:
    row = {"token": "t1", "consumed_at": "2026-01-01T00:00:00+00:00", "consumer_ms": 180.4,
           "consumed_by": "streamforge-consumer/42"}
    assert consumer_hop({**row, "token": "older"}, "t1") is None
    assert consumer_hop({**row, "consumed_at": None}, "t1") is None
    assert consumer_hop(None, "t1") is None
    hop = consumer_hop(row, "t1")
    assert hop is not None and hop.status is HopStatus.OK and hop.ms == 180.4
    assert hop.detail == "by streamforge-consumer/42"


def test_report_names_the_first_failing_hop() -> None:
    result = post_hops(Answer(status=200, served_by="api-2", body=report_body(), elapsed_ms=5))
    from backends.writepath.canary import Hop

    report = WritePathReport(URL, "k", (*result.hops, Hop(
        "consumer", HopStatus.FAILED, detail="no consumer recorded it within 5.0 s")), 1, 5.2)
    assert not report.ok and report.failed_hop is not None
    assert report.problem() == "consumer received: no consumer recorded it within 5.0 s"
    assert report.summary() == f"users cannot write: {report.problem()}"
    assert [c.status for c in report.checks()] == [CheckStatus.PASS] * 4 + [CheckStatus.FAIL]
    data = report.to_json()
    assert data["failed_hop"] == "consumer" and data["ok"] is False
    assert [h["hop"] for h in data["hops"]] == ["nginx", "api", "postgres", "kafka", "consumer"]
    assert done_but_cannot_write(report) == f"done, but users cannot write — {report.problem()}"
    assert [row[:2] for row in report_rows(report)][-1] == ("consumer received", "failed")


def test_new_keys_are_identifiers_and_differ() -> None:
    first, second = new_key("bastion 1\x1b"), new_key("bastion 1\x1b")
    assert first != second
    assert all(c.isalnum() or c in "._-" for c in first)


# ------------------------------------------------------------------ the canary over HTTP


class FakeApi:
    """An httpx MockTransport standing in for nginx + the API: ``posts`` answers in turn
    (the last repeats), ``consumed_after`` GETs before the consumer's record shows."""

    def __init__(self, posts: list[Callable[[], httpx.Response]], consumed_after: int = 1,
                 consumer: bool = True) -> None:
        self.posts = posts
        self.consumed_after = consumed_after
        self.consumer = consumer
        self.calls: list[tuple[str, str]] = []
        self.gets = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        if request.method == "POST":
            posted = sum(1 for m, _ in self.calls if m == "POST")
            return self.posts[min(posted, len(self.posts)) - 1]()
        self.gets += 1
        consumed = self.consumer and self.gets > self.consumed_after
        return httpx.Response(200, json={
            "token": "t1", "consumed_at": "2026-01-01T00:00:01Z" if consumed else None,
            "consumer_ms": 120.0 if consumed else None, "consumed_by": "c/1"})

    def canary(self, timeout: float = 5.0, **settings: Any) -> Canary:
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return Canary(VerifySettings(url=URL, timeout=timeout, **settings), client=client,
                      poll_interval=0.01)


def ok_post() -> httpx.Response:
    return httpx.Response(200, json=report_body(), headers={"X-Served-By": "api-2"})


def nginx_502() -> httpx.Response:
    return httpx.Response(502, text="<html>bad gateway</html>")


async def test_canary_is_sent_again_by_key_until_the_path_works() -> None:
    api = FakeApi([nginx_502, nginx_502, ok_post], consumed_after=2)
    steps: list[Step] = []
    report = await api.canary().run("key-1", on_step=steps.append)
    assert report.ok, report.to_json()
    assert report.attempts == 3
    posts = [path for method, path in api.calls if method == "POST"]
    assert posts == ["/canary/key-1"] * 3, "every attempt upserts the same key"
    assert [h.status for h in report.hops] == [HopStatus.OK] * 5
    assert report.hops[-1].ms == 120.0 and report.served_by == "api-2"
    assert any("attempt 1: API handled: failed" in s.message for s in steps)
    assert all(s.fraction is not None and 0 <= s.fraction <= 1 for s in steps)


async def test_no_consumer_record_fails_the_consumer_hop_within_the_timeout() -> None:
    report = await FakeApi([ok_post], consumer=False).canary(timeout=0.3).run("key-2")
    assert not report.ok
    assert report.failed_hop is not None and report.failed_hop.name == "consumer"
    assert report.failed_hop.detail.startswith("no consumer recorded it within")


async def test_consumer_hop_skipped_when_configured_off_or_no_kafka() -> None:
    report = await FakeApi([ok_post], consumer=False).canary(consumer=False).run("k3")
    assert report.ok and report.hops[-1].status is HopStatus.SKIPPED

    def no_kafka() -> httpx.Response:
        body = report_body(kafka={"hop": "kafka", "status": "skipped",
                                  "error": "the API publishes no events"})
        return httpx.Response(200, json=body, headers={"X-Served-By": "api-1"})

    report = await FakeApi([no_kafka], consumer=False).canary().run("k4")
    assert report.ok
    assert statuses(report.hops) == {"nginx": "ok", "api": "ok", "postgres": "ok",
                                     "kafka": "skipped", "consumer": "skipped"}


async def test_a_permanent_failure_is_not_sent_again() -> None:
    api = FakeApi([lambda: httpx.Response(404, json={"detail": "Not Found"},
                                          headers={"X-Served-By": "api-1"})])
    report = await api.canary().run("k5")
    assert report.attempts == 1 and report.failed_hop is not None
    assert report.failed_hop.name == "api"


async def test_the_report_names_the_hop_where_the_write_got_furthest() -> None:
    """A read-only database: the first attempt reaches PostgreSQL and is refused; later ones,
    with less time left, end at the API (its pool reconnecting). The hop that stopped the
    write is PostgreSQL; every attempt is still in the steps."""
    def read_only() -> httpx.Response:
        body = report_body(postgres={"hop": "postgres", "status": "failed", "ms": 5.0,
                                     "error": "database is read-only (SQLSTATE 25006)"})
        return httpx.Response(200, json=body, headers={"X-Served-By": "api-2"})

    steps: list[Step] = []
    report = await FakeApi([read_only, nginx_502]).canary(timeout=0.6).run(
        "k6", on_step=steps.append)
    assert report.attempts > 1 and not report.ok
    assert report.failed_hop is not None and report.failed_hop.name == "postgres"
    assert "read-only" in report.failed_hop.detail
    assert any("attempt 2: API handled: failed" in s.message for s in steps)


async def test_an_unreachable_nginx_is_named_with_the_url_redacted() -> None:
    canary = Canary(VerifySettings(url="http://ops:s3cret-pw@127.0.0.1:9", timeout=0.5),
                    secrets=["s3cret-pw"])
    report = await canary.run("k6")
    assert report.failed_hop is not None and report.failed_hop.name == "nginx"
    assert "s3cret-pw" not in json.dumps(report.to_json())
    assert report.url == "http://ops:***@127.0.0.1:9"


# ------------------------------------------------------------------ [verify] configuration


def load(text: str, tmp_path: Path) -> Any:
    return parse(text, tmp_path / "sfops.toml")


def test_verify_section_defaults_and_url_from_nginx(tmp_path: Path) -> None:
    config = load('[verify]\nurl = "http://127.0.0.1:15400"\n', tmp_path)
    assert config.verify == VerifySettings(url="http://127.0.0.1:15400", timeout=15.0,
                                           enabled=True, consumer=True)
    assert load("", tmp_path).verify is None


def test_verify_url_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load("[verify]\ntimeout = 5\n", tmp_path)
    assert "verify.url: required key is missing" in str(error.value)


@pytest.mark.parametrize(("body", "message"), [
    ('url = "ftp://x"', 'verify.url: expected an http:// or https:// URL, got "ftp://x"'),
    ('url = "http://x"\ntimeout = 0', "verify.timeout: must be > 0, got 0"),
    ('url = "http://x"\ntimeout = 900', "verify.timeout: must be at most 300 seconds"),
    ('url = "http://x"\nenabled = "yes"', "verify.enabled: expected a boolean"),
    ('url = "http://x"\nconsumers = false', "verify.consumers: unknown key"),
])
def test_verify_errors_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(f"[verify]\n{body}\n", tmp_path)
    assert message in str(error.value)


def test_no_canary_after_actions_when_disabled_or_read_only(tmp_path: Path) -> None:
    on = load('[verify]\nurl = "http://x:1"\n', tmp_path)
    assert isinstance(write_path_check(on), WritePathCheck)
    assert write_path_check(on.as_read_only()) is None
    off = load('[verify]\nurl = "http://x:1"\nenabled = false\n', tmp_path)
    assert write_path_check(off) is None


# ------------------------------------------------------------------ read-only refusal


def test_read_only_refuses_to_build_verify(tmp_path: Path) -> None:
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"), read_only=True)
    with pytest.raises(ReadOnlyError):
        runner.build(VerifyWritePath, FakeApi([ok_post]).canary())


def test_cli_verify_refuses_in_read_only_mode_before_any_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    config = tmp_path / "sfops.toml"
    audit = tmp_path / "audit.jsonl"
    config.write_text(f'[sfops]\naudit_log = "{audit}"\n[verify]\nurl = "http://127.0.0.1:9"\n')
    assert main(["--config", str(config), "--read-only", "verify"]) == exitcodes.READ_ONLY
    err = capsys.readouterr().err
    assert "read-only mode" in err and "writes a row to PostgreSQL" in err
    assert not audit.exists(), "nothing ran, nothing was recorded"


def test_cli_verify_without_verify_section_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    config = tmp_path / "sfops.toml"
    config.write_text(f'[sfops]\naudit_log = "{tmp_path / "a.jsonl"}"\n')
    assert main(["--config", str(config), "verify"]) == exitcodes.USAGE
    assert "[verify]: not configured" in capsys.readouterr().err


# ------------------------------------------------------------------ the runner's hook


class Change(Action):
    name = "test.change"

    async def execute(self) -> AsyncIterator[Step]:
        yield Step("changed")


class FakeCheck(WritePathCheck):
    def __init__(self, api: FakeApi) -> None:
        super().__init__(VerifySettings(url=URL, timeout=0.3))
        self.api = api

    def canary(self, timeout: float | None = None) -> Canary:
        return self.api.canary(timeout=timeout or 0.3)


async def test_after_a_change_the_canary_goes_into_its_audit_record(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    runner = ActionRunner(audit, write_path=FakeCheck(FakeApi([ok_post], consumer=False)))
    steps: list[Step] = []
    result = await runner.run(Change("x"), on_step=steps.append)
    assert result.outcome is Outcome.SUCCEEDED and result.ok, "the change itself was done"
    assert result.write_path is not None and not result.write_path.ok
    record = audit.read()[-1]
    assert record["outcome"] == "succeeded"
    assert record["write_path"]["failed_hop"] == "consumer"
    assert record["write_path"]["hops"][0]["status"] == "ok"
    assert any(s.message.startswith("write path: ") for s in steps)

    out, err = io.StringIO(), io.StringIO()
    code = _action._report(result, False, out, err)
    assert code == exitcodes.DEGRADED
    assert "done, but users cannot write — consumer received: no consumer recorded" in \
        err.getvalue()
    data = _action.result_json(result)
    assert data["outcome"] == "succeeded" and data["write_path"]["ok"] is False


async def test_a_failed_action_sends_no_canary_and_verify_records_its_own(
        tmp_path: Path) -> None:
    class Broken(Change):
        async def execute(self) -> AsyncIterator[Step]:
            raise RuntimeError("no")
            yield Step("unreachable")  # pragma: no cover

    api = FakeApi([ok_post])
    audit = AuditLog(tmp_path / "audit.jsonl")
    runner = ActionRunner(audit, write_path=FakeCheck(api))
    result = await runner.run(Broken("x"))
    assert result.outcome is Outcome.FAILED and result.write_path is None and not api.calls

    verify = runner.build(VerifyWritePath, FakeApi([ok_post]).canary())
    done = await runner.run(verify)
    assert done.ok and done.write_path is not None and done.write_path.ok
    record = audit.read()[-1]
    assert record["action"] == "verify" and record["target"] == "write-path"
    assert record["write_path"]["ok"] is True
    assert [c["name"] for c in record["verify"]] == [
        "nginx accepted", "API handled", "PostgreSQL committed", "Kafka acknowledged",
        "consumer received"]
    assert record["params"]["key"] == verify.key


def test_cli_runner_carries_the_hook_only_when_it_may_write(tmp_path: Path) -> None:
    config = load(f'[sfops]\naudit_log = "{tmp_path / "a.jsonl"}"\n'
                  '[verify]\nurl = "http://x:1"\n', tmp_path)
    assert _action.make_runner(argparse.Namespace(read_only=False), config).write_path
    assert _action.make_runner(argparse.Namespace(read_only=True), config).write_path is None


async def test_the_preflight_says_a_canary_follows(tmp_path: Path) -> None:
    runner = ActionRunner(AuditLog(tmp_path / "audit.jsonl"),
                          write_path=FakeCheck(FakeApi([ok_post])))
    checks = await runner.prepare(Change("x"))
    assert checks[-1].name == "then: write path"
    assert checks[-1].detail.startswith(f"once it succeeded, a canary through {URL}")
    verify = runner.build(VerifyWritePath, FakeApi([ok_post]).canary())
    assert [c.name for c in await runner.prepare(verify)] == ["canary", "worst case"]


async def test_verify_shows_its_worst_case_like_every_action(tmp_path: Path) -> None:
    """Its preflight states the longest it can take: the canary's own timeout, which bounds
    every hop and every attempt."""
    verify = VerifyWritePath(FakeApi([ok_post]).canary(timeout=7.0))
    checks = await verify.preflight()
    assert checks[-1] == verify.worst_case().check()
    assert checks[-1].status is CheckStatus.PASS
    assert checks[-1].detail == "7 s: canary timeout 7 s (every hop and every attempt)"


async def test_a_secret_the_server_echoes_is_redacted_in_the_report() -> None:
    def echoing() -> httpx.Response:
        body = report_body(postgres={"hop": "postgres", "status": "failed",
                                     "error": "login failed: password=hunter2-secret"})
        return httpx.Response(200, json=body, headers={"X-Served-By": "api-1"})

    api = FakeApi([echoing])
    canary = api.canary(timeout=0.3)
    canary.secrets = ["hunter2-secret"]
    report = await canary.run("k7")
    assert report.failed_hop is not None and report.failed_hop.name == "postgres"
    assert "hunter2-secret" not in json.dumps(report.to_json())
