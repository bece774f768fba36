"""Exec credential plugins and token files with client-go's semantics, against fake plugin
scripts (real processes) and a small fake API server (aiohttp) that knows which tokens are
valid: cached until the declared expiry, run again after it and after a 401 (the request
repeated once), one run shared by concurrent requests, failures and timeouts named, the
plugin's environment minimal, token files re-read when they change."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from backends.kubernetes.client import Connection, KubeApiError, KubeClient, KubeError
from backends.kubernetes.credentials import (
    PLUGIN_ENVIRONMENT,
    ExecCredentials,
    KubeCredentialError,
    TokenFileCredentials,
    parse_exec,
)
from backends.kubernetes.kubeconfig import connection_from_kubeconfig
from backends.secrets import redact_known

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"

# The fake plugin: its behaviour comes from a JSON file, its runs are counted in another
# (one line each, with the KUBERNETES_EXEC_INFO it was given), its environment written out.
PLUGIN = r'''
import json, os, sys, time
behaviour = json.load(open(sys.argv[1]))
runs_file = sys.argv[2]
with open(runs_file, "a") as out:
    out.write(os.environ.get("KUBERNETES_EXEC_INFO", "") + "\n")
with open(runs_file) as counted:
    run = len(counted.readlines())
with open(runs_file + ".env", "w") as out:
    json.dump(dict(os.environ), out)
time.sleep(behaviour.get("sleep", 0))
if behaviour.get("exit"):
    sys.stderr.write(behaviour.get("stderr", ""))
    sys.exit(behaviour["exit"])
if behaviour.get("raw") is not None:
    sys.stdout.write(behaviour["raw"])
    sys.exit(0)
tokens = behaviour["tokens"]
status = {"token": tokens[min(run, len(tokens)) - 1]}
if behaviour.get("expires"):
    status["expirationTimestamp"] = behaviour["expires"]
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
version = behaviour.get("answer_version") or info["apiVersion"]
print(json.dumps({"apiVersion": version, "kind": "ExecCredential", "status": status}))
'''


class FakePlugin:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.script = directory / "plugin.py"
        self.script.write_text(PLUGIN)
        self.behaviour_file = directory / "behaviour.json"
        self.runs_file = directory / "runs"
        self.behave(tokens=["token-1"])

    def behave(self, **behaviour: Any) -> None:
        self.behaviour_file.write_text(json.dumps(behaviour))

    @property
    def runs(self) -> int:
        if not self.runs_file.exists():
            return 0
        return len(self.runs_file.read_text().splitlines())

    def exec_infos(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.runs_file.read_text().splitlines()]

    def env(self) -> dict[str, str]:
        return json.loads(Path(f"{self.runs_file}.env").read_text())  # type: ignore[no-any-return]

    def exec_config(self, api_version: str = V1, **extra: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "apiVersion": api_version, "command": sys.executable,
            "args": [str(self.script), str(self.behaviour_file), str(self.runs_file)],
            "interactiveMode": "Never"}
        config.update(extra)
        return config

    def source(self, api_version: str = V1, *, clock: Any = None, timeout: float = 20.0,
               **extra: Any) -> ExecCredentials:
        spec = parse_exec(self.exec_config(api_version, **extra), "alice", "kubeconfig test",
                          str(self.directory), None)
        if clock is None:
            return ExecCredentials(spec, timeout=timeout)
        return ExecCredentials(spec, timeout=timeout, clock=clock)


@pytest.fixture
def plugin(tmp_path: Path) -> FakePlugin:
    return FakePlugin(tmp_path)


class FakeApi:
    """Answers 200 to a valid bearer token, 401 to any other; counts what it saw."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.seen: list[tuple[str, str]] = []
        app = web.Application()
        app.router.add_route("*", "/api/v1/namespaces/default/configmaps", self.handle)
        app.router.add_get("/api/v1/pods", self.pods)
        self.app = app
        self.server: TestServer | None = None

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((request.method, token))
        return token in self.valid

    async def handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized",
                                      "message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        event = {"type": "ADDED", "object": {"metadata": {"name": "p", "resourceVersion": "8"}}}
        await response.write(json.dumps(event).encode() + b"\n")
        return response

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    fake.server = TestServer(fake.app, host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    await fake.server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def client_for(api: FakeApi, source: Any) -> KubeClient:
    return KubeClient(Connection(host=api.url, credentials=source), timeout=5.0)


CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
EXPIRES = "1970-01-12T13:46:50Z"  # 1_000_010: ten seconds after Clock's start


# ----------------------------------------------------------------------------- exec plugins


async def test_cached_until_the_declared_expiry_then_run_again(plugin: FakePlugin) -> None:
    plugin.behave(tokens=["token-1", "token-2"], expires=EXPIRES)
    clock = Clock()
    source = plugin.source(clock=clock)
    first = await source.get()
    assert first.authorization == "Bearer token-1"
    clock.now += 9
    assert await source.get() is first and plugin.runs == 1  # cached: no run
    clock.now += 1  # the declared expiry
    second = await source.get()
    assert second.authorization == "Bearer token-2" and plugin.runs == 2
    assert second.serial != first.serial


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
async def test_exec_info_as_client_go_sets_it(plugin: FakePlugin, api_version: str) -> None:
    source = plugin.source(api_version)
    assert (await source.get()).authorization == "Bearer token-1"
    info = plugin.exec_infos()[0]
    assert info == {"apiVersion": api_version, "kind": "ExecCredential",
                    "spec": {"interactive": False}}


async def test_provide_cluster_info_passes_the_cluster(plugin: FakePlugin,
                                                       tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"PEM")
    kubeconfig = write_kubeconfig(
        tmp_path, {"exec": plugin.exec_config(provideClusterInfo=True)},
        cluster={"server": "https://k8s.example:6443", "certificate-authority": "ca.crt",
                 "tls-server-name": "api.example"})
    connection = connection_from_kubeconfig(kubeconfig, None)
    assert plugin.runs == 0  # loading the kubeconfig runs nothing
    assert connection.credentials is not None
    await connection.credentials.get()
    cluster = plugin.exec_infos()[0]["spec"]["cluster"]
    assert cluster == {"server": "https://k8s.example:6443", "tls-server-name": "api.example",
                       "certificate-authority-data": "UEVN"}


async def test_a_401_runs_the_plugin_again_and_repeats_the_request_once(
        plugin: FakePlugin, api: FakeApi) -> None:
    plugin.behave(tokens=["revoked", "fresh"])  # no declared expiry: valid until a 401
    api.valid = {"fresh"}
    client = client_for(api, plugin.source())
    try:
        assert (await client.get(CONFIGMAPS))["kind"] == "ConfigMap"
        # A write too: a 401 means the server did not act.
        api.valid = {"fresh-2"}
        plugin.behave(tokens=["revoked", "fresh", "fresh-2"])
        assert (await client.post(CONFIGMAPS, {"kind": "ConfigMap"}))["kind"] == "ConfigMap"
    finally:
        await client.close()
    assert api.seen == [("GET", "revoked"), ("GET", "fresh"), ("POST", "fresh"),
                        ("POST", "fresh-2")]
    assert plugin.runs == 3


async def test_a_second_401_is_not_repeated(plugin: FakePlugin, api: FakeApi) -> None:
    plugin.behave(tokens=["bad-1", "bad-2", "bad-3"])
    client = client_for(api, plugin.source())
    try:
        with pytest.raises(KubeApiError) as raised:
            await client.post(CONFIGMAPS, {"kind": "ConfigMap"})
    finally:
        await client.close()
    assert raised.value.status == 401
    assert [method for method, _ in api.seen] == ["POST", "POST"]  # once, then once more
    assert plugin.runs == 2


async def test_the_same_token_again_is_not_repeated(plugin: FakePlugin, api: FakeApi) -> None:
    plugin.behave(tokens=["same"])  # a plugin with its own cache hands out the same one
    client = client_for(api, plugin.source())
    try:
        with pytest.raises(KubeApiError):
            await client.get(CONFIGMAPS)
    finally:
        await client.close()
    assert len(api.seen) == 1 and plugin.runs == 2


async def test_concurrent_401s_share_one_plugin_run(plugin: FakePlugin, api: FakeApi) -> None:
    # The plugin takes a while, so the requests really overlap while it runs.
    plugin.behave(tokens=["revoked", "fresh", "later"], sleep=0.3)
    api.valid = {"fresh"}
    client = client_for(api, plugin.source())
    try:
        answers = await asyncio.gather(*(client.get(CONFIGMAPS) for _ in range(8)))
    finally:
        await client.close()
    assert all(answer["kind"] == "ConfigMap" for answer in answers)
    assert plugin.runs == 2  # one for the first credential, one after the 401s
    assert sorted({token for _, token in api.seen}) == ["fresh", "revoked"]


async def test_a_watch_that_gets_401_reauthenticates(plugin: FakePlugin, api: FakeApi) -> None:
    plugin.behave(tokens=["revoked", "fresh"])
    api.valid = {"fresh"}
    client = client_for(api, plugin.source())
    try:
        events = [event async for event in client.watch("/api/v1/pods", resource_version="7")]
    finally:
        await client.close()
    assert [event["type"] for event in events] == ["ADDED"]
    assert [token for _, token in api.seen] == ["revoked", "fresh"]


async def test_a_failing_plugin_is_named_never_its_secrets(plugin: FakePlugin) -> None:
    plugin.behave(exit=3, stderr="cannot reach the identity provider (sso expired)\n")
    with pytest.raises(KubeCredentialError) as raised:
        await plugin.source().get()
    message = str(raised.value)
    assert "kubeconfig user 'alice'" in message and sys.executable in message
    assert "exited with status 3" in message and "sso expired" in message
    # Output that is no ExecCredential is not quoted (it may hold the token).
    plugin.behave(raw='{"token": "s3cr3t-value"}')
    with pytest.raises(KubeCredentialError, match="not an ExecCredential") as raised:
        await plugin.source().get()
    assert "s3cr3t-value" not in str(raised.value)


async def test_a_known_token_in_the_plugins_stderr_is_redacted(plugin: FakePlugin) -> None:
    plugin.behave(tokens=["tok-abc123"])
    await plugin.source().get()  # the token is a known secret from here on
    plugin.behave(exit=1, stderr="refreshing tok-abc123 failed")
    with pytest.raises(KubeCredentialError) as raised:
        await plugin.source().get()
    assert "tok-abc123" not in str(raised.value) and "***" in str(raised.value)
    assert redact_known("tok-abc123") == "***"


async def test_a_hung_plugin_times_out_and_is_killed(plugin: FakePlugin) -> None:
    plugin.behave(tokens=["late"], sleep=600)
    with pytest.raises(KubeCredentialError, match=r"no answer within 0\.5 s") as raised:
        await plugin.source(timeout=0.5).get()
    assert "alice" in str(raised.value)
    # Killed: no python process is left running this plugin.
    left = subprocess.run(["pgrep", "-f", str(plugin.script)], capture_output=True, text=True,
                          check=False)
    assert left.stdout.strip() == ""


async def test_a_missing_command_shows_the_install_hint(plugin: FakePlugin) -> None:
    spec = parse_exec({"apiVersion": V1, "command": "no-such-credential-plugin",
                       "interactiveMode": "IfAvailable",
                       "installHint": "install it with: brew install no-such"},
                      "bob", "kubeconfig test", str(plugin.directory), None)
    with pytest.raises(KubeCredentialError) as raised:
        await ExecCredentials(spec).get()
    assert str(raised.value) == ("kubeconfig user 'bob': exec plugin 'no-such-credential-"
                                 "plugin': command not found; install it with: brew install "
                                 "no-such")


async def test_the_plugin_gets_a_minimal_environment(plugin: FakePlugin,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFOPS_PG_PASSWORD", "hunter2")  # sfops's secrets stay sfops's
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("HOME", "/home/oncall")
    source = plugin.source(env=[{"name": "AWS_PROFILE", "value": "prod"}])
    await source.get()
    env = plugin.env()
    assert env["AWS_PROFILE"] == "prod" and env["HOME"] == "/home/oncall"
    assert "SFOPS_PG_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    allowed = {*PLUGIN_ENVIRONMENT, "AWS_PROFILE", "KUBERNETES_EXEC_INFO"}
    assert set(env) - allowed <= {"LC_CTYPE"}  # Python may coerce the C locale itself


@pytest.mark.parametrize(("exec_config", "message"), [
    ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"},
     r"users\[alice\]\.user\.exec\.apiVersion: .*v1alpha1.* is not supported"),
    ({"apiVersion": V1, "command": "x"},
     r"users\[alice\]\.user\.exec\.interactiveMode: required"),
    ({"apiVersion": V1, "command": "x", "interactiveMode": "Always"},
     r"interactiveMode: Always needs a terminal"),
    ({"apiVersion": V1BETA1}, r"users\[alice\]\.user\.exec\.command: required"),
    ({"apiVersion": V1BETA1, "command": "x", "env": [{"name": "A"}]},
     r"exec\.env: every entry needs a name and a value"),
])
def test_bad_exec_configurations_name_the_key(tmp_path: Path, exec_config: dict[str, Any],
                                              message: str) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"exec": exec_config})
    with pytest.raises(KubeError, match=message) as raised:
        connection_from_kubeconfig(kubeconfig, None)
    assert str(kubeconfig) in str(raised.value)


