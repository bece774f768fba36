"""Kubernetes credentials that change during a session: exec credential plugins
(``users[].user.exec``) and token files (``users[].user.tokenFile``), with client-go's semantics.

An exec plugin (``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``) is run off the
event loop with a timeout, in a minimal environment (the kubeconfig's ``env`` list on top of
:data:`PLUGIN_ENVIRONMENT`: never sfops's own, which may hold its secrets), with
``KUBERNETES_EXEC_INFO`` as client-go sets it (``interactive`` is always false: sfops owns the
terminal). Its credential (a token, or a client certificate and key) is cached until its
declared ``expirationTimestamp``; an expired credential, and a 401 on one, make the next
request run the plugin again, and requests that need a new credential at the same time share
one run. A token file is re-read when it changes (projected service-account tokens rotate) and
after a 401. :class:`~backends.kubernetes.client.KubeClient` retries a request once with the
credential :meth:`renew` hands back after a 401.

Why not the ``kubernetes`` package's own exec support: it runs the plugin synchronously while
the kubeconfig loads, with this process's whole environment, without a timeout or caching;
the kubeconfig loader is still what reads everything else (:func:`split_kubeconfig_auth`).

One source per distinct plugin configuration (or token file) per process, as client-go's
global authenticator cache: the read client, the operator client and the Lease client of the
same kubeconfig share one cached credential. Nothing is ever written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.kubernetes.client import Credential, KubeError
from backends.secrets import redact_known, remember

log = logging.getLogger(__name__)

EXEC_TIMEOUT = 20.0  # one plugin run; an SSO login prompt cannot happen here anyway
EXEC_OUTPUT_LIMIT = 1024 * 1024
STDERR_SHOWN = 300  # characters of a failed plugin's stderr quoted in the error
# client-go re-reads a token file at most once a minute; a 401 re-reads it at once.
TOKEN_FILE_CHECK_SECONDS = 60.0
FILE_TIMEOUT = 5.0  # reading a token file (it may sit on a hung network mount)
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
# What a plugin inherits from sfops's environment, no more: enough for cloud CLIs to find
# their files and the network. Filtered again by child_environment (no known secret).
PLUGIN_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ",
    "TMPDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)


class KubeCredentialError(KubeError):
    """A credential could not be had (the plugin failed, a token file is unreadable). The
    message names the kubeconfig user and the command or file, never a credential."""


# --------------------------------------------------------------------------- shared runs


class _SharedRun:
    """At most one refresh at a time: callers arriving while one runs wait for it. A caller
    that gives up (its own timeout) does not cancel the run the others wait for."""

    def __init__(self) -> None:
        self._task: asyncio.Task[Credential] | None = None

    async def run(self, refresh: Callable[[], Awaitable[Credential]]) -> Credential:
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(_call(refresh))
            # A run whose every waiter gave up still has its outcome looked at.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._task = task
        return await asyncio.shield(task)


async def _call(refresh: Callable[[], Awaitable[Credential]]) -> Credential:
    return await refresh()


# --------------------------------------------------------------------------- exec plugins


@dataclass(frozen=True)
class ExecSpec:
    """``users[<user>].user.exec`` of a kubeconfig, checked."""

    user: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may carry secrets
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    directory: str | None = None  # the kubeconfig's: relative commands and the plugin's cwd
    cluster: Mapping[str, Any] | None = None  # spec.cluster when provideClusterInfo is true

    @property
    def description(self) -> str:
        return f"kubeconfig user {self.user!r}: exec plugin {self.command!r}"

    def cache_key(self) -> str:
        return json.dumps(["exec", self.user, self.command, self.args, self.env,
                           self.api_version, self.directory, self.cluster], sort_keys=True)

    def exec_info(self) -> str:
        """``KUBERNETES_EXEC_INFO``: an ExecCredential with only its spec."""
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential",
                           "spec": spec})


def parse_exec(raw: Any, user: str, where: str, directory: str | None,
               cluster: Mapping[str, Any] | None) -> ExecSpec:
    """Check ``users[user].user.exec``; errors name the key."""
    key = f"{where}: users[{user}].user.exec"
    if not isinstance(raw, Mapping):
        raise KubeCredentialError(f"{key}: must be a mapping")
    api_version = raw.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeCredentialError(f"{key}.apiVersion: {api_version!r} is not supported "
                                  f"(one of {', '.join(EXEC_API_VERSIONS)})")
    command = raw.get("command")
    if not isinstance(command, str) or not command:
        raise KubeCredentialError(f"{key}.command: required")
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise KubeCredentialError(f"{key}.args: must be a list of strings")
    env: list[tuple[str, str]] = []
    for item in raw.get("env") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("value"), str):
            raise KubeCredentialError(f"{key}.env: every entry needs a name and a value")
        env.append((item["name"], item["value"]))
    mode = raw.get("interactiveMode")
    if mode is None and api_version.endswith("/v1"):
        raise KubeCredentialError(f"{key}.interactiveMode: required for {api_version}")
    if mode is not None and mode not in INTERACTIVE_MODES:
        raise KubeCredentialError(f"{key}.interactiveMode: {mode!r} (one of "
                                  f"{', '.join(INTERACTIVE_MODES)})")
    if mode == "Always":
        raise KubeCredentialError(f"{key}.interactiveMode: Always needs a terminal; sfops "
                                  "runs plugins without one (IfAvailable or Never)")
    if "/" in command and not os.path.isabs(command) and directory:
        command = os.path.join(directory, command)  # client-go: relative to the kubeconfig
    return ExecSpec(user=user, command=command, args=tuple(args), env=tuple(env),
                    api_version=api_version, install_hint=str(raw.get("installHint") or ""),
                    directory=directory,
                    cluster=cluster if raw.get("provideClusterInfo") else None)


def plugin_environment(spec: ExecSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    from backends.secrets import child_environment

    inherited = child_environment({k: v for k, v in (os.environ if base is None else base)
                                   .items() if k in PLUGIN_ENVIRONMENT})
    return {**inherited, **dict(spec.env), "KUBERNETES_EXEC_INFO": spec.exec_info()}


class ExecCredentials:
    """The credential of one exec plugin, cached until its declared expiry."""

    def __init__(self, spec: ExecSpec, *, timeout: float = EXEC_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.timeout = timeout
        self.clock = clock
        self.runs = 0  # plugin runs (tests, and the lab's counter, compare)
        self._cached: Credential | None = None
        self._serial = 0
        self._refresh = _SharedRun()

    @property
    def description(self) -> str:
        return self.spec.description

    def _valid(self, credential: Credential | None) -> bool:
        return credential is not None and (credential.expires_at is None
                                           or self.clock() < credential.expires_at)

    async def get(self) -> Credential:
        cached = self._cached
        if self._valid(cached):
            assert cached is not None
            return cached
        return await self._refresh.run(self._run_plugin)

    async def renew(self, rejected: Credential) -> Credential | None:
        """After a 401 with ``rejected``: a newer credential (another request's refresh, or a
        plugin run now). None when the plugin handed out the same one again."""
        cached = self._cached
        if cached is not None and cached.serial != rejected.serial and self._valid(cached):
            return cached
        fresh = await self._refresh.run(self._run_plugin)
        return None if fresh.same_secret(rejected) else fresh

    async def _run_plugin(self) -> Credential:
        spec = self.spec
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                spec.command, *spec.args, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=plugin_environment(spec), cwd=spec.directory or None,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except FileNotFoundError:
            hint = f"; {spec.install_hint.strip()}" if spec.install_hint.strip() else ""
            raise KubeCredentialError(f"{spec.description}: command not found{hint}") from None
        except OSError as exc:
            raise KubeCredentialError(f"{spec.description}: cannot run: "
                                      f"{exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await process.communicate()
        except BaseException as exc:
            await _kill(process)
            if isinstance(exc, TimeoutError):
                raise KubeCredentialError(f"{spec.description}: no answer within "
                                          f"{self.timeout:g} s") from None
            raise
        if process.returncode != 0:
            detail = _tail(stderr)
            raise KubeCredentialError(
                f"{spec.description}: exited with status {process.returncode}"
                + (f": {detail}" if detail else ""))
        self._serial += 1
        credential = parse_exec_output(stdout, spec, self._serial)
        self._cached = credential
        return credential


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await process.wait()


def _tail(stderr: bytes) -> str:
    text = " ".join(stderr.decode("utf-8", "replace").split())
    if len(text) > STDERR_SHOWN:
        text = "..." + text[-STDERR_SHOWN:]
    return redact_known(text)


def parse_exec_output(stdout: bytes, spec: ExecSpec, serial: int) -> Credential:
    """The plugin's ExecCredential. The error never quotes the output (it holds the token)."""
    what = spec.description
    if len(stdout) > EXEC_OUTPUT_LIMIT:
        raise KubeCredentialError(f"{what}: output over {EXEC_OUTPUT_LIMIT} bytes")
    try:
        data = json.loads(stdout)
    except ValueError:
        raise KubeCredentialError(f"{what}: output is not an ExecCredential (not JSON)"
                                  ) from None
    if not isinstance(data, dict) or data.get("kind") != "ExecCredential":
        raise KubeCredentialError(f"{what}: output is not an ExecCredential")
    if data.get("apiVersion") != spec.api_version:
        raise KubeCredentialError(f"{what}: answered apiVersion {data.get('apiVersion')!r}, "
                                  f"the kubeconfig asks for {spec.api_version}")
    status = data.get("status")
    if not isinstance(status, dict):
        raise KubeCredentialError(f"{what}: the ExecCredential has no status")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if (cert is None) != (key is None):
        raise KubeCredentialError(f"{what}: status.clientCertificateData and "
                                  "status.clientKeyData come together")
    if token is None and cert is None:
        raise KubeCredentialError(f"{what}: status has neither token nor "
                                  "clientCertificateData")
    if not all(isinstance(v, str) for v in (token, cert, key) if v is not None):
        raise KubeCredentialError(f"{what}: status fields must be strings")
    expires_at: float | None = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            expires_at = datetime.fromisoformat(str(stamp)).timestamp()
        except ValueError:
            raise KubeCredentialError(f"{what}: status.expirationTimestamp {stamp!r} is not "
                                      "an RFC 3339 time") from None
    remember(token)
    remember(key)
    return Credential(
        authorization=f"Bearer {token}" if token else None,
        client_cert=(cert.encode(), key.encode()) if cert and key else None,
        expires_at=expires_at, serial=serial)


