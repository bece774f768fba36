"""Kubernetes drill-down: deployments with their pods (probe outcomes), then nodes.

The keys come from the contract (backends/kubernetes/contract.py; absent in read-only mode):
R restart, U undo, p pause, P resume, + / - scale by one (on a deployment or one of its pods);
c cordon, C uncordon, D drain (on a node, or a pod on it). Set image and scale to N need an
argument: `sfops k8s set-image|scale` on the command line.

The table is a :class:`~tui.virtualtable.VirtualTable`: a new snapshot costs a list of row
keys (5,000 pods: a few milliseconds), and only the rows on screen are rendered, when painted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from backends.kubernetes.model import ClusterStatus
from backends.snapshot import Snapshot
from tui.render.kubernetes import (
    COLUMNS,
    WIDTHS,
    RowCache,
    RowItem,
    cluster_items,
    cluster_rows,
    detail_text,
    item_cells,
    shows_namespace,
)
from tui.screens.base import BackendScreen, row_matches
from tui.virtualtable import VirtualTable


class KubernetesScreen(BackendScreen):
    backend: ClassVar[str] = "kubernetes"
    title_text: ClassVar[str] = "Kubernetes — deployments, pods, nodes"
    columns: ClassVar[Sequence[str]] = COLUMNS

    def __init__(self) -> None:
        super().__init__()
        self.row_cache = RowCache(fixed=True)  # fixed-width cells: see render.WIDTHS
        self._shown: tuple[object, str] | None = None

    def make_table(self) -> Widget:
        return VirtualTable(COLUMNS, WIDTHS, id="table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#table", VirtualTable)

    def refresh_data(self) -> None:
        """A new cluster snapshot (or filter) gives the table new row keys; the very same
        snapshot object (the service returns it while nothing shown changed) only moves the
        data age. A failed refresh shows "✖ UNREACHABLE  last known …" over the last rows."""
        snapshot = self.snapshot
        self.show_title(snapshot)
        if snapshot is None:
            return
        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            self._shown = None
            self.table.set_rows((), lambda index: ())
            return
        shown = (status, self.filter_text)
        if self._shown is not None and self._shown[0] is status \
                and self._shown[1] == self.filter_text:
            return
        self._shown = shown
        self._show_items(status, cluster_items(status))
        self.query_one("#detail", Static).update(self.detail(snapshot))

    def _show_items(self, status: ClusterStatus, every: list[RowItem]) -> None:
        show_namespace = shows_namespace(status)
        cache = self.row_cache
        shown = every
        if self.filter_text:
            now = datetime.now(UTC)
            shown = [item for item in every if row_matches(
                self.filter_text,
                item_cells(item, now, show_namespace=show_namespace, cache=cache))]

        def cells(index: int) -> list[Text]:
            # Rendered on paint, for the rows in view only; ages as of that paint.
            return item_cells(shown[index], datetime.now(UTC), show_namespace=show_namespace,
                              cache=cache)

        cache.prune({key for key, _, _ in shown})
        self.table.set_rows([key for key, _, _ in shown], cells)

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        """Every row with its cells (what the table shows, rendered in full)."""
        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            return []
        return list(cluster_rows(status, datetime.now(UTC), cache=self.row_cache))

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            return Text()
        return detail_text(status, datetime.now(UTC))

    def selected_key(self) -> str | None:
        return self.table.selected_key


SCREEN = KubernetesScreen
