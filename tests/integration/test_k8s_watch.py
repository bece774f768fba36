"""Quiet watches against the lab's real kube-apiserver: a watch that ends because nothing
happened — the server's timeoutSeconds, or the client's idle timeout on a silent stream —
reopens from its resourceVersion and never shows an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from backends.config import load
from backends.kubernetes.client import KubeClient
from backends.kubernetes.informer import EVENTS, Backoff, Informer
from backends.kubernetes.kubeconfig import connection_from_kubeconfig
from backends.kubernetes.objects import event_from_json

pytestmark = [pytest.mark.integration, pytest.mark.k8s]

# Nothing ever happens here (the namespace need not exist: LIST and WATCH of a namespaced
# collection work all the same), so every watch ends for lack of news.
QUIET_NAMESPACE = "sfops-test-quiet"
REOPENS = 4
WAIT = 120.0


@pytest.fixture(scope="module")
def k8s_lab(lab: Any) -> Any:
    lab.ensure("k8s")
    return lab


async def until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not reached within {WAIT} s: {what}")


async def test_quiet_watches_reopen_without_showing_an_error(k8s_lab: Any) -> None:
    section = load(k8s_lab.config_path).kubernetes
    assert section is not None
    client = KubeClient(connection_from_kubeconfig(section.kubeconfig, section.context))
    shown: list[str] = []

    def informer(**timeouts: Any) -> Informer[Any]:
        watcher: Informer[Any] = Informer(
            client, EVENTS, QUIET_NAMESPACE, event_from_json,
            params={"fieldSelector": "type=Warning"}, backoff=Backoff(0.05, 0.5, 0), **timeouts)
        watcher.on_change = lambda: shown.extend([watcher.error] if watcher.error else [])
        return watcher

    # One ends by the server's timeoutSeconds, the other by the client's idle timeout.
    server_closes = informer(watch_timeout=(1, 2))
    client_idles = informer(idle_timeout=1.0)
    watchers = [server_closes, client_idles]
    for watcher in watchers:
        watcher.start()
    try:
        await until(lambda: all(w.rewatches >= REOPENS for w in watchers),
                    f"{REOPENS} quiet reopenings of each watch")
        assert shown == []
        for watcher in watchers:
            assert watcher.error is None and watcher.error_since is None
            assert watcher.connected and watcher.lists == 1
        assert client.stats.watch_ends["closed"] >= REOPENS
        assert client.stats.watch_ends["idle"] >= REOPENS
        assert client.stats.watch_ends["broken"] == 0
    finally:
        for watcher in watchers:
            await watcher.stop()
        await client.close()


async def test_a_small_first_page_then_full_pages_list_one_whole_snapshot(k8s_lab: Any) -> None:
    """The pods' first LIST asks for a small first page (a screen's first rows), then full
    pages with the continue token: the real API server takes the change of limit and the
    pages add up to exactly the list at that resourceVersion."""
    section = load(k8s_lab.config_path).kubernetes
    assert section is not None
    client = KubeClient(connection_from_kubeconfig(section.kubeconfig, section.context))
    pages: list[list[str]] = []

    def key(item: dict[str, Any]) -> str:
        return f"{item['metadata']['namespace']}/{item['metadata']['name']}"

    try:
        keys, version = await client.list_pages("/api/v1/pods", key, page_size=2,
                                                first_page_size=1, on_page=pages.append)
        whole = await client.get("/api/v1/pods", {"resourceVersion": version,
                                                  "resourceVersionMatch": "Exact"})
    finally:
        await client.close()
    assert len(whole["items"]) >= 3, "the lab runs fewer pods than this test needs"
    assert [len(page) for page in pages[:2]] == [1, 2]
    assert all(1 <= len(page) <= 2 for page in pages)
    assert [name for page in pages for name in page] == keys
    assert sorted(keys) == sorted(key(item) for item in whole["items"])
