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
