"""The Kubernetes screen's virtual table (a fake service, no cluster): every pod is a row but
only the rows in view are rendered; the cursor, `/` filter and the selected row behave as in
the other screens; the cursor stays on its pod when a new snapshot reorders the rows; cluster
text is shown, never run as markup."""

from __future__ import annotations

import dataclasses
from typing import Any

from backends.kubernetes.model import ClusterStatus, summarize_status
from backends.kubernetes.objects import pod_from_json
from backends.service import BackendSummary
from backends.snapshot import Snapshot
from tests.ui.fakes import INJECTION, FakeService
from tests.ui.helpers import screen_text, wait_for
from tests.ui.test_pushed_snapshots import make_app
from tests.unit.test_k8s_objects import pod
from tests.unit.test_render_kubernetes import _status
from tui.screens.kubernetes import KubernetesScreen
from tui.virtualtable import VirtualTable

PODS = 300


def big_status(pods: int = PODS, *, first: str = "api-abcde-0") -> ClusterStatus:
    names = [first] + [f"api-abcde-{i}" for i in range(1, pods)]
    return _status(pods=[pod_from_json(pod(name)) for name in names])


class FakeKubernetes(FakeService):
    def __init__(self, status: ClusterStatus) -> None:
        super().__init__("kubernetes", "Kubernetes")
        self.status = status

    async def poll(self) -> ClusterStatus:  # type: ignore[override]
        self.polls += 1
        return self.status

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        return summarize_status(snapshot.best, self.title, self.name)


def table(app) -> VirtualTable:
    return app.screen.query_one("#table", VirtualTable)


async def open_screen(pilot, app, rows: int) -> VirtualTable:
    await wait_for(pilot, lambda: "kubernetes" in app.snapshots, what="first poll")
    await pilot.press("1")
    await wait_for(pilot, lambda: isinstance(app.screen, KubernetesScreen), what="k8s screen")
    await wait_for(pilot, lambda: table(app).row_count == rows, what=f"{rows} rows")
    return table(app)


async def test_cursor_keys_and_selected_row(tmp_path):
    app = make_app(tmp_path, FakeKubernetes(big_status()))
    async with app.run_test(size=(80, 24)) as pilot:
        rows = await open_screen(pilot, app, PODS + 3)  # + deployment, nodes section, node
        assert app.screen.selected_key() == "deploy:streamforge/api"
        await pilot.press("down", "down")
        assert app.screen.selected_key() == "pod:streamforge/api-abcde-1"
        await pilot.press("pagedown")
        assert rows.cursor_row > 2
        assert rows.scroll_y > 0  # the cursor's row is in view
        await pilot.press("end")
        assert app.screen.selected_key() == "node:node-1"
        await pilot.press("home")
        assert rows.cursor_row == 0 and rows.scroll_y == 0
        # DataTable's API the integration tests use
        rows.move_cursor(row=rows.get_row_index("pod:streamforge/api-abcde-7"))
        assert app.screen.selected_key() == "pod:streamforge/api-abcde-7"


async def test_filter_keeps_matching_rows_and_esc_clears(tmp_path):
    app = make_app(tmp_path, FakeKubernetes(big_status()))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_screen(pilot, app, PODS + 3)
        await pilot.press("slash", *"abcde-29", "enter")
        # api-abcde-29 and api-abcde-290..299
        await wait_for(pilot, lambda: table(app).row_count == 11, what="filtered rows")
        assert all(key.startswith("pod:streamforge/api-abcde-29") for key in table(app).keys)
        assert table(app).has_focus
        await pilot.press("slash", "escape")
        await wait_for(pilot, lambda: table(app).row_count == PODS + 3, what="every row again")


async def test_cursor_follows_its_row_across_snapshots(tmp_path):
    service = FakeKubernetes(big_status())
    app = make_app(tmp_path, service)
    async with app.run_test(size=(80, 24)) as pilot:
        rows = await open_screen(pilot, app, PODS + 3)
        before = rows.get_row_index("pod:streamforge/api-abcde-5")
        rows.move_cursor(row=before)
        # Two pods fewer, ahead of the cursor's row: the cursor stays on api-abcde-5.
        status = big_status()
        deployment = status.deployments[0]
        kept = tuple(p for p in deployment.pods
                     if p.info.name not in ("api-abcde-1", "api-abcde-2"))
        service.status = dataclasses.replace(
            status, deployments=(dataclasses.replace(deployment, pods=kept),))
        await wait_for(pilot, lambda: rows.row_count == PODS + 1, what="two rows fewer")
        assert app.screen.selected_key() == "pod:streamforge/api-abcde-5"
        assert rows.cursor_row == before - 2


async def test_cluster_text_is_shown_not_run(tmp_path):
    app = make_app(tmp_path, FakeKubernetes(big_status(5, first=INJECTION)))
    async with app.run_test(size=(200, 60)) as pilot:
        await open_screen(pilot, app, 5 + 3)
        await pilot.pause()
        text = screen_text(pilot)
        assert "[@click=app.quit]boom" in text  # shown as text, cut to the column width
        assert app.is_running
