"""A small asyncio client for the Kubernetes API: JSON in, plain dicts out.

Why not the generated client (``kubernetes.aio``): it turns every object into model classes,
which costs more than the request itself at 5,000 pods (k9s#663 is this cost), and its watch
helper re-lists at most once on 410 and hides bookmarks. We only need a handful of verbs, every
one with an explicit timeout, and request counters for the benchmark. The kubeconfig is still
read by the ``kubernetes`` package's loader (:mod:`backends.kubernetes.kubeconfig`); exec
plugins and token files, whose credentials change during a session, are
:mod:`backends.kubernetes.credentials`' (every request asks, a 401 renews once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp

from backends.service import BackendUnreachable

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# A watch with no line (event or bookmark) for this long is ended and reopened from its
# resourceVersion: it bounds how long a hung (not crashed) API server goes unnoticed, since the
# reopening request then fails. On a quiet resource it is routine, not an error.
WATCH_IDLE_TIMEOUT = 90.0
# Parse big LIST bodies off the event loop so the UI never stalls on a 20 MB page.
THREAD_PARSE_BYTES = 256 * 1024
# A session of a client certificate the exec plugin has since replaced is closed this long
# after (its requests end first; a watch on it is reopened by its informer).
RETIRE_SECONDS = 60.0

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
class Credential:
    """One credential a request is sent with: an ``Authorization`` value and/or a client
    certificate and key (PEM), valid until ``expires_at`` (epoch seconds; None: until a
    401). ``serial`` tells a source's successive credentials apart."""

    authorization: str | None = field(default=None, repr=False)
    client_cert: tuple[bytes, bytes] | None = field(default=None, repr=False)
    expires_at: float | None = None
    serial: int = 0

    def same_secret(self, other: Credential) -> bool:
        return (self.authorization, self.client_cert) == (other.authorization,
                                                          other.client_cert)