async def test_the_plugin_must_answer_the_version_asked(plugin: FakePlugin) -> None:
    plugin.behave(tokens=["t"], answer_version=V1BETA1)
    with pytest.raises(KubeCredentialError, match="answered apiVersion"):
        await plugin.source(V1).get()


async def test_one_source_per_plugin_configuration(plugin: FakePlugin, tmp_path: Path) -> None:
    """The read, operator and Lease clients of one kubeconfig share one cached credential."""
    kubeconfig = write_kubeconfig(tmp_path, {"exec": plugin.exec_config()})
    first = connection_from_kubeconfig(kubeconfig, None)
    second = connection_from_kubeconfig(kubeconfig, None)
    assert first.credentials is second.credentials is not None
    assert first.credentials is not None
    await first.credentials.get()
    await second.credentials.get()  # type: ignore[union-attr]
    assert plugin.runs == 1


async def test_a_relative_command_is_relative_to_the_kubeconfig(plugin: FakePlugin,
                                                                tmp_path: Path) -> None:
    wrapper = tmp_path / "bin" / "credential"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {plugin.script} "
                       f"{plugin.behaviour_file} {plugin.runs_file}\n")
    wrapper.chmod(0o755)
    kubeconfig = write_kubeconfig(tmp_path, {"exec": {
        "apiVersion": V1, "command": "./bin/credential", "interactiveMode": "Never"}})
    connection = connection_from_kubeconfig(kubeconfig, None)
    assert connection.credentials is not None
    assert (await connection.credentials.get()).authorization == "Bearer token-1"


