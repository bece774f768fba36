"""A live screen's poll during a slow first LIST (5,000 pods take seconds): it returns what has
arrived, marked not synced, instead of waiting for the whole list; without ``partial_wait`` (the
CLI, one-shot readings) a poll waits for the sync as before."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.kubernetes.client import RequestStats
from backends.kubernetes.config import KubernetesConfig
from backends.kubernetes.service import FIRST_PODS_PAGE, KubernetesService
from tests.unit.test_k8s_objects import deployment, node, pod, replicaset


class PagedClient:
    """Lists answer at once, except the pods': their first page comes, the second waits for
    ``release``."""

    host = "https://fake"

    def __init__(self) -> None:
        self.stats = RequestStats()
        self.release = asyncio.Event()
        self.nodes_release = asyncio.Event()
        self.nodes_release.set()  # the nodes' list answers at once unless a test holds it
        self.first_page_sizes: dict[str, int | None] = {}
        # Per LIST asked for: the resource, and what had been answered by then (a whole
        # list, or the pods' first page).
        self.listed: list[tuple[str, frozenset[str]]] = []
        self.answered: set[str] = set()

    async def list_pages(self, path, convert, *, params=None, timeout=None, page_size=500,
                         first_page_size=None, on_page=None):
        name = path.rsplit("/", 1)[-1]
        self.first_page_sizes[name] = first_page_size
        self.listed.append((name, frozenset(self.answered)))
        if path.endswith("/nodes"):
            await self.nodes_release.wait()
        if path.endswith("/pods"):
            first = [convert(pod(f"api-abcde-{i}")) for i in range(2)]
            if on_page is not None:
                on_page(first)
            self.answered.add(name)
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
        self.answered.add(name)
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
        # The first screenful: the nodes, budgets and events start only now, after it.
        assert not partial.synced and "pods" in partial.syncing
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


async def test_the_first_live_poll_returns_once_the_first_screenful_is_in():
    """Deployments, ReplicaSets and the pods' first (small) page: the first poll shows them
    without waiting for the rest — here the nodes' list and the pods' second page never come
    until released, and ``partial_wait`` is an hour."""
    client = PagedClient()
    client.nodes_release.clear()
    service = KubernetesService(KubernetesConfig(namespaces=("streamforge",)),
                                client)  # type: ignore[arg-type]
    service.partial_wait = 3600.0
    try:
        async with asyncio.timeout(60):  # a guard against a hang, not a measured duration
            first = await service.poll()
        assert not first.synced and {"nodes", "pods"} <= set(first.syncing)
        assert not {"deployments", "replicasets"} & set(first.syncing)
        assert first.deployments[0].info.name == "api"
        assert [p.info.name for p in first.deployments[0].pods] == ["api-abcde-0",
                                                                     "api-abcde-1"]
        assert first.nodes == ()
        assert client.first_page_sizes["pods"] == FIRST_PODS_PAGE
        assert client.first_page_sizes["deployments"] is None  # small lists: one full page
        client.release.set()
        client.nodes_release.set()
        service.partial_wait = 0.05
        assert await service.wait_synced(60)
        complete = await service.poll()
        assert complete.synced and complete.pod_count == 3 and len(complete.nodes) == 1
        # The rest was asked for only once what the first screenful needs was in.
        first_view = {"deployments", "replicasets", "pods"}
        rest = [(name, before) for name, before in client.listed if name not in first_view]
        assert {name for name, _ in rest} == {"nodes", "poddisruptionbudgets", "events"}
        assert all(before >= first_view for _, before in rest)
    finally:
        await service.close()
