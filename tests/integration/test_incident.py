"""Issue #17's scenario end to end against the lab: after a PostgreSQL switchover, `sfops
verify` succeeds, and the timeline shows, in order, the switchover, the role change it made
and the canary; the incident bundle exported afterwards holds those entries and none of the
configuration's secrets. Real servers throughout (the lab's PostgreSQL pair, nginx, API
workers, Kafka and its consumer); the lab is switched back afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backends.config import load
from tests.integration.test_timeline import own_state
from tests.integration.test_writepath import primary, write_path_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    return write_path_ready(lab)


@pytest.fixture
def config_path(stack: Any, tmp_path: Path) -> Path:
    return own_state(stack, tmp_path)


def sfops_json(stack: Any, config_path: Path, *args: str) -> tuple[int, Any, str]:
    return stack.sfops_json(*args, config=config_path)  # type: ignore[no-any-return]


def position(entries: list[dict[str, Any]], what: str, test: Any) -> int:
    for i, entry in enumerate(entries):
        if test(entry):
            return i
    pytest.fail(f"the timeline has no {what}: "
                f"{[(e['kind'], e['message']) for e in entries]}")


def test_switchover_then_verify_in_order_on_the_timeline_and_in_the_bundle(
        stack: Any, config_path: Path, tmp_path: Path) -> None:
    old, new = ("pg-1", "pg-2") if primary(stack) == "pg-1" else ("pg-2", "pg-1")
    # A first reading, so the role change is a change from something seen.
    code, _, err = sfops_json(stack, config_path, "timeline", "-o", "json", "--source",
                              "postgres")
    assert code == 0, err
    try:
        code, outcome, err = sfops_json(stack, config_path, "pg", "switchover", "--to", new,
                                        "--yes", "--json")
        assert code == 0 and outcome["outcome"] == "succeeded", (outcome, err)
        assert outcome["write_path"]["ok"] is True, outcome["write_path"]

        code, data, err = sfops_json(stack, config_path, "verify", "-o", "json")
        assert code == 0 and data["write_path"]["ok"] is True, (data, err)

        code, doc, err = sfops_json(stack, config_path, "timeline", "-o", "json", "--since",
                                    "15m", "--source", "postgres", "--source", "actions")
        assert code == 0, err
        entries = doc["entries"]
        started = position(entries, "switchover start", lambda e: e["kind"] == "action-started"
                           and e["data"].get("action") == "pg.switchover")
        role = position(entries, f"{new} becoming primary", lambda e: e["kind"] == "role"
                        and e["subject"] == new and e["data"].get("to") == "primary")
        done = position(entries, "switchover outcome", lambda e: e["kind"] == "action"
                        and e["data"].get("action") == "pg.switchover")
        canary = position(entries, "sfops verify", lambda e: e["kind"] == "action"
                          and e["data"].get("action") == "verify")
        assert started < role < canary and done < canary, [
            (e["kind"], e["message"]) for e in entries]
        assert "write path ok" in entries[done]["message"]
        assert "write path ok" in entries[canary]["message"]

        out = tmp_path / "bundle"
        result = stack.sfops("--config", str(config_path), "incident", "export", "--since",
                             "15m", "--out", str(out))
        assert result.returncode == 0, result.stderr
        bundle = json.loads((out / "incident.json").read_text())
        text = (out / "incident.json").read_text() + (out / "incident.md").read_text()
        assert [a["record"]["action"] for a in bundle["actions"]] == ["pg.switchover",
                                                                      "verify"]
        kinds = [(e["kind"], e["subject"]) for e in bundle["timeline"]]
        assert ("role", new) in kinds and ("action", "write-path") in kinds, kinds
        secrets = [s.reveal() for s in load(config_path).secrets()]
        assert secrets, "the lab's configuration holds secrets to look for"
        for secret in secrets:
            assert secret not in text
    finally:
        if primary(stack) != old:
            back = stack.sfops("pg", "switchover", "--to", old, "--yes", timeout=180)
            assert back.returncode == 0, (back.stdout, back.stderr)
