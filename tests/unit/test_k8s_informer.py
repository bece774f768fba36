"""Informer (list + watch) against a scripted fake client: bookmarks move the resourceVersion,
410 Gone re-lists, other failures reconnect with backoff and resume from the version."""

from __future__ import annotations

import asyncio
from typing import Any

from backends.kubernetes.client import KubeApiError, KubeUnavailable
from backends.kubernetes.informer import PODS, Backoff, Informer
from backends.kubernetes.objects import pod_from_json
from tests.unit.test_k8s_objects import pod


def _with_rv(obj: dict[str, Any], rv: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = rv
    return obj


class FakeClient:
    host = "https://fake"

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]],
                 watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls = 0
        self.watch_versions: list[str] = []
        self.page_size = 500
        self.pages_seen: list[Any] = []  # what ``observe`` returned after each page
        self.first_page_sizes: list[int | None] = []  # asked for, per LIST
        self.observe = lambda: None

    async def list_pages(self, path, convert, *, params=None, timeout=None, page_size=500,
                         first_page_size=None, on_page=None):
        self.list_calls += 1
        self.first_page_sizes.append(first_page_size)
        items, rv = self.lists.pop(0)
        converted = [convert(i) for i in items]
        start, size = 0, first_page_size or self.page_size
        while start < len(converted):
            if on_page is not None:
                on_page(converted[start:start + size])
            self.pages_seen.append(self.observe())
            start, size = start + size, self.page_size
        return converted, rv

    async def watch(self, path, *, resource_version, params=None, timeout_seconds=300,
                    idle_timeout=90.0, on_open=None):
        self.watch_versions.append(resource_version)
        if not self.watches:
            if on_open is not None:
                on_open()
            await asyncio.sleep(3600)
        script = self.watches.pop(0)
        if on_open is not None and not (script and isinstance(script[0], BaseException)):
            on_open()  # the server accepted the watch
        for event in script:
            if isinstance(event, BaseException):
                raise event
            yield event


async def _until(predicate, timeout=2.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_list_then_watch_events_and_bookmarks():
    client = FakeClient(
        lists=[([pod("a"), pod("b")], "100")],
        watches=[[
            {"type": "MODIFIED", "object": _with_rv(pod("a", ready=False), "101")},
            {"type": "DELETED", "object": _with_rv(pod("b"), "102")},
            {"type": "ADDED", "object": _with_rv(pod("c"), "103")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}},
        ]],
    )
    changes = []
    informer = Informer(client, PODS, "streamforge", pod_from_json,  # type: ignore[arg-type]
                        on_change=lambda: changes.append(1), backoff=Backoff(0.001, 0.01, 0))
    informer.start()
    try:
        await _until(lambda: informer.resource_version == "150")
        assert sorted(informer.items) == ["streamforge/a", "streamforge/c"]
        assert not informer.items["streamforge/a"].ready
        assert client.watch_versions[0] == "100"
        # The stream ended normally: the next watch resumes from the bookmark, no re-list.
        await _until(lambda: len(client.watch_versions) == 2)
        assert client.watch_versions[1] == "150"
        assert client.list_calls == 1
        assert informer.connected and informer.error is None
    finally:
        await informer.stop()


async def test_the_first_list_fills_the_store_page_by_page_a_relist_swaps_it_whole():
    client = FakeClient(lists=[([pod(f"p{i}") for i in range(5)], "100"),
                               ([pod("p0")], "200")],
                        watches=[[KubeApiError(410, "Gone", "too old resource version")]])
    client.page_size = 2
    changes = []
    informer = Informer(client, PODS, "streamforge", pod_from_json,  # type: ignore[arg-type]
                        on_change=lambda: changes.append(1), backoff=Backoff(0.001, 0.01, 0))
    client.observe = lambda: (len(informer.items), informer.synced.is_set(), len(changes))
    informer.start()
    try:
        await _until(lambda: client.list_calls == 2 and informer.resource_version == "200")
        first, relist = client.pages_seen[:3], client.pages_seen[3:]
        # Pages of 2, 2, 1 shown as they came, each a change, before the list was synced.
        assert first == [(2, False, 1), (4, False, 2), (5, False, 3)]
        # The re-list after 410 is not shown page by page: the old store stays until the
        # whole new one replaces it (objects deleted meanwhile must not linger, half-shown).
        assert relist == [(5, True, 4)]
        assert sorted(informer.items) == ["streamforge/p0"]
    finally:
        await informer.stop()


