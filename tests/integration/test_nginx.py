"""The nginx slice against the lab's real nginx, API workers and sshd: status, a stopped
member, drain/undrain under load (local and SSH executors), a failing `nginx -t`, CLI exit
codes and the audit record."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from backends.config import load
from backends.nginx.model import MemberState
from backends.nginx.service import build_service
from backends.nginx.upstream import decode, parse_upstream

pytestmark = pytest.mark.integration
MEMBERS = ("api-1", "api-2", "api-3")


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx", "sshd")


@pytest.fixture(scope="module")
def cfg(stack):
    return stack.config()


def upstream_bytes(cfg) -> bytes:
    return Path(cfg.nginx.upstream_file).read_bytes()


def down_members(cfg) -> list[str]:
    upstream = parse_upstream(decode(upstream_bytes(cfg)), cfg.nginx.upstream_name)
    return [name for name, m in cfg.nginx.members.items() if upstream.find(m.address).down]


def broken_include(cfg) -> Path:
    return Path(cfg.nginx.upstream_file).parent / "zz-sfops-test-broken.conf"


@pytest.fixture(autouse=True)
def restore_lab(stack, cfg):
    """Every test starts and ends with all members up and undrained, no broken include."""
    yield
    broken_include(cfg).unlink(missing_ok=True)
    if not stack.running("api-2"):
        stack.start("api-2")
    for name in down_members(cfg):
        result = stack.sfops("nginx", "undrain", name, "--yes", "--force")
        assert result.returncode == 0, result.stderr
    assert down_members(cfg) == []


def poll_twice(cfg, interval: float = 2.0):
    async def run():
        service = build_service(cfg)
        assert service is not None
        try:
            await service.poll()
            await asyncio.sleep(interval)
            return await service.poll()
        finally:
            await service.close()

    return asyncio.run(run())


def log_attempts(cfg, address: str, after: float) -> list[dict[str, Any]]:
    """Access-log records that reached ``address`` and finished after ``after`` (epoch)."""
    found = []
    with open(cfg.nginx.access_log, encoding="utf-8", errors="replace") as file:
        for line in file:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if address in str(record.get("upstream_addr", "")) and record["msec"] > after:
                found.append(record)
    return found


class Load:
    """Threads GETting /health/live through nginx until stopped; counts every failure.

    Half the threads open a new connection per request: nginx must serve every request it
    accepted, across the reload, with no help from the client. The other half use keep-alive
    like real clients. An old worker told to quit closes its *idle* keep-alive connections at
    once, without reading them (ngx_close_idle_connections; lingering_close does not apply to
    idle connections), so a request sent on one at that instant is never read by nginx:

    - sent just after the close, the client reads end-of-file (RemoteProtocolError, "Server
      disconnected without sending a response"). HTTP clients retry an idempotent request in
      that case (RFC 9112 §9.3.1; browsers and urllib3 do), so these threads do too, once,
      and count it in ``keepalive_retries``;
    - arrived a moment before the close, still unread, the kernel answers the close with a
      reset (TcpExt TCPAbortOnClose) and the client sees "Connection reset by peer"
      (ReadError). It is the same race, inherent to keep-alive and nginx's graceful
      shutdown, not to the lab's nginx configuration or the API workers (no upstream error
      is logged, and the Connection: close threads never see it; measured: one or two
      reloads in a hundred). No response byte was received, so the request was not
      processed, and HTTP clients retry an idempotent request on a reset reused connection
      just as on end-of-file (RFC 9110 §9.2.2, RFC 9112 §9.3.1): these threads do too, once,
      counted in ``keepalive_retries``. Anything else — a second failure, any failure of a
      Connection: close request, a 5xx — is a failed client request."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = f"{url.rstrip('/')}/health/live"
        self.ok = 0
        self.keepalive_retries = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def _get(self, client: httpx.Client, keepalive: bool) -> str | None:
        headers = {} if keepalive else {"Connection": "close"}
        for attempt in (1, 2):
            try:
                response = client.get(self.url, headers=headers)
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if keepalive and attempt == 1:
                    with self._lock:
                        self.keepalive_retries += 1
                    continue
                return f"{type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None if response.status_code == 200 else f"HTTP {response.status_code}"
        return "unreachable"

    def _run(self, keepalive: bool) -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            while not self._stop.is_set():
                failure = self._get(client, keepalive)
                with self._lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(failure)
                time.sleep(0.005)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def audit_records(stack) -> list[dict[str, Any]]:
    result = stack.sfops("audit", "--json", "-n", "0")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ status


