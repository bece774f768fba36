"""Kubernetes drill-down: deployments with their pods (probe outcomes), then nodes.

The keys come from the contract (backends/kubernetes/contract.py; absent in read-only mode):
R restart, U undo, p pause, P resume, + / - scale by one (on a deployment or one of its pods);
c cordon, C uncordon, D drain (on a node, or a pod on it). Set image and scale to N need an
argument: `sfops k8s set-image|scale` on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.widgets import Static

from backends.snapshot import Snapshot
from tui.render.cells import age_text
from tui.render.kubernetes import COLUMNS, RowCache, cluster_rows, detail_text
from tui.screens.base import BackendScreen


class KubernetesScreen(BackendScreen):
    backend: ClassVar[str] = "kubernetes"
    title_text: ClassVar[str] = "Kubernetes — deployments, pods, nodes"
    columns: ClassVar[Sequence[str]] = COLUMNS

    def __init__(self) -> None:
        super().__init__()
        self.row_cache = RowCache(fixed=True)  # fixed-width cells: see render.WIDTHS
        self._shown: tuple[object, str] | None = None

    def refresh_data(self) -> None:
        """Skip the table diff when the cluster snapshot is the very same object (the service
        returns the same value while nothing shown changed): only the data age moves."""
        snapshot = self.snapshot
        best = snapshot.best if snapshot is not None else None
        shown = (best, self.filter_text)
        if snapshot is not None and best is not None and snapshot.error is None \
                and self._shown is not None and self._shown[0] is best \
                and self._shown[1] == self.filter_text:
            title = self.title_line()
            title.append(f"  data {age_text(snapshot.stale_for())}", style="dim")
            self.query_one("#screen-title", Static).update(title)
            return
        # A failed refresh goes the base screen's way: "✖ UNREACHABLE  last known …".
        self._shown = shown
        super().refresh_data()

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = snapshot.best
        from backends.kubernetes.model import ClusterStatus

        if not isinstance(status, ClusterStatus):
            return []
        rows = cluster_rows(status, datetime.now(UTC), cache=self.row_cache)
        self.row_cache.prune({key for key, _ in rows})
        return list(rows)

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        from backends.kubernetes.model import ClusterStatus

        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            return Text()
        return detail_text(status, datetime.now(UTC))


SCREEN = KubernetesScreen