class CredentialSource(Protocol):
    """Where a connection's credential comes from each time (backends.kubernetes.credentials:
    an exec plugin, a token file)."""

    @property
    def description(self) -> str: ...

    async def get(self) -> Credential: ...

    async def renew(self, rejected: Credential) -> Credential | None: ...


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
    # An exec plugin or a token file: asked for the credential at every request.
    credentials: CredentialSource | None = field(default=None, compare=False, repr=False)
    # The cluster's proxy-url (http or https), without its userinfo, which becomes
    # ``proxy_authorization`` (a Proxy-Authorization header value).
    proxy_url: str | None = None
    proxy_authorization: str | None = field(default=None, repr=False)

    def ssl_context(self, client_cert: tuple[bytes, bytes] | None = None
                    ) -> ssl.SSLContext | bool:
        if not self.host.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert is not None:
            _load_cert_chain_in_memory(context, *client_cert)
        elif self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _load_cert_chain_in_memory(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` reads only files, and a plugin's key must never touch the disk:
    anonymous in-memory files (Linux memfd) stand in for them."""
    import os

    if not hasattr(os, "memfd_create"):
        raise KubeError("a client certificate from an exec plugin needs Linux (memfd_create)")
    fds: list[int] = []
    try:
        for data in (cert, key):
            fd = os.memfd_create("sfops-k8s-credential", os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    except (OSError, ssl.SSLError) as exc:
        raise KubeError(f"client certificate from the exec plugin: {exc}") from None
    finally:
        for fd in fds:
            os.close(fd)


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
    """One API server. The HTTP session is created lazily in the running event loop.

    Every request asks the connection's credential source (if any) for the credential to
    send; a 401 on it renews the credential and repeats the request once, writes included:
    a 401 means the server did not act."""

    def __init__(self, connection: Connection, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.connection = connection
        self.timeout = timeout
        self.stats = RequestStats()
        self._session: aiohttp.ClientSession | None = None
        self._session_cert: tuple[bytes, bytes] | None = None
        self._retired: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return self.connection.host

    def _get_session(self, credential: Credential | None = None) -> aiohttp.ClientSession:
        cert = credential.client_cert if credential is not None else None
        session = self._session
        if session is not None and not session.closed and cert != self._session_cert:
            self._retire(session)  # the plugin's client certificate changed
            session = None
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context(cert), limit=64)
            headers = {"Accept": "application/json", "User-Agent": "sfops"}
            if self.connection.token:
                headers["Authorization"] = self.connection.token
            session = self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, trust_env=False,
                # One watch event is one line; allow big objects (lines up to 2 x 4 MiB).
                read_bufsize=4 * 1024 * 1024,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=CONNECT_TIMEOUT),
            )
            self._session_cert = cert
        return session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close a session of an older client certificate once its requests had time to end
        (client-go closes such connections too; a watch on it reopens with the new one)."""
        self._retired.add(session)
        asyncio.get_running_loop().call_later(RETIRE_SECONDS, self._close_retired, session)

    def _close_retired(self, session: aiohttp.ClientSession) -> None:
        if session in self._retired:
            self._retired.discard(session)
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        sessions = [*self._retired, *([self._session] if self._session else [])]
        self._session = None
        self._retired.clear()
        for session in sessions:
            if not session.closed:
                await session.close()

    def _server_hostname(self) -> str | None:
        return self.connection.tls_server_name

    async def _credential(self) -> Credential | None:
        source = self.connection.credentials
        return None if source is None else await source.get()

    async def _renewed(self, exc: KubeApiError, used: Credential | None) -> Credential | None:
        """After an error answer: the credential to repeat the request with, once (a 401 on
        a credential its source can renew), else None."""
        source = self.connection.credentials
        if exc.status != 401 or source is None or used is None:
            return None
        fresh = await source.renew(used)
        if fresh is not None:
            log.info("%s: 401 Unauthorized; renewed the credential, repeating once",
                     source.description)
        return fresh

    def _request_options(self, credential: Credential | None) -> dict[str, Any]:
        options: dict[str, Any] = {"server_hostname": self._server_hostname()}
        if credential is not None and credential.authorization:
            options["headers"] = {"Authorization": credential.authorization}
        if self.connection.proxy_url:
            options["proxy"] = self.connection.proxy_url
            if self.connection.proxy_authorization:
                options["proxy_headers"] = {
                    "Proxy-Authorization": self.connection.proxy_authorization}
        return options

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
        """One request; returns the body. Raises KubeApiError (>= 400) or KubeUnavailable.
        A 401 renews the credential and repeats the request once."""
        data = None if body is None else json.dumps(body).encode()
        what = what or f"{method} {path}"
        credential = await self._credential()
        try:
            return await self._send(method, path, params, data, content_type, timeout,
                                    verb, what, credential)
        except KubeApiError as exc:
            fresh = await self._renewed(exc, credential)
            if fresh is None:
                raise
            return await self._send(method, path, params, data, content_type, timeout,
                                    verb, what, fresh)

    async def _send(self, method: str, path: str, params: Mapping[str, str | int] | None,
                    data: bytes | None, content_type: str, timeout: float | None,  # noqa: ASYNC109
                    verb: str | None, what: str, credential: Credential | None) -> bytes:
        session = self._get_session(credential)
        self.stats.count(verb or method.lower())
        options = self._request_options(credential)
        if data is not None:
            options["headers"] = {**options.get("headers", {}), "Content-Type": content_type}
        seconds = self.timeout if timeout is None else timeout
        try:
            async with session.request(
                method, self.host + path, params=_params(params), data=data,
                timeout=aiohttp.ClientTimeout(total=seconds, connect=CONNECT_TIMEOUT),
                **options,
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
        first_page_size: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - per page
        on_page: Callable[[list[T]], None] | None = None,
    ) -> tuple[list[T], str]:
        """LIST in pages of ``page_size`` (as kubectl does), converting every item with
        ``convert``; big pages are parsed and converted in a worker thread. Returns the items
        and the list's resourceVersion (where a watch continues from); ``on_page`` sees each
        page's items as it arrives. ``first_page_size`` asks for a smaller first page (the
        server takes any limit with a continue token): what a screen shows first arrives
        after a small request and a small decode instead of a full page."""
        items: list[T] = []
        token: str | None = None
        resource_version = ""
        limit = first_page_size or page_size
        while True:
            query: dict[str, str | int] = dict(params or {})
            query["limit"] = limit
            limit = page_size
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
        query: dict[str, str | int] = dict(params or {})
        query.update(watch="1", resourceVersion=resource_version, allowWatchBookmarks="true",
                     timeoutSeconds=timeout_seconds)
        what = f"watch {path}"
        opening = self.timeout if open_timeout is None else open_timeout
        credential = await self._credential()
        try:
            response = await self._open_watch(path, query, opening, idle_timeout, what,
                                              credential)
        except KubeApiError as exc:
            fresh = await self._renewed(exc, credential)
            if fresh is None:
                raise
            response = await self._open_watch(path, query, opening, idle_timeout, what, fresh)
        async with response:
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

    async def _open_watch(self, path: str, query: Mapping[str, str | int], opening: float,
                          idle_timeout: float, what: str, credential: Credential | None
                          ) -> aiohttp.ClientResponse:
        """The accepted watch response (status < 400), or KubeApiError / KubeUnavailable."""
        session = self._get_session(credential)
        self.stats.count("watch")
        try:
            async with asyncio.timeout(opening):
                response = await session.get(
                    self.host + path, params=_params(query),
                    timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                                  sock_read=idle_timeout),
                    **self._request_options(credential),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeUnavailable(f"{what}: {_describe(exc)}") from exc
        if response.status < 400:
            return response
        async with response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise KubeUnavailable(f"{what}: {_describe(exc)}") from exc
        raise _status_error(response.status, body, what)


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
