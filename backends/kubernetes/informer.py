"""List + watch, kept current in memory (what client-go calls a reflector and a store).

One :class:`Informer` per (resource, namespace or cluster-wide): it LISTs in pages, then
WATCHes from the list's resourceVersion with bookmarks, so a reconnect resumes where it left
off instead of re-listing. A 410 Gone (our resourceVersion was compacted away) re-lists.

A watch that ends after the server accepted it — the server's own timeout, a clean close, no
line for the idle timeout on a quiet resource, even a dropped connection — is routine: the
informer re-watches at once and shows nothing. What is an error, shown to the user through
``error`` / ``error_since`` until a later request succeeds, is a request that fails: the LIST
or the opening of a watch (refused, timed out, a non-2xx status other than 410), or an ERROR
event in the stream. Failed requests are retried with exponential backoff and jitter; a hung
(not crashed) API server shows up when the reopening after the idle timeout fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from backends.kubernetes.client import (
    WATCH_IDLE_TIMEOUT,
    KubeApiError,
    KubeClient,
    KubeError,
    KubeUnavailable,
)

log = logging.getLogger(__name__)


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


V = TypeVar("V", bound=Keyed)


@dataclass(frozen=True)
class Resource:
    """An API collection: ``/apis/apps/v1`` + ``deployments``; namespaced or not."""

    name: str  # "pods"
    prefix: str  # "/api/v1" or "/apis/apps/v1"
    namespaced: bool = True

    @property
    def group(self) -> str:
        """The API group as RBAC names it: "" for the core group, else "apps", "policy"."""
        parts = self.prefix.strip("/").split("/")
        return "" if parts[0] == "api" else parts[1]

    def path(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.prefix}/namespaces/{namespace}/{self.name}"
        return f"{self.prefix}/{self.name}"


DEPLOYMENTS = Resource("deployments", "/apis/apps/v1")
REPLICASETS = Resource("replicasets", "/apis/apps/v1")
PODS = Resource("pods", "/api/v1")
NODES = Resource("nodes", "/api/v1", namespaced=False)
BUDGETS = Resource("poddisruptionbudgets", "/apis/policy/v1")
EVENTS = Resource("events", "/api/v1")
# Everything sfops reads: the read-only ClusterRole (deploy/k8s/rbac-sfops.yaml) grants
# exactly these (a unit test holds the two together). The actions read nothing else.
READ_RESOURCES = (DEPLOYMENTS, REPLICASETS, PODS, NODES, BUDGETS, EVENTS)

# A watch that the server closes within this long, having sent nothing, is reopened after a
# backoff delay (growing while it repeats), so a proxy that cuts every stream is no hot loop.
QUICK_END_SECONDS = 1.0


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 10.0
    jitter: float = 0.3

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(0, attempt - 1))
        return base + random.uniform(0, self.jitter * base)  # noqa: S311 - jitter, not crypto


class Informer(Generic[V]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None,
        convert: Callable[[dict[str, Any]], V],
        *,
        on_change: Callable[[], None] = lambda: None,
        params: Mapping[str, str] | None = None,
        keep: Callable[[V], bool] = lambda item: True,
        request_timeout: float = 30.0,
        watch_timeout: tuple[int, int] = (240, 300),
        idle_timeout: float = WATCH_IDLE_TIMEOUT,
        backoff: Backoff = Backoff(),
        first_page: int | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.convert = convert
        self.on_change = on_change
        self.params = dict(params or {})
        self.keep = keep
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.idle_timeout = idle_timeout
        self.backoff = backoff
        # The first LIST's first page size (None: a full page), when its pages are shown as
        # they come: a screen can draw its first rows from a small page.
        self.first_page = first_page
        self.items: dict[str, V] = {}
        self.version = 0  # bumped on every change of ``items``
        self.resource_version = ""
        self.synced = asyncio.Event()
        # Set once the first LIST's first page is in the store (or the list is complete).
        self.first_page_in = asyncio.Event()
        self.connected = False
        self.error: str | None = None
        self.error_since: float | None = None  # monotonic time of the first failure in a row
        self.lists = 0
        self.watches = 0
        self.rewatches = 0  # accepted watches that ended quietly and were reopened
        self.events = 0
        self.last_event: float | None = None  # monotonic time of the last event or bookmark
        self._failures = 0  # failed requests in a row (for the backoff); 0 once a watch opens
        self._task: asyncio.Task[None] | None = None
        # Set to end a backoff wait early: the service saw the API server answer /readyz.
        self._retry = asyncio.Event()

    @property
    def name(self) -> str:
        return f"{self.resource.name}@{self.namespace or '*'}"

    @property
    def path(self) -> str:
        return self.resource.path(self.namespace)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def retry_now(self) -> None:
        """End a backoff wait after failures at once: the API server is known to answer again.

        After an outage of a few seconds the backoff has grown to its maximum (10 s + jitter),
        so without this the watches would stay closed for up to that long after the server is
        back, and the backend would read unreachable although ``/readyz`` answers. A wait after
        a quietly ended watch (a proxy cutting streams) is not shortened: that is no outage."""
        if self._failures:
            self._retry.set()

    async def _backoff(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._retry.wait()
        self._retry.clear()

    def _convert_kept(self, obj: dict[str, Any]) -> V | None:
        item = self.convert(obj)
        return item if self.keep(item) else None

    async def relist(self) -> None:
        on_page = self._add_page if not self.synced.is_set() and not self.items else None
        converted, version = await self.client.list_pages(
            self.path, self._convert_kept, params=self.params, timeout=self.request_timeout,
            on_page=on_page, first_page_size=self.first_page if on_page is not None else None,
        )
        # Swapped in whole: objects deleted while we were disconnected disappear here.
        self.items = {item.key: item for item in converted if item is not None}
        self.resource_version = version
        self.lists += 1
        self.version += 1
        self._healthy()
        self.synced.set()
        self.first_page_in.set()
        self.on_change()

    def _add_page(self, page: list[V | None]) -> None:
        """The first LIST shows its pages as they come (5,000 pods take seconds to list):
        nothing can have been deleted since, so adding is exact; ``synced`` stays unset."""
        self.items.update((item.key, item) for item in page if item is not None)
        self.version += 1
        self.first_page_in.set()
        self.on_change()

    def _healthy(self) -> None:
        self.connected = True
        self.error = None
        self.error_since = None
        self.last_event = time.monotonic()

    def _opened(self) -> None:
        if not self.connected or self.error is not None:
            self._healthy()
            self.on_change()

    def _failed(self, exc: BaseException) -> None:
        self.connected = False
        self.error = str(exc) or type(exc).__name__
        if self.error_since is None:
            self.error_since = time.monotonic()
        self.on_change()

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event to the store (also used by unit tests)."""
        kind = event.get("type")
        obj = event.get("object") or {}
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if version:
            self.resource_version = version
        self.last_event = time.monotonic()
        if kind == "BOOKMARK":
            return
        self.events += 1
        item = self.convert(obj)
        if kind == "DELETED" or not self.keep(item):
            if self.items.pop(item.key, None) is None:
                return
        elif kind in ("ADDED", "MODIFIED"):
            if self.items.get(item.key) == item:
                return  # e.g. a node heartbeat: nothing we show changed
            self.items[item.key] = item
        else:
            return
        self.version += 1
        self.on_change()

    async def _watch_once(self) -> bool:
        """One watch from our resourceVersion until it ends. Returns True when it ended at once
        with nothing received (reopened too eagerly, that would be a hot loop). Raises when
        the watch could not be opened, or for an ERROR event in the stream."""
        opened = False
        received = 0
        started = time.monotonic()

        def on_open() -> None:
            nonlocal opened
            opened = True
            self._failures = 0
            self._retry.clear()
            self._opened()

        low, high = self.watch_timeout
        self.watches += 1
        try:
            async for event in self.client.watch(
                self.path, resource_version=self.resource_version, params=self.params,
                timeout_seconds=random.randint(low, high),  # noqa: S311 - spread reconnects
                idle_timeout=self.idle_timeout, on_open=on_open,
            ):
                if not self.connected:
                    self._healthy()
                received += 1
                self.apply(event)
        except KubeUnavailable as exc:
            if not opened:
                raise  # the request failed: an error
            log.info("informer %s: %s; re-watching from %s", self.name, exc,
                     self.resource_version)
        self.rewatches += 1
        return received == 0 and time.monotonic() - started < QUICK_END_SECONDS

    async def run(self) -> None:
        self._failures = 0
        quick_ends = 0  # accepted watches in a row that ended at once, with nothing received
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                quick = await self._watch_once()
            except asyncio.CancelledError:
                raise
            except KubeApiError as exc:
                if exc.gone:
                    log.info("informer %s: %s; re-listing", self.name, exc)
                    need_list = True
                    await asyncio.sleep(self.backoff.delay(1))  # never a hot loop
                    continue
                self._failures += 1
                self._failed(exc)
                if exc.status in (401, 403, 404):
                    need_list = True  # permissions or the resource may come back changed
                await self._backoff(self.backoff.delay(self._failures))
                continue
            except (KubeError, ValueError) as exc:
                self._failures += 1
                self._failed(exc)
                await self._backoff(self.backoff.delay(self._failures))
                continue
            except Exception as exc:  # never let a bug silently end the informer
                log.exception("informer %s failed", self.name)
                self._failures += 1
                self._failed(exc)
                need_list = True
                await self._backoff(self.backoff.delay(self._failures))
                continue
            # The watch was accepted and has ended quietly: reopen it from our version.
            quick_ends = quick_ends + 1 if quick else 0
            if quick_ends:
                await asyncio.sleep(self.backoff.delay(quick_ends))
