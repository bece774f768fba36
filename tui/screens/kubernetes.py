"""Kubernetes drill-down: deployments with their pods (probe outcomes), then nodes.

Keys (absent in read-only mode): R restart, U undo, p pause, P resume, + / - scale by one
(on a deployment or one of its pods); c cordon, C uncordon, D drain (on a node, or a pod on
it). Set image needs an argument: `sfops k8s set-image` on the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.widgets import Static

from backends.actions import Action
from backends.snapshot import Snapshot
from tui.render.cells import age_text
from tui.render.kubernetes import COLUMNS, RowCache, cluster_rows, detail_text
from tui.screens.base import BackendScreen, ScreenAction

if TYPE_CHECKING:
    from backends.kubernetes.service import KubernetesService
    from backends.kubernetes.status import ClusterStatus
    from tui.screens.host import ScreenHost as SfopsApp

PALETTE_NODES_MAX = 20


def _service(app: SfopsApp) -> KubernetesService:
    from backends.kubernetes.service import KubernetesService

    for service in app.services:
        if isinstance(service, KubernetesService):
            return service
    raise LookupError("Kubernetes is not configured")


def _status(app: SfopsApp) -> ClusterStatus | None:
    from backends.kubernetes.status import ClusterStatus

    best = app.status("kubernetes")
    return best if isinstance(best, ClusterStatus) else None


def _deployment_of(app: SfopsApp, target: str) -> tuple[str, str]:
    """(namespace, deployment) for a deployment row or a pod row."""
    kind, _, rest = target.partition(":")
    namespace, _, name = rest.partition("/")
    if kind == "deploy":
        return namespace, name
    if kind == "pod":
        status = _status(app)
        if status is not None:
            for d in status.deployments:
                if any(p.info.namespace == namespace and p.info.name == name for p in d.pods):
                    return d.info.namespace, d.info.name
        raise ValueError(f"pod {rest} belongs to no Deployment")
    raise ValueError("select a deployment (or one of its pods)")


def _node_of(app: SfopsApp, target: str) -> str:
    kind, _, rest = target.partition(":")
    if kind == "node":
        return rest
    if kind == "pod":
        status = _status(app)
        if status is not None:
            for pod in status.all_pods():
                if pod.info.key == rest and pod.info.node:
                    return pod.info.node
        raise ValueError(f"pod {rest} is on no node")
    raise ValueError("select a node (or a pod on it)")


def _deployment_action(kind: str) -> Callable[[SfopsApp, str], Action]:
    def build(app: SfopsApp, target: str) -> Action:
        from backends.kubernetes import rollout

        service = _service(app)
        namespace, name = _deployment_of(app, target)
        common: dict[str, Any] = {"breaker": service.breaker}
        if kind in ("scale-up", "scale-down"):
            status = _status(app)
            current = status.deployment(namespace, name) if status else None
            if current is None:
                raise ValueError(f"deployment {namespace}/{name} not known yet")
            replicas = current.info.desired + (1 if kind == "scale-up" else -1)
            if replicas < 0:
                raise ValueError("already scaled to 0")
            return app.runner.build(rollout.ScaleDeployment, service.client, namespace, name,
                                    replicas, **common)
        classes: dict[str, type[rollout.DeploymentAction]] = {
            "restart": rollout.RestartDeployment, "undo": rollout.UndoDeployment,
            "pause": rollout.PauseDeployment, "resume": rollout.ResumeDeployment,
        }
        return app.runner.build(classes[kind], service.client, namespace, name, **common)

    return build


def _node_action(kind: str) -> Callable[[SfopsApp, str], Action]:
    def build(app: SfopsApp, target: str) -> Action:
        from backends.kubernetes import nodes

        service = _service(app)
        node = _node_of(app, target)
        classes: dict[str, type[nodes.NodeAction]] = {
            "cordon": nodes.CordonNode, "uncordon": nodes.UncordonNode,
            "drain": nodes.DrainNode,
        }
        return app.runner.build(classes[kind], service.client, node, breaker=service.breaker)

    return build


class KubernetesScreen(BackendScreen):
    backend: ClassVar[str] = "kubernetes"
    title_text: ClassVar[str] = "Kubernetes — deployments, pods, nodes"
    columns: ClassVar[Sequence[str]] = COLUMNS
    actions: ClassVar[Sequence[ScreenAction]] = (
        ScreenAction("R", "Restart", _deployment_action("restart")),
        ScreenAction("U", "Undo rollout", _deployment_action("undo")),
        ScreenAction("p", "Pause", _deployment_action("pause")),
        ScreenAction("P", "Resume", _deployment_action("resume")),
        ScreenAction("plus", "Scale +1", _deployment_action("scale-up")),
        ScreenAction("minus", "Scale -1", _deployment_action("scale-down")),
        ScreenAction("c", "Cordon", _node_action("cordon")),
        ScreenAction("C", "Uncordon", _node_action("uncordon")),
        ScreenAction("D", "Drain", _node_action("drain")),
    )

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
        if snapshot is not None and best is not None and self._shown is not None \
                and self._shown[0] is best and self._shown[1] == self.filter_text:
            title = Text(self.title_text, style="bold")
            title.append(f"  data {age_text(snapshot.stale_for())}", style="dim")
            if snapshot.error:
                title.append(f"  poll failing: {snapshot.error}", style="red")
            self.query_one("#screen-title", Static).update(title)
            return
        self._shown = shown
        super().refresh_data()

    def rows(self, snapshot: Snapshot[Any]) -> list[tuple[str, Sequence[Text]]]:
        status = snapshot.best
        from backends.kubernetes.status import ClusterStatus

        if not isinstance(status, ClusterStatus):
            return []
        rows = cluster_rows(status, datetime.now(UTC), cache=self.row_cache)
        self.row_cache.prune({key for key, _ in rows})
        return list(rows)

    def detail(self, snapshot: Snapshot[Any]) -> Text:
        from backends.kubernetes.status import ClusterStatus

        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            return Text()
        return detail_text(status, datetime.now(UTC))

    @classmethod
    def palette_targets(cls, app: SfopsApp) -> list[str]:
        status = _status(app)
        if status is None:
            return []
        targets = [f"deploy:{d.info.key}" for d in status.deployments]
        if len(status.nodes) <= PALETTE_NODES_MAX:
            targets += [f"node:{n.info.name}" for n in status.nodes]
        return targets


SCREEN = KubernetesScreen