def test_a_static_token_wins_over_exec(plugin: FakePlugin, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"token": "static",
                                             "exec": plugin.exec_config()})
    connection = connection_from_kubeconfig(kubeconfig, None)
    assert connection.credentials is None and connection.token == "Bearer static"


def test_a_client_certificate_from_the_plugin_loads_from_memory(tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=alice",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
                    "-days", "1"], check=True, capture_output=True)
    cert, key = (tmp_path / "c.pem").read_bytes(), (tmp_path / "k.pem").read_bytes()
    connection = Connection(host="https://127.0.0.1:1")
    assert connection.ssl_context((cert, key)) is not False
    with pytest.raises(KubeError, match="client certificate from the exec plugin"):
        connection.ssl_context((cert, b"not a key"))


# ----------------------------------------------------------------------------- token files


def write_kubeconfig(directory: Path, user: dict[str, Any],
                     cluster: dict[str, Any] | None = None) -> Path:
    path = directory / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "alice", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "alice"}}],
    }))
    return path


@pytest.fixture
def token_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "token"
    path.write_text("rotated-1\n")
    yield path


def rotate(path: Path, token: str) -> None:
    """As the kubelet does: a new file swapped in (a new inode)."""
    fresh = path.with_name(".new")
    fresh.write_text(token + "\n")
    os.replace(fresh, path)


