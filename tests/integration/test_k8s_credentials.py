"""Kubernetes credentials against the lab's real API server: the lab's identities come from its
exec credential plugin (deploy/lab/k8s-credential.py: a real ServiceAccount token, a short
declared expiry, a counter of its runs, a flag that makes it hand out a bad token once), and a
cluster's proxy-url goes through a real HTTP CONNECT proxy.

The plugin's counter shows sfops ran it again after the declared expiry and after a forced 401,
while reads and an action (a scale, with its Lease) went on succeeding."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.config import load
from backends.kubernetes.credentials import ExecCredentials
from backends.kubernetes.service import KubernetesService, build_service
from deploy.lab import k8s
from deploy.lab.k8s_cluster import credential_dir, exec_user
from deploy.lab.k8s_pki import kubeconfig_text
from tests.integration.test_k8s import (
    NAME,
    NS,
    _write_config,
    deployment,
    restore,
    sfops,
)
from tests.integration.test_least_privilege import OPERATOR_SA, now_utc, sfops_events

pytestmark = [pytest.mark.integration, pytest.mark.k8s]

WAIT = 60.0  # a bound on waiting for a condition, never an asserted duration


@pytest.fixture(scope="module")
def k8s_lab(lab: Any) -> Any:
    lab.ensure("k8s")
    return lab


def plugin_kubeconfig(lab: Any, path: Path, account: str, *, declare: int,
                      cluster: dict[str, Any] | None = None) -> tuple[Path, str]:
    """A kubeconfig of ``account`` through the lab's plugin with its own call counter."""
    name = f"test-{account}-{uuid.uuid4().hex[:8]}"
    text = kubeconfig_text(lab.lab, f"{NS}-{account}",
                           exec_user(lab.lab, account, name=name, declare=declare))
    config = json.loads(text)
    config["clusters"][0]["cluster"].update(cluster or {})
    path.write_text(json.dumps(config))
    return path, name


def calls(lab: Any, name: str) -> list[str]:
    """The plugin's runs for this counter: ``ok`` or ``bad`` (the forced bad token)."""
    counter = credential_dir(lab.lab) / f"{name}.calls"
    if not counter.exists():
        return []
    return [line.split()[1] for line in counter.read_text().splitlines()]


def force_401(lab: Any, name: str) -> None:
    (credential_dir(lab.lab) / f"{name}.bad-once").touch()


def identities_config(lab: Any, tmp_path: Path, *, declare: int) -> tuple[Path, str, str]:
    readonly, ro_name = plugin_kubeconfig(lab, tmp_path / "ro.kubeconfig", "sfops",
                                          declare=declare)
    operator, op_name = plugin_kubeconfig(lab, tmp_path / "op.kubeconfig", "sfops-operator",
                                          declare=declare)
    config = _write_config(lab, tmp_path / "sfops.toml")
    text = config.read_text()
    text = text.replace(str(k8s.readonly_kubeconfig(lab.lab)), str(readonly))
    text = text.replace(str(k8s.operator_kubeconfig(lab.lab)), str(operator))
    config.write_text(text)
    return config, ro_name, op_name


# ----------------------------------------------------------------------------- the lab


def test_the_labs_identities_use_the_exec_plugin(k8s_lab: Any) -> None:
    for path in (k8s.readonly_kubeconfig(k8s_lab.lab), k8s.operator_kubeconfig(k8s_lab.lab)):
        (user,) = json.loads(path.read_text())["users"]
        assert set(user["user"]) == {"exec"}, path  # no static token left anywhere
        assert user["user"]["exec"]["provideClusterInfo"] is True


# ----------------------------------------------------------------------------- expiry and 401


async def test_reads_go_on_through_declared_expiries_and_a_forced_401(
        k8s_lab: Any, tmp_path: Path) -> None:
    config, ro_name, _ = identities_config(k8s_lab, tmp_path, declare=2)
    service = build_service(load(config))
    assert isinstance(service, KubernetesService)
    source = service.client.connection.credentials
    assert isinstance(source, ExecCredentials)
    try:
        status = await service.poll()
        assert status.deployment(NS, NAME) is not None
        assert calls(k8s_lab, ro_name)[:1] == ["ok"]

        # The declared expiry (2 s) passes: the next requests run the plugin again.
        deadline = time.monotonic() + WAIT
        while len(calls(k8s_lab, ro_name)) < 3 and time.monotonic() < deadline:
            await service.contact()  # raises if a request failed
            await asyncio.sleep(0.5)
        assert calls(k8s_lab, ro_name)[:3] == ["ok", "ok", "ok"]

        # A bad token once: the API server answers 401, sfops runs the plugin again and
        # repeats the request, which succeeds.
        force_401(k8s_lab, ro_name)
        while "bad" not in calls(k8s_lab, ro_name)[:-1] and time.monotonic() < deadline:
            await service.contact()
            await asyncio.sleep(0.5)
        seen = calls(k8s_lab, ro_name)
        assert seen.count("bad") == 1 and seen[seen.index("bad") + 1] == "ok", seen
        assert source.runs == len(seen)  # every run was this process's
        status = await service.poll()
        assert status.deployment(NS, NAME) is not None
        assert not status.watch_errors
    finally:
        await service.close()


