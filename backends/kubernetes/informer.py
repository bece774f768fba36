"""List + watch, kept current in memory (what client-go calls a reflector and a store).

One :class:`Informer` per (resource, namespace or cluster-wide): it LISTs in pages, then
WATCHes from the list's resourceVersion with bookmarks, so a reconnect resumes where it left
off instead of re-listing. A 410 Gone (our resourceVersion was compacted away) re-lists; any
other failure reconnects with exponential backoff and jitter. Every request has a timeout; a
watch that stays silent longer than the idle timeout counts as broken.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from backends.kubernetes.client import KubeApiError, KubeClient, KubeError

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
        backoff: Backoff = Backoff(),
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
        self.backoff = backoff
        self.items: dict[str, V] = {}
        self.version = 0  # bumped on every change of ``items``
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.connected = False
        self.error: str | None = None
        self.error_since: float | None = None  # monotonic time of the first failure in a row
        self.lists = 0
        self.watches = 0
        self.events = 0
        self.last_event: float | None = None  # monotonic time of the last event or bookmark
        self._task: asyncio.Task[None] | None = None

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

    def _convert_kept(self, obj: dict[str, Any]) -> V | None:
        item = self.convert(obj)
        return item if self.keep(item) else None

    async def relist(self) -> None:
        converted, version = await self.client.list_pages(
            self.path, self._convert_kept, params=self.params, timeout=self.request_timeout
        )
        # Swapped in whole: objects deleted while we were disconnected disappear here.
        self.items = {item.key: item for item in converted if item is not None}
        self.resource_version = version
        self.lists += 1
        self.version += 1
        self._healthy()
        self.synced.set()
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

    async def run(self) -> None:
        attempt = 0
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                low, high = self.watch_timeout
                self.watches += 1
                async for event in self.client.watch(
                    self.path, resource_version=self.resource_version, params=self.params,
                    timeout_seconds=random.randint(low, high),  # noqa: S311 - spread reconnects
                    on_open=self._opened,
                ):
                    if not self.connected:
                        self._healthy()
                    attempt = 0
                    self.apply(event)
                # The server ended the watch (timeoutSeconds): resume from our version.
                self._healthy()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except KubeApiError as exc:
                if exc.gone:
                    log.info("informer %s: %s; re-listing", self.name, exc)
                    need_list = True
                    await asyncio.sleep(self.backoff.delay(1))  # never a hot loop
                    continue
                attempt += 1
                self._failed(exc)
                if exc.status in (401, 403, 404):
                    need_list = True  # permissions or the resource may come back changed
                await asyncio.sleep(self.backoff.delay(attempt))
            except (KubeError, ValueError) as exc:
                attempt += 1
                self._failed(exc)
                await asyncio.sleep(self.backoff.delay(attempt))
            except Exception as exc:  # never let a bug silently end the informer
                log.exception("informer %s failed", self.name)
                attempt += 1
                self._failed(exc)
                need_list = True
                await asyncio.sleep(self.backoff.delay(attempt))