def test_status_all_members_up(stack, cfg):
    status = poll_twice(cfg, interval=0.2)
    assert [m.name for m in status.members] == list(MEMBERS)
    for member in status.members:
        assert member.state is MemberState.UP, member
        assert member.probe is not None and member.probe.ok and member.probe.status_code == 200
        assert member.server is not None and member.server.max_fails == 3
    assert status.stub is not None and status.stub.active >= 1

    result = stack.sfops("status", "--json")
    assert result.returncode in (0, 1), result.stderr  # 1 only if another backend is degraded
    data = json.loads(result.stdout)
    nginx = next(b for b in data["backends"] if b["name"] == "nginx")
    assert nginx["health"] == "ok" and nginx["reachable"]
    assert {m["name"]: m["state"] for m in nginx["detail"]["members"]} == dict.fromkeys(
        MEMBERS, "up")
    table = stack.sfops("status")
    assert "Load balancer" in table.stdout and "up 3/3" in table.stdout


def test_stopped_member_is_failing_within_two_polls(stack, cfg):
    stack.stop("api-2")
    status = poll_twice(cfg, interval=cfg.sfops.refresh_interval)
    states = {m.name: m.state for m in status.members}
    assert states == {"api-1": MemberState.UP, "api-2": MemberState.FAILING,
                      "api-3": MemberState.UP}
    assert status.member("api-2").probe.ok is False

    result = stack.sfops("status", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    nginx = next(b for b in json.loads(result.stdout)["backends"] if b["name"] == "nginx")
    assert nginx["health"] == "degraded"
    assert any(a["key"] == "member-failing:api-2" for a in nginx["alerts"])


# ------------------------------------------------------------------------------ drain


def test_drain_under_load_loses_nothing_and_undrain_restores(stack, cfg):
    original = upstream_bytes(cfg)
    api3 = cfg.nginx.members["api-3"].address
    with Load(cfg.nginx.url) as load:
        time.sleep(1.0)
        assert log_attempts(cfg, api3, time.time() - 1.0), "api-3 got no traffic before"
        result = stack.sfops("nginx", "drain", "api-3", "--yes", "--json")
        drained_at = time.time()
        time.sleep(2.0)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "succeeded" and outcome["action"] == "nginx.drain"
    assert {c["name"] for c in outcome["verify"]} >= {"nginx serving", "member marked down"}
    # Judged from the moment the reload took effect (every old worker gone), not a guess.
    assert {"name": "no new requests", "status": "pass",
            "detail": "none since the reload took effect"} in outcome["verify"]
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert log_attempts(cfg, api3, drained_at) == []
    assert down_members(cfg) == ["api-3"]
    assert poll_twice(cfg, 0.1).member("api-3").state is MemberState.DRAINED

    result = stack.sfops("nginx", "undrain", "api-3", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert upstream_bytes(cfg) == original
    undrained_at = time.time()
    with Load(cfg.nginx.url):
        time.sleep(1.5)
    assert log_attempts(cfg, api3, undrained_at), "api-3 gets no traffic after undrain"

    records = audit_records(stack)[-2:]
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("nginx.drain", "api-3", "succeeded"), ("nginx.undrain", "api-3", "succeeded")]
    assert records[0]["params"]["member"] == "api-3"


def test_failing_nginx_t_restores_the_file_byte_for_byte(stack, cfg):
    original = upstream_bytes(cfg)
    broken_include(cfg).write_text("this_is_not_a_directive on;\n")
    # Preflight sees the broken configuration and refuses: nothing changes.
    refused = stack.sfops("nginx", "drain", "api-3", "--yes", "--json")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["outcome"] == "refused"
    assert upstream_bytes(cfg) == original
    # Forced past the preflight, the drain's own nginx -t fails and the file is put back.
    forced = stack.sfops("nginx", "drain", "api-3", "--yes", "--json", "--force")
    assert forced.returncode == 1, forced.stdout + forced.stderr
    outcome = json.loads(forced.stdout)
    assert outcome["outcome"] == "failed" and outcome["forced"] is True
    assert "nginx -t failed" in outcome["error"] and "restored" in outcome["error"]
    assert upstream_bytes(cfg) == original
    assert httpx.get(f"{cfg.nginx.url}/health/live", timeout=5).status_code == 200
    record = audit_records(stack)[-1]
    assert (record["action"], record["outcome"], record["forced"]) == (
        "nginx.drain", "failed", True)


def test_drain_and_undrain_through_the_ssh_executor(stack, cfg, tmp_path):
    data = tomllib.loads(Path(stack.config_path).read_text())
    data["nginx"]["executor"] = "lab-ssh"
    ssh_config = tmp_path / "sfops-ssh.toml"
    ssh_config.write_text(tomli_w.dumps(data))
    assert load(ssh_config).nginx.executor == "lab-ssh"
    original = upstream_bytes(cfg)
    api3 = cfg.nginx.members["api-3"].address

    def sfops(*args: str):
        return stack.sfops("--config", str(ssh_config), *args)

    with Load(cfg.nginx.url) as load_:
        time.sleep(0.5)
        result = sfops("nginx", "drain", "api-3", "--yes", "--json")
        drained_at = time.time()
        time.sleep(1.5)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "succeeded"
    assert load_.failures == []
    assert log_attempts(cfg, api3, drained_at) == []
    assert down_members(cfg) == ["api-3"]
    # the SSH user owns the file it rewrote
    assert Path(cfg.nginx.upstream_file).owner() == "sfops-lab"

    result = sfops("nginx", "undrain", "api-3", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert upstream_bytes(cfg) == original


# ------------------------------------------------------------------------------ CLI


def test_read_only_refuses_before_any_request(stack, cfg):
    before = len(audit_records(stack))
    result = stack.sfops("--read-only", "nginx", "drain", "api-3", "--yes")
    assert result.returncode == 4
    assert "read-only" in result.stderr
    assert len(audit_records(stack)) == before
    assert down_members(cfg) == []


def test_refuses_to_drain_the_last_healthy_member(stack, cfg):
    for name in ("api-1", "api-2"):
        assert stack.sfops("nginx", "drain", name, "--yes").returncode == 0
    result = stack.sfops("nginx", "drain", "api-3", "--yes", "--json")
    assert result.returncode == 3
    outcome = json.loads(result.stdout)
    failed = [c for c in outcome["preflight"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["another healthy member remains"]
    assert sorted(down_members(cfg)) == ["api-1", "api-2"]
    unknown = stack.sfops("nginx", "drain", "api-9", "--yes", "--json")
    assert unknown.returncode == 3
    assert "not in [nginx.members]" in unknown.stdout


def test_confirmation_requires_the_member_name(stack, cfg):
    original = upstream_bytes(cfg)
    wrong = stack.sfops("nginx", "drain", "api-3", input="y\n")
    assert wrong.returncode == 3
    assert "Preflight:" in wrong.stderr and "Type 'api-3'" in wrong.stderr
    assert "Not confirmed" in wrong.stderr
    assert upstream_bytes(cfg) == original
    right = stack.sfops("nginx", "drain", "api-3", input="api-3\n")
    assert right.returncode == 0, right.stderr
    assert "succeeded" in right.stdout
    assert down_members(cfg) == ["api-3"]
    undrain = stack.sfops("nginx", "undrain", "api-3", input="y\n")  # not destructive: y/N
    assert undrain.returncode == 0, undrain.stderr
    assert upstream_bytes(cfg) == original


def test_status_exit_codes_for_config_error_and_unreachable(stack, tmp_path):
    data = tomllib.loads(Path(stack.config_path).read_text())
    data["nginx"]["refresh_intreval"] = 2
    typo = tmp_path / "typo.toml"
    typo.write_text(tomli_w.dumps(data))
    result = stack.sfops("--config", str(typo), "status")
    assert result.returncode == 2
    assert str(typo) in result.stderr and "nginx.refresh_intreval" in result.stderr

    data = tomllib.loads(Path(stack.config_path).read_text())
    for section in ("postgres", "kafka", "kubernetes"):
        data.pop(section, None)
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    data["nginx"]["stub_status_url"] = f"{dead}/nginx_status"
    data["nginx"]["url"] = dead
    unreachable = tmp_path / "dead.toml"
    unreachable.write_text(tomli_w.dumps(data))
    started = time.monotonic()
    result = stack.sfops("--config", str(unreachable), "status", "--json", "--timeout", "5")
    assert result.returncode == 5, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    nginx = json.loads(result.stdout)["backends"][0]
    assert not nginx["reachable"] and "127.0.0.1:9" in nginx["error"]
