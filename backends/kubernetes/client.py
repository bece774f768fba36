"""A small asyncio client for the Kubernetes API: JSON in, plain dicts out.

Why not the generated client (``kubernetes.aio``): it turns every object into model classes,
which costs more than the request itself at 5,000 pods (k9s#663 is this cost), and its watch
helper re-lists at most once on 410 and hides bookmarks. We only need a handful of verbs, every
one with an explicit timeout, and request counters for the benchmark. The kubeconfig is still
read by the ``kubernetes`` package's loader (contexts, inline certificates, tokens).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from backends.secrets import redact_text, remember
from backends.service import BackendUnreachable

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# A watch with no line (event or bookmark) for this long is ended and reopened from its
# resourceVersion: it bounds how long a hung (not crashed) API server goes unnoticed, since the
# reopening request then fails. On a quiet resource it is routine, not an error.
WATCH_IDLE_TIMEOUT = 90.0
# Parse big LIST bodies off the event loop so the UI never stalls on a 20 MB page.
THREAD_PARSE_BYTES = 256 * 1024

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """Anything that went wrong talking to the API server."""


class KubeUnavailable(KubeError, BackendUnreachable):
    """The API server could not be reached (refused, reset, timed out)."""


class KubeApiError(KubeError):
    """The API server answered with an error status (its ``Status`` message included)."""

    def __init__(self, status: int, reason: str, message: str, *, what: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.what = what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{status} {reason}: {message}" if message
                         else f"{prefix}{status} {reason}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class Connection:
    """Where and how to connect, resolved from a kubeconfig."""

    host: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = field(default=None, repr=False)  # never in a repr or a log
    verify: bool = True
    tls_server_name: str | None = None
    context: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.host.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def connection_from_kubeconfig(path: Path | None, context: str | None) -> Connection:
    """Resolve ``context`` (or the current one) of the kubeconfig at ``path`` (or the default
    ``$KUBECONFIG`` / ``~/.kube/config``). Raises :class:`KubeError` with a readable message."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path) if path is not None else None, context=context,
            client_configuration=configuration, persist_config=False,
        )
    except Exception as exc:  # ConfigException, OSError, YAML errors: all "bad kubeconfig"
        where = str(path) if path is not None else "default kubeconfig"
        # A YAML error quotes the line it stopped at, which may be a `token:` line.
        raise KubeError(redact_text(f"kubeconfig {where}: {exc}")) from exc
    token = configuration.api_key.get("BearerToken") or configuration.api_key.get(
        "authorization")
    if token and not str(token).lower().startswith("bearer "):
        token = f"Bearer {token}"
    if token:
        # A known secret from here on: redacted by value wherever text leaves sfops.
        remember(str(token).split(" ", 1)[-1])
    return Connection(
        host=str(configuration.host).rstrip("/"),
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        token=token,
        verify=bool(configuration.verify_ssl),
        tls_server_name=getattr(configuration, "tls_server_name", None),
        context=context,
    )


