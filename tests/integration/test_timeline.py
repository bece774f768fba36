"""The timeline against the lab's real nginx and API workers: api-2 stopped and started shows
as its flip and its return, in order — seen by the TUI's poller and by one-shot
`sfops timeline` readings; an nginx drain/undrain shows as the actions with their member
changes; `sfops incident export` holds those entries, the status before and after each
action, and none of the configuration's secrets."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.services import build_services
from backends.timeline.store import TimelineStore
from tui.app import SfopsApp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx", "sshd")


@pytest.fixture
def config_path(stack, tmp_path) -> Path:
    return own_state(stack, tmp_path)


def own_state(stack, tmp_path: Path) -> Path:
    """The lab's configuration with a timeline store and audit log of this test's own."""
    data = tomllib.loads(stack.config_path.read_text())
    data.setdefault("sfops", {})
    data["sfops"]["state_dir"] = str(tmp_path / "state")
    data["sfops"]["audit_log"] = str(tmp_path / "audit.jsonl")
    path = tmp_path / "sfops.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture(autouse=True)
def api_2_back(stack):
    yield
    if not stack.running("api-2"):
        stack.start("api-2")


def timeline(stack, config_path: Path, *args: str) -> dict:
    result = stack.sfops("--config", str(config_path), "timeline", "-o", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def member_changes(doc: dict, member: str) -> list[str]:
    return [e["message"] for e in doc["entries"]
            if e["source"] == "nginx" and e["kind"] == "member-state"
            and e["subject"] == member]


def test_one_shot_readings_show_the_flip_and_the_return_in_order(stack, config_path):
    baseline = timeline(stack, config_path, "--source", "nginx")
    assert member_changes(baseline, "api-2") == []
    (nginx,) = [s for s in baseline["sources"] if s["source"] == "nginx"]
    assert nginx["reachable"] and nginx["age_s"] is not None
    stack.stop("api-2")
    timeline(stack, config_path, "--source", "nginx")
    stack.start("api-2")
    doc = timeline(stack, config_path, "--source", "nginx")
    flips = member_changes(doc, "api-2")
    assert [m.split(":")[0].split(" (")[0] for m in flips] == [
        "api-2 up → failing", "api-2 failing → up"], flips
    # Between the one-shot readings nobody watched: the timeline says so.
    assert doc["gaps"], "the time between readings must read as a gap"


async def test_the_tuis_poller_records_the_flip_and_the_return(stack, config_path):
    config = load(config_path)
    config = replace(config, sfops=replace(config.sfops, refresh_interval=0.5))
    runner = ActionRunner(AuditLog(config.sfops.audit_log, env=config.env),
                          secrets=config.secrets())
    app = SfopsApp(config, build_services(config), runner=runner, config_path=config_path)
    store = TimelineStore.in_dir(config.sfops.state_dir)  # a second connection: a reader

    def messages() -> list[str]:
        return [e.message for e in store.open().events(0, sources=["nginx"])
                if e.subject == "api-2"]

    async def until(condition, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {messages()}"
            await asyncio.sleep(0.2)

    try:
        async with app.run_test(size=(80, 24)):
            await until(lambda: store.open().sources(), "the first reading")
            await asyncio.to_thread(stack.stop, "api-2")
            await until(lambda: any(m.startswith("api-2 up → failing") for m in messages()),
                        "the flip")
            await asyncio.to_thread(stack.start, "api-2")
            await until(lambda: any(m.startswith("api-2 failing → up") for m in messages()),
                        "the return")
            (span,) = store.open().spans(0)
            assert span.stopped is None and span.observer.endswith("(tui)")
        found = messages()
        assert found.index(next(m for m in found if m.startswith("api-2 up → failing"))) < \
            found.index(next(m for m in found if m.startswith("api-2 failing → up")))
        assert store.open().spans(0)[0].stopped is not None  # quitting ended the span
    finally:
        store.close()


def test_drain_and_undrain_appear_with_their_changes_and_the_export_holds_them(
        stack, config_path, tmp_path):
    for command in ("drain", "undrain"):
        result = stack.sfops("--config", str(config_path), "nginx", command, "api-2", "--yes")
        assert result.returncode == 0, result.stderr
    doc = timeline(stack, config_path, "--since", "10m", "--source", "nginx",
                   "--source", "actions")
    # (kind, message without its detail), in time order.
    seen = [(e["kind"], e["message"].split(" (")[0].split(":")[0]) for e in doc["entries"]
            if e["kind"] in ("action", "member-state")]
    drain_at = seen.index(("action", "nginx.drain api-2"))
    undrain_at = seen.index(("action", "nginx.undrain api-2"))
    assert drain_at < undrain_at, seen
    # The drain's "after" reading saw the member out, the undrain's saw it back: each change
    # after the action that made it.
    out_at = next(i for i, (k, m) in enumerate(seen)
                  if k == "member-state" and m.startswith("api-2 up → drain"))
    back_at = next(i for i, (k, m) in enumerate(seen)
                   if k == "member-state" and m.startswith("api-2 drain") and m.endswith("→ up"))
    assert drain_at < out_at < undrain_at < back_at, seen

    out = tmp_path / "bundle"
    result = stack.sfops("--config", str(config_path), "incident", "export", "--since", "10m",
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = (out / "incident.json").read_text() + (out / "incident.md").read_text()
    data = json.loads((out / "incident.json").read_text())
    exported = [a["record"]["action"] for a in data["actions"]]
    assert exported == ["nginx.drain", "nginx.undrain"]
    entries = [(e["kind"], e["message"].split(" (")[0].split(":")[0]) for e in data["timeline"]
               if e["kind"] in ("action", "member-state")]
    since_drain = entries[entries.index(("action", "nginx.drain api-2")):]
    assert since_drain[:len(seen) - drain_at] == seen[drain_at:], "the export's timeline"
    for action in data["actions"]:
        (before,) = action["snapshots"]["before"]
        (after,) = action["snapshots"]["after"]
        assert before["backend"] == after["backend"] == "nginx"
        assert before["ok"] and after["ok"] and after["status"]["members"]
    drained = {m["name"]: m["state"] for m in
               data["actions"][0]["snapshots"]["after"][0]["status"]["members"]}
    assert drained["api-2"] in ("draining", "drained")
    assert "nginx.drain api-2" in (out / "incident.md").read_text()
    assert data["alerts_at_export"] is not None
    secrets = [s.reveal() for s in load(config_path).secrets()]
    assert secrets, "the lab's configuration holds secrets to look for"
    for secret in secrets:
        assert secret not in text