def test_an_action_and_its_lease_survive_a_forced_401(k8s_lab: Any, tmp_path: Path) -> None:
    restore(k8s_lab)  # from three available replicas, every node schedulable
    config, _, op_name = identities_config(k8s_lab, tmp_path, declare=300)
    force_401(k8s_lab, op_name)
    since = now_utc()
    try:
        result = sfops(config, "k8s", "scale", NAME, "4", "--yes")
        assert result.returncode == 0, result.stderr + result.stdout
        assert deployment(k8s_lab)["spec"]["replicas"] == 4
        # The operator's first credential was the bad one; one run more fixed it, shared by
        # the action's client and its Lease client.
        assert calls(k8s_lab, op_name) == ["bad", "ok"]
        # The API server's audit log: the bad token was refused, and the same request then
        # succeeded as the operator.
        events = sfops_events(k8s_lab, since)
        refused = [e for e in events if e["responseStatus"]["code"] == 401]
        assert refused, "no request was refused: the bad token was never sent"
        assert any(e["requestURI"] == refused[0]["requestURI"]
                   and e["user"].get("username") == OPERATOR_SA
                   and e["responseStatus"]["code"] < 400 for e in events)
        lease = k8s.kubectl(k8s_lab.lab, "-n", NS, "get", "leases", "-o", "json")
        assert any("sfops.streamforge.io/token" in (item["metadata"].get("annotations") or {})
                   for item in json.loads(lease)["items"])
    finally:
        result = sfops(config, "k8s", "scale", NAME, "3", "--yes")
        assert result.returncode == 0, result.stderr + result.stdout
        restore(k8s_lab)


# ----------------------------------------------------------------------------- proxy-url


class ConnectProxy:
    """A tiny HTTP CONNECT proxy (asyncio, in a thread of its own): it records every target
    and the Proxy-Authorization it was sent, then relays bytes both ways."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.authorizations: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            self.targets.append(target)
            self.authorizations += [line.split(":", 1)[1].strip()
                                    for line in head.split("\r\n")
                                    if line.lower().startswith("proxy-authorization:")]
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    relay = ConnectProxy()
    relay.start()
    yield relay
    relay.stop()


def test_proxy_url_sends_every_request_through_the_proxy(k8s_lab: Any, tmp_path: Path,
                                                         proxy: ConnectProxy) -> None:
    kubeconfig, _ = plugin_kubeconfig(
        k8s_lab, tmp_path / "proxied.kubeconfig", "sfops", declare=300,
        cluster={"proxy-url": f"http://oncall:proxy-pw@127.0.0.1:{proxy.port}"})
    config = _write_config(k8s_lab, tmp_path / "proxied.toml", kubeconfig=kubeconfig,
                           read_only=True)
    result = sfops(config, "k8s", "status", "--json")
    # 0 healthy, 1 degraded (a rollout another test left going): either way it was read.
    assert result.returncode in (0, 1), result.stderr + result.stdout
    envelope = json.loads(result.stdout)
    assert envelope["reachable"] and envelope["error"] is None
    assert any(d["name"] == NAME for d in envelope["status"]["deployments"])
    api = f"127.0.0.1:{k8s_lab.port(k8s.OFF_APISERVER)}"
    assert proxy.targets and set(proxy.targets) == {api}
    assert set(proxy.authorizations) == {"Basic b25jYWxsOnByb3h5LXB3"}  # oncall:proxy-pw
    assert "proxy-pw" not in result.stdout + result.stderr

    # Without the proxy the same kubeconfig reaches nothing: the requests really went there.
    proxy.stop()
    down = sfops(config, "k8s", "status", "--json")
    assert down.returncode != 0
    assert "proxy-pw" not in down.stdout + down.stderr