@dataclass
class RequestStats:
    """Requests made, by verb (``list`` / ``watch`` / ``get`` / ``patch`` / ``post``), and bytes
    received — what the benchmark compares with a kubectl poller."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0
    # How accepted watches ended: "closed" by the server, "idle" (nothing for the idle
    # timeout), "broken" (the connection failed mid-stream).
    watch_ends: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def count(self, verb: str) -> None:
        self.requests[verb] += 1

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def _status_error(status: int, body: bytes, what: str) -> KubeApiError:
    reason, message = "", ""
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            reason = str(data.get("reason") or "")
            message = str(data.get("message") or "")
    except ValueError:
        message = body[:200].decode("utf-8", "replace")
    return KubeApiError(status, reason or _REASONS.get(status, "Error"), message, what=what)


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 410: "Gone", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable"}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class KubeClient:
    """One API server. The HTTP session is created lazily in the running event loop."""

    def __init__(self, connection: Connection, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connection = connection
        self.timeout = timeout
        self.stats = RequestStats()
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None

    @property
    def host(self) -> str:
        return self.connection.host

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._ssl is None:
                self._ssl = self.connection.ssl_context()
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=64)
            headers = {"Accept": "application/json", "User-Agent": "sfops"}
            if self.connection.token:
                headers["Authorization"] = self.connection.token
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, trust_env=False,
                # One watch event is one line; allow big objects (lines up to 2 x 4 MiB).
                read_bufsize=4 * 1024 * 1024,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=CONNECT_TIMEOUT),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _server_hostname(self) -> str | None:
        return self.connection.tls_server_name

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - passed to aiohttp, enforced there
        verb: str | None = None,
        what: str = "",
    ) -> bytes:
        """One request; returns the body. Raises KubeApiError (>= 400) or KubeUnavailable."""
        session = self._get_session()
        self.stats.count(verb or method.lower())
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else None
        seconds = self.timeout if timeout is None else timeout
        what = what or f"{method} {path}"
        try:
            async with session.request(
                method, self.host + path, params=_params(params), data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds, connect=CONNECT_TIMEOUT),
                server_hostname=self._server_hostname(),
            ) as response:
                payload = await response.read()
                self.stats.bytes_received += len(payload)
                if response.status >= 400:
                    raise _status_error(response.status, payload, what)
                return payload
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeUnavailable(f"{what}: {_describe(exc)}") from exc

    async def get(self, path: str, params: Mapping[str, str | int] | None = None, *,
                  timeout: float | None = None, what: str = "") -> dict[str, Any]:  # noqa: ASYNC109
        return _object(await self.request("GET", path, params=params, timeout=timeout,
                                          verb="get", what=what))

    async def patch(self, path: str, body: Any, content_type: str = STRATEGIC_PATCH, *,
                    timeout: float | None = None, what: str = "") -> dict[str, Any]:  # noqa: ASYNC109
        return _object(await self.request("PATCH", path, body=body, content_type=content_type,
                                          timeout=timeout, verb="patch", what=what))

    async def post(self, path: str, body: Any, *, timeout: float | None = None,  # noqa: ASYNC109
                   what: str = "") -> dict[str, Any]:
        return _object(await self.request("POST", path, body=body, timeout=timeout,
                                          verb="post", what=what))

    async def list_pages(
        self,
        path: str,
        convert: Callable[[dict[str, Any]], T],
        *,
        params: Mapping[str, str | int] | None = None,
        page_size: int = 500,
        timeout: float | None = None,  # noqa: ASYNC109 - per page
        on_page: Callable[[list[T]], None] | None = None,
    ) -> tuple[list[T], str]:
        """LIST in pages of ``page_size`` (as kubectl does), converting every item with
        ``convert``; big pages are parsed and converted in a worker thread. Returns the items
        and the list's resourceVersion (where a watch continues from); ``on_page`` sees each
        page's items as it arrives."""
        items: list[T] = []
        token: str | None = None
        resource_version = ""
        while True:
            query: dict[str, str | int] = dict(params or {})
            query["limit"] = page_size
            if token:
                query["continue"] = token
            body = await self.request("GET", path, params=query, timeout=timeout, verb="list",
                                      what=f"list {path}")
            if len(body) >= THREAD_PARSE_BYTES:
                page, meta = await asyncio.to_thread(_convert_page, body, convert)
            else:
                page, meta = _convert_page(body, convert)
            items.extend(page)
            if on_page is not None:
                on_page(page)
            resource_version = str(meta.get("resourceVersion") or resource_version)
            token = meta.get("continue") or None
            if not token:
                return items, resource_version

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        params: Mapping[str, str | int] | None = None,
        timeout_seconds: int = 300,
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
        open_timeout: float | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (dicts with ``type`` and ``object``) from ``resource_version``,
        with bookmarks.

        Opening the watch is a request like any other: KubeUnavailable when it cannot be made
        within ``open_timeout`` (default: the client's timeout), KubeApiError for a bad status.
        ``on_open`` is called once the server has accepted the watch. After that, a watch that
        ends because nothing happened simply ends (the caller resumes from its
        resourceVersion): the server closing it (``timeout_seconds``) or no line for
        ``idle_timeout`` — a quiet resource sends nothing for minutes, and whether the server is
        still there is for the next open to tell. A stream that breaks otherwise raises
        KubeUnavailable; an ERROR event raises KubeApiError (410 Gone: the caller re-lists)."""
        session = self._get_session()
        self.stats.count("watch")
        query: dict[str, str | int] = dict(params or {})
        query.update(watch="1", resourceVersion=resource_version, allowWatchBookmarks="true",
                     timeoutSeconds=timeout_seconds)
        what = f"watch {path}"
        opening = self.timeout if open_timeout is None else open_timeout
        try:
            async with asyncio.timeout(opening):
                response = await session.get(
                    self.host + path, params=_params(query),
                    server_hostname=self._server_hostname(),
                    timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                                  sock_read=idle_timeout),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeUnavailable(f"{what}: {_describe(exc)}") from exc
        async with response:
            if response.status >= 400:
                try:
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise KubeUnavailable(f"{what}: {_describe(exc)}") from exc
                raise _status_error(response.status, body, what)
            if on_open is not None:
                on_open()
            try:
                async for line in response.content:
                    self.stats.bytes_received += len(line)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise KubeApiError(int(status.get("code") or 500),
                                           str(status.get("reason") or "Error"),
                                           str(status.get("message") or ""), what=what)
                    yield event
            except aiohttp.SocketTimeoutError:
                self.stats.watch_ends["idle"] += 1
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.stats.watch_ends["broken"] += 1
                raise KubeUnavailable(f"{what}: stream broke: {_describe(exc)}") from exc
            self.stats.watch_ends["closed"] += 1


def _params(params: Mapping[str, str | int] | None) -> dict[str, str] | None:
    return None if params is None else {k: str(v) for k, v in params.items()}


def _object(body: bytes) -> dict[str, Any]:
    data = json.loads(body) if body else {}
    if not isinstance(data, dict):
        raise KubeError(f"unexpected answer: {str(data)[:100]}")
    return data


def _convert_page(body: bytes, convert: Callable[[dict[str, Any]], T]
                  ) -> tuple[list[T], dict[str, Any]]:
    data = json.loads(body)
    return [convert(item) for item in data.get("items") or ()], dict(data.get("metadata") or {})