async def test_the_first_list_asks_for_a_small_first_page_a_relist_does_not():
    client = FakeClient(lists=[([pod(f"p{i}") for i in range(5)], "100"),
                               ([pod("p0")], "200")],
                        watches=[[KubeApiError(410, "Gone", "too old resource version")]])
    client.page_size = 2
    informer = Informer(client, PODS, "streamforge", pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.001, 0.01, 0), first_page=1)
    client.observe = lambda: (len(informer.items), informer.first_page_in.is_set(),
                              informer.synced.is_set())
    assert not informer.first_page_in.is_set()
    informer.start()
    try:
        await _until(lambda: client.list_calls == 2 and informer.resource_version == "200")
        # One pod first (the store has something to show, not yet synced), then pages of 2.
        assert client.pages_seen[:3] == [(1, True, False), (3, True, False), (5, True, False)]
        # The re-list replaces the store whole: nothing is shown of it early, so it asks
        # for full pages.
        assert client.first_page_sizes == [1, None]
        assert sorted(informer.items) == ["streamforge/p0"]
    finally:
        await informer.stop()


async def test_gone_relists_and_replaces_the_store():
    client = FakeClient(
        lists=[([pod("a"), pod("b")], "100"), ([pod("b")], "300")],
        watches=[[KubeApiError(410, "Gone", "too old resource version: 100 (250)")]],
    )
    informer = Informer(client, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.001, 0.01, 0))
    informer.start()
    try:
        await _until(lambda: client.list_calls == 2 and len(client.watch_versions) == 2)
        assert sorted(informer.items) == ["streamforge/b"]  # a was deleted while we were away
        assert client.watch_versions == ["100", "300"]
    finally:
        await informer.stop()


async def test_connection_failure_reconnects_from_the_version_without_relisting():
    client = FakeClient(
        lists=[([pod("a")], "100")],
        watches=[[{"type": "ADDED", "object": _with_rv(pod("b"), "120")},
                  KubeUnavailable("watch pods: connection refused")],
                 [KubeUnavailable("watch pods: connection refused")],
                 [{"type": "ADDED", "object": _with_rv(pod("c"), "130")}]],
    )
    informer = Informer(client, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.001, 0.01, 0))
    informer.start()
    try:
        await _until(lambda: "streamforge/c" in informer.items)
        assert client.watch_versions[:3] == ["100", "120", "120"]
        assert client.list_calls == 1
        assert informer.connected and informer.error is None
    finally:
        await informer.stop()


async def test_a_stream_that_drops_after_it_was_accepted_is_reopened_without_an_error():
    """Accepted, then cut (a load balancer's idle cut, a server-side close): routine. Only the
    reopening can fail, and here it does not."""
    client = FakeClient(
        lists=[([pod("a")], "100")],
        watches=[[{"type": "ADDED", "object": _with_rv(pod("b"), "120")},
                  KubeUnavailable("watch pods: stream broke: ServerDisconnectedError")],
                 [], []],  # accepted, ended with nothing
    )
    errors: list[str | None] = []
    informer = Informer(client, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.001, 0.01, 0))
    informer.on_change = lambda: errors.append(informer.error)
    informer.start()
    try:
        await _until(lambda: len(client.watch_versions) == 4)
        assert client.watch_versions == ["100", "120", "120", "120"]
        assert informer.rewatches == 3
        assert informer.error is None and informer.error_since is None and informer.connected
        assert set(errors) == {None}  # never shown, not even for a moment
        assert client.list_calls == 1
    finally:
        await informer.stop()


async def test_failure_is_visible_until_recovery():
    client = FakeClient(lists=[([pod("a")], "100")],
                        watches=[[KubeUnavailable("watch pods: connection refused")]] * 50)
    informer = Informer(client, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.05, 0.05, 0))
    informer.start()
    try:
        await _until(lambda: informer.error is not None)
        assert not informer.connected
        assert "connection refused" in informer.error
        assert informer.error_since is not None
        assert "streamforge/a" in informer.items  # the last good data stays
    finally:
        await informer.stop()


async def test_an_accepted_watch_clears_the_error_even_without_events():
    client = FakeClient(lists=[([pod("a")], "100")],
                        watches=[[KubeUnavailable("watch pods: connection refused")]])
    informer = Informer(client, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        backoff=Backoff(0.001, 0.01, 0))
    informer.start()
    try:
        await _until(lambda: len(client.watch_versions) == 2)
        await _until(lambda: informer.error is None)
        assert informer.connected and informer.error_since is None
    finally:
        await informer.stop()


def test_keep_filter_drops_objects_of_other_namespaces():
    informer = Informer(None, PODS, None, pod_from_json,  # type: ignore[arg-type]
                        keep=lambda p: p.namespace == "streamforge")
    informer.apply({"type": "ADDED", "object": pod("x", namespace="other")})
    informer.apply({"type": "ADDED", "object": pod("y")})
    assert list(informer.items) == ["streamforge/y"]