async def test_a_token_file_is_read_again_when_it_changes(token_file: Path,
                                                          tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"tokenFile": "token"})  # relative: beside it
    source = connection_from_kubeconfig(kubeconfig, None).credentials
    assert isinstance(source, TokenFileCredentials)
    assert (await source.get()).authorization == "Bearer rotated-1"
    source.check_every = 0.0  # check at every request (production: once a minute)
    assert (await source.get()).authorization == "Bearer rotated-1"
    reads = source.reads
    rotate(token_file, "rotated-2")
    assert (await source.get()).authorization == "Bearer rotated-2"
    assert source.reads == reads + 1  # an unchanged file is only looked at, not read


async def test_a_401_reads_the_token_file_again(token_file: Path, api: FakeApi) -> None:
    source = TokenFileCredentials(token_file, "alice", check_every=3600)
    api.valid = {"rotated-2"}
    rotate(token_file, "rotated-2")  # not looked at for an hour, but the 401 makes it
    client = client_for(api, source)
    try:
        assert (await client.get(CONFIGMAPS))["kind"] == "ConfigMap"
    finally:
        await client.close()
    assert [token for _, token in api.seen] == ["rotated-1", "rotated-2"]


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"tokenFile": str(tmp_path / "absent")})
    with pytest.raises(KubeError, match=r"kubeconfig user 'alice': tokenFile .*absent"):
        connection_from_kubeconfig(kubeconfig, None)


# ----------------------------------------------------------------------------- proxy-url


def test_proxy_url_with_credentials(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"token": "t"}, cluster={
        "server": "https://k8s.example", "proxy-url": "http://ops:pr0xy-pw@proxy.example:3128"})
    connection = connection_from_kubeconfig(kubeconfig, None)
    assert connection.proxy_url == "http://proxy.example:3128"
    assert connection.proxy_authorization == "Basic b3BzOnByMHh5LXB3"
    assert "pr0xy-pw" not in repr(connection)
    assert redact_known("proxy password pr0xy-pw") == "proxy password ***"


def test_a_socks_proxy_is_refused_by_name(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, {"token": "t"}, cluster={
        "server": "https://k8s.example", "proxy-url": "socks5://proxy.example:1080"})
    with pytest.raises(KubeError, match=r"proxy-url: socks5 scheme: .*http:// and https://"):
        connection_from_kubeconfig(kubeconfig, None)
