"""A live screen's poll during a slow first LIST (5,000 pods take seconds): it returns what has
arrived, marked not synced, instead of waiting for the whole list; without ``partial_wait`` (the
CLI, one-shot readings) a poll waits for the sync as before."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.kubernetes.client import RequestStats
from backends.kubernetes.config import KubernetesConfig
from backends.kubernetes.service import KubernetesService
from tests.unit.test_k8s_objects import deployment, node, pod, replicaset


class PagedClient:
    """Lists answer at once, except the pods': their first page comes, the second waits for
    ``release``."""

    host = "https://fake"

    def __init__(self) -> None:
        self.stats = RequestStats()
        self.release = asyncio.Event()

    async def list_pages(self, path, convert, *, params=None, timeout=None, page_size=500,
                         on_page=None):
        if path.endswith("/pods"):
            first = [convert(pod(f"api-abcde-{i}")) for i in range(2)]
            if on_page is not None:
                on_page(first)
            await self.release.wait()
            second = [convert(pod("api-abcde-2"))]
            if on_page is not None:
                on_page(second)
            return first + second, "10"
        items: list[dict[str, Any]] = []
        if path.endswith("/deployments"):
            items = [deployment(revision=3)]
        elif path.endswith("/replicasets"):
            items = [replicaset("api-abcde", 3)]
        elif path.endswith("/nodes"):
            items = [node("node-1")]
        return [convert(item) for item in items], "10"

    async def watch(self, path, **kwargs):
        on_open = kwargs.get("on_open")
        if on_open is not None:
            on_open()
        await asyncio.sleep(3600)
        yield {}

    async def close(self) -> None:
        pass


async def test_a_live_poll_shows_the_first_pages_then_the_whole_list():
    client = PagedClient()
    service = KubernetesService(KubernetesConfig(namespaces=("streamforge",)),
                                client)  # type: ignore[arg-type]
    service.partial_wait = 0.05
    try:
        partial = await service.poll()
        assert not partial.synced and partial.syncing == ("pods",)
        assert [p.info.name for p in partial.all_pods()] == ["api-abcde-0", "api-abcde-1"]
        assert partial.deployments[0].info.name == "api"  # the pods under their Deployment
        client.release.set()
        complete = await service.poll()
        assert complete.synced and complete.pod_count == 3
    finally:
        await service.close()


async def test_a_one_shot_poll_waits_for_the_whole_list():
    client = PagedClient()
    service = KubernetesService(KubernetesConfig(namespaces=("streamforge",)),
                                client)  # type: ignore[arg-type]
    try:
        poll = asyncio.ensure_future(service.poll())
        await asyncio.sleep(0.2)
        assert not poll.done()  # still waiting for the pods' LIST
        client.release.set()
        status = await poll
        assert status.synced and status.pod_count == 3
    finally:
        await service.close()
