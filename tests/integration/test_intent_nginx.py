"""The intent record against the lab's nginx (issue #14): an audit log that cannot be written
keeps a drain from starting (nothing changes), and an edit on disk that nginx does not run —
what an interrupted drain leaves — is named by the next nginx action's preflight."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from backends.audit import AuditLog, StartedRecord, process_identity
from backends.nginx.upstream import set_down_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    return lab.ensure("pg", "api", "nginx")


@pytest.fixture(scope="module")
def cfg(stack: Any) -> Any:
    return stack.config()


@pytest.fixture(autouse=True)
def undrained(stack: Any, cfg: Any) -> Any:
    """Every test ends with the lab's upstream file as it started, applied."""
    path = Path(cfg.nginx.upstream_file)
    original = path.read_bytes()
    yield
    if path.read_bytes() != original:
        for name in cfg.nginx.members:
            stack.sfops("nginx", "undrain", name, "--yes", "--force")
    assert path.read_bytes() == original


def test_unwritable_audit_log_refuses_to_start_and_changes_nothing(stack: Any, cfg: Any,
                                                                    tmp_path: Path) -> None:
    data = tomllib.loads(Path(stack.config_path).read_text())
    unwritable = tmp_path / "audit.jsonl"
    unwritable.mkdir()  # a directory: no record can be appended to it, even by root
    data.setdefault("sfops", {})["audit_log"] = str(unwritable)
    config = tmp_path / "sfops.toml"
    config.write_text(tomli_w.dumps(data))
    upstream = Path(cfg.nginx.upstream_file)
    before, mtime = upstream.read_bytes(), upstream.stat().st_mtime_ns

    result = stack.sfops("--config", str(config), "nginx", "drain", "api-3", "--yes",
                         "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "refused"
    assert "not started: cannot write the audit log" in outcome["error"]
    assert "nothing was changed" in outcome["error"]
    assert upstream.read_bytes() == before and upstream.stat().st_mtime_ns == mtime
    assert list(unwritable.iterdir()) == []


def test_an_interrupted_drain_is_named_by_the_next_preflight(stack: Any, cfg: Any) -> None:
    """What a drain SIGKILLed between its write and its reload leaves: its started record
    and api-3 marked down on disk only. The next nginx action's preflight names both."""
    upstream = Path(cfg.nginx.upstream_file)
    time.sleep(2.5)  # so the edit is clearly later than the last reload (whole seconds)
    upstream.write_bytes(set_down_bytes(upstream.read_bytes(), cfg.nginx.upstream_name,
                                        cfg.nginx.members["api-3"].address, True))
    killed = StartedRecord(user="bob", host="bastion", action="nginx.drain", target="api-3",
                           params={"member": "api-3"}, forced=False, preflight=[],
                           process={**process_identity(), "pid_start": -1})  # gone
    AuditLog(cfg.sfops.audit_log).append(killed)

    result = stack.sfops("nginx", "drain", "api-2", "--dry-run", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["preflight"]}
    applied = checks["upstream file applied"]
    assert applied["status"] == "warn" and "not applied" in applied["detail"], applied
    earlier = checks["earlier nginx actions finished"]
    assert earlier["status"] == "warn" and killed.id in earlier["detail"], earlier
    assert any(killed.id in line and line.startswith("sfops: warning: did not finish")
               for line in result.stderr.splitlines()), result.stderr

    listing = stack.sfops("audit", "-n", "3")
    assert any(killed.id in line and "edited but not reloaded" in line
               for line in listing.stdout.splitlines()), listing.stdout

    # The documented way out: undrain (or drain) writes a known state and reloads; its
    # success deals with the interrupted record.
    fixed = stack.sfops("nginx", "undrain", "api-3", "--yes", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert json.loads(fixed.stdout)["outcome"] == "succeeded"
    after = stack.sfops("nginx", "drain", "api-2", "--dry-run", "--json")
    checks = {c["name"]: c for c in json.loads(after.stdout)["preflight"]}
    assert checks["upstream file applied"]["status"] == "pass", checks
    assert checks["earlier nginx actions finished"]["status"] == "pass", checks
    assert killed.id not in after.stderr