# --------------------------------------------------------------------------- token files


def _stamp(path: Path) -> tuple[int, int, int]:
    info = path.stat()  # follows the symlinks a projected volume swaps
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _read_token(path: Path) -> tuple[str, tuple[int, int, int]]:
    stamp = _stamp(path)
    return path.read_text(encoding="utf-8").strip(), stamp


class TokenFileCredentials:
    """``users[].user.tokenFile``: read at load, re-read when it changed (checked at most every
    ``check_every`` seconds, off the event loop) and after every 401."""

    def __init__(self, path: Path, user: str, *,
                 check_every: float = TOKEN_FILE_CHECK_SECONDS) -> None:
        self.path = path
        self.description = f"kubeconfig user {user!r}: tokenFile {str(path)!r}"
        self.check_every = check_every
        try:
            token, self._stamp = _read_token(path)  # at load, as the rest of the kubeconfig
        except OSError as exc:
            raise KubeCredentialError(f"{self.description}: {exc.strerror or exc}") from None
        self.reads = 1
        self._serial = 1
        self._cached = self._credential(token)
        self._checked = time.monotonic()
        self._refresh = _SharedRun()

    def _credential(self, token: str) -> Credential:
        if not token:
            raise KubeCredentialError(f"{self.description}: the file is empty")
        remember(token)
        return Credential(authorization=f"Bearer {token}", serial=self._serial)

    async def get(self) -> Credential:
        if time.monotonic() - self._checked >= self.check_every:
            return await self._refresh.run(lambda: self._reload(force=False))
        return self._cached

    async def renew(self, rejected: Credential) -> Credential | None:
        fresh = await self._refresh.run(lambda: self._reload(force=True))
        return None if fresh.same_secret(rejected) else fresh

    async def _reload(self, *, force: bool) -> Credential:
        self._checked = time.monotonic()
        try:
            async with asyncio.timeout(FILE_TIMEOUT):
                if not force and await asyncio.to_thread(_stamp, self.path) == self._stamp:
                    return self._cached
                token, stamp = await asyncio.to_thread(_read_token, self.path)
        except (OSError, TimeoutError) as exc:
            # Mid-rotation or a hung mount: keep the token we have (client-go does too).
            log.warning("%s: %s; keeping the last token", self.description,
                        getattr(exc, "strerror", None) or type(exc).__name__)
            return self._cached
        self.reads += 1
        if stamp != self._stamp and token:
            self._serial += 1
            self._stamp = stamp
            self._cached = self._credential(token)
        return self._cached


# --------------------------------------------------------------------------- the registry

CredentialSourceType = ExecCredentials | TokenFileCredentials
_SOURCES: dict[str, CredentialSourceType] = {}


def exec_source(spec: ExecSpec) -> ExecCredentials:
    source = _SOURCES.get(spec.cache_key())
    if not isinstance(source, ExecCredentials):
        source = _SOURCES[spec.cache_key()] = ExecCredentials(spec)
    return source


def token_file_source(path: Path, user: str) -> TokenFileCredentials:
    key = json.dumps(["tokenFile", str(path.resolve())])
    source = _SOURCES.get(key)
    if not isinstance(source, TokenFileCredentials):
        source = _SOURCES[key] = TokenFileCredentials(path, user)
    return source
