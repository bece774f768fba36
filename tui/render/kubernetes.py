"""Pure rendering of the Kubernetes snapshot: deployments with their pods, nodes, budgets and
warnings -> rows of ``rich.text.Text`` cells.

Pod names, images, event messages and reasons come from the cluster: they are only ever put
into ``Text`` as plain strings (``Text(value)`` / ``append``), never parsed as markup, so a
message containing ``[@click=app.quit]`` is shown, not run — and always through
:func:`~backends.safetext.safe_text`, so an ESC in an event message is shown as ``\\x1b``
and a 300-character message is cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from backends.config import redact_text
from backends.kubernetes.model import ClusterStatus, DeploymentStatus, NodeStatus, PodStatus
from backends.kubernetes.objects import TIMES, BudgetInfo, ProbeOutcome, RolloutState
from backends.service import BackendSummary
from tui.render.cells import CELL, HEALTH_CELL_STYLE, age_text, plain, safe_text, text_table

COLUMNS = ("NAME", "READY", "STATUS", "RESTARTS", "NODE / IMAGE", "PROBES", "AGE")
# Fixed column widths for the TUI table (tui/virtualtable.py): cells are cut and padded to
# them, so nothing is measured — a DataTable measured every one of 35,000 cells on the first
# fill and re-measured whole columns when a cell shrank (seconds of frozen UI at 5,000 pods).
WIDTHS = (40, 7, 26, 12, 24, 44, 5)

ROLLOUT_STYLE = {
    RolloutState.COMPLETE: "green",
    RolloutState.ROLLING: "yellow",
    RolloutState.PAUSED: "cyan",
    RolloutState.FAILED: "bold red",
}
PROBE_MARK = {ProbeOutcome.PASSING: ("✓", "green"), ProbeOutcome.FAILING: ("✗", "bold red"),
              ProbeOutcome.PENDING: ("…", "yellow"), ProbeOutcome.UNKNOWN: ("?", "grey50")}
PROBE_LETTER = {"startup": "S", "liveness": "L", "readiness": "R"}

Row = tuple[str, Sequence[Text]]


def age(created: datetime | None, now: datetime) -> str:
    """kubectl's compact age: 45s, 12m, 3h, 5d."""
    return "?" if created is None else age_text((now - created).total_seconds(), compact=True)


def deployment_key(d: DeploymentStatus) -> str:
    return f"deploy:{d.info.namespace}/{d.info.name}"


def pod_key(p: PodStatus) -> str:
    return f"pod:{p.info.namespace}/{p.info.name}"


def node_key(n: NodeStatus) -> str:
    return f"node:{n.info.name}"


def rollout_text(d: DeploymentStatus) -> Text:
    text = Text(d.rollout.state.value, style=ROLLOUT_STYLE[d.rollout.state])
    if d.current_revision is not None:
        text.append(f" rev {d.current_revision}", style="dim")
        if d.previous_revision is not None:
            text.append(f"←{d.previous_revision}", style="dim")
    if d.rollout.state is not RolloutState.COMPLETE:
        text.append(" ")
        text.append(safe_text(d.rollout.message))
    return text


def images_text(images: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{c}={i}" for c, i in images)


def deployment_cells(d: DeploymentStatus, now: datetime, *, show_namespace: bool) -> list[Text]:
    info = d.info
    name = f"{info.namespace}/{info.name}" if show_namespace else info.name
    ready = Text(f"{info.ready}/{info.desired}", style=HEALTH_CELL_STYLE[d.health])
    counts = Text(f"upd {info.updated} avl {info.available}", style="dim")
    return [
        Text.assemble(("▸ ", "bold"), (safe_text(name, CELL), "bold")),
        ready,
        rollout_text(d),
        Text(str(sum(p.info.restarts for p in d.pods)) if d.pods else "", style="dim"),
        plain(images_text(info.images), "dim"),
        counts,
        plain(age(info.created, now)),
    ]


def probes_text(p: PodStatus) -> Text:
    text = Text()
    for probe in p.probes:
        mark, style = PROBE_MARK[probe.outcome]
        text.append(f"{PROBE_LETTER[probe.kind.value]}{mark} ", style=style)
    failure = p.probe_failure
    if failure:
        text.append(safe_text(failure), style="red")  # plain text: may come from the cluster
    if not p.probes:
        text.append("none", style="dim")
    return text


def pod_status_text(p: PodStatus) -> Text:
    info = p.info
    if info.deleting:
        return Text("Terminating", style="yellow")
    if info.waiting_reason:
        return plain(info.waiting_reason, "bold red")
    style = "green" if info.phase == "Running" and p.ready else (
        "yellow" if info.phase in ("Pending", "Running") else "red")
    return plain(info.phase, style)


def pod_cells(p: PodStatus, now: datetime, *, indent: str = "  └ ") -> list[Text]:
    info = p.info
    ready_style = "green" if p.ready else "bold red"
    restarts = Text(str(info.restarts), style="yellow" if info.restarts else "dim")
    if info.last_restart_reason:
        restarts.append(" ")
        restarts.append(safe_text(info.last_restart_reason, CELL), style="dim")
    return [
        Text.assemble((indent, "dim"), (safe_text(info.name, CELL), "")),
        Text(f"{info.ready_containers}/{info.total_containers}", style=ready_style),
        pod_status_text(p),
        restarts,
        plain(info.node or "-", "" if info.node else "dim"),
        probes_text(p),
        plain(age(info.created, now)),
    ]


def node_cells(n: NodeStatus, now: datetime) -> list[Text]:
    info = n.info
    if info.ready is None:
        ready = Text("Unknown", style="grey50")
    else:
        ready = Text("Ready" if info.ready else "NotReady",
                     style="green" if info.ready else "bold red")
    if n.draining:
        state = Text("draining", style="bold yellow")
        if n.terminating:
            state.append(f" ({n.terminating} terminating)", style="yellow")
    elif info.unschedulable:
        state = Text("cordoned", style="yellow")
    else:
        state = Text("schedulable", style="green")
    return [
        Text.assemble(("■ ", "bold"), (safe_text(info.name, CELL), "bold")),
        ready,
        state,
        Text(""),
        Text(f"{n.pods} pods", style="dim"),
        Text(""),
        plain(age(info.created, now)),
    ]


def section(title: str) -> list[Text]:
    return [Text(title, style="bold underline"), *(Text("") for _ in COLUMNS[1:])]


def fit(cells: Sequence[Text]) -> list[Text]:
    """Cells truncated (with an ellipsis) and padded to :data:`WIDTHS`."""
    out = []
    for cell, width in zip(cells, WIDTHS, strict=True):
        fitted = cell.copy()
        fitted.truncate(width, overflow="ellipsis", pad=True)
        out.append(fitted)
    return out


class RowCache:
    """Pod rows of unchanged pods, reused between refreshes: a pod's cells depend only on its
    (immutable) status object and its age text, so 5,000 unchanged pods cost a dict lookup
    each instead of seven new Text objects. Still pure: same inputs, same rows."""

    def __init__(self, *, fixed: bool = False) -> None:
        self.fixed = fixed
        self._pods: dict[str, tuple[PodStatus, str, list[Text]]] = {}

    def pod(self, p: PodStatus, now: datetime, indent: str) -> list[Text]:
        key = pod_key(p)
        age_text = age(p.info.created, now)
        hit = self._pods.get(key)
        if hit is not None and hit[0] is p and hit[1] == age_text:
            return hit[2]
        cells = pod_cells(p, now, indent=indent)
        if self.fixed:
            cells = fit(cells)
        self._pods[key] = (p, age_text, cells)
        return cells

    def prune(self, keep: set[str]) -> None:
        for key in set(self._pods) - keep:
            del self._pods[key]


# One row of the table before it is rendered: its key and what it shows (a deployment, a
# pod with its indent, a node, or a section title). Cheap to make for 5,000 pods; the cells
# are rendered only for the rows on screen (tui/virtualtable.py).
RowItem = tuple[str, object, str]  # (key, DeploymentStatus | PodStatus | NodeStatus | str, indent)


def cluster_items(status: ClusterStatus, *, pods: bool = True) -> list[RowItem]:
    """Deployments, each followed by its pods, then pods of no Deployment, then nodes."""
    items: list[RowItem] = []
    for d in status.deployments:
        items.append((deployment_key(d), d, ""))
        if pods:
            items.extend((pod_key(p), p, "  └ ") for p in d.pods)
    if pods and status.other_pods:
        items.append(("section:other", "other pods", ""))
        items.extend((pod_key(p), p, "  ") for p in status.other_pods)
    items.append(("section:nodes", f"nodes ({len(status.nodes)})", ""))
    items.extend((node_key(n), n, "") for n in status.nodes)
    return items


def item_cells(item: RowItem, now: datetime, *, show_namespace: bool,
               cache: RowCache) -> list[Text]:
    """The cells of one row (see :func:`cluster_items`)."""
    _, value, indent = item
    shape = fit if cache.fixed else list
    if isinstance(value, PodStatus):
        return cache.pod(value, now, indent)
    if isinstance(value, DeploymentStatus):
        return shape(deployment_cells(value, now, show_namespace=show_namespace))
    if isinstance(value, NodeStatus):
        return shape(node_cells(value, now))
    return shape(section(str(value)))


def shows_namespace(status: ClusterStatus) -> bool:
    return len({d.info.namespace for d in status.deployments}) > 1


def cluster_rows(status: ClusterStatus, now: datetime, *, pods: bool = True,
                 cache: RowCache | None = None) -> list[Row]:
    """Every row of :func:`cluster_items` with its cells."""
    show_namespace = shows_namespace(status)
    cache = cache if cache is not None else RowCache()
    return [(item[0], item_cells(item, now, show_namespace=show_namespace, cache=cache))
            for item in cluster_items(status, pods=pods)]


def detail_text(status: ClusterStatus, now: datetime, *, warnings: int = 3) -> Text:
    """Budgets and the newest warnings, under the table."""
    text = Text()
    if not status.synced:
        text.append(safe_text(f"syncing: {', '.join(status.syncing)}") + "\n", style="yellow")
    for error in status.watch_errors[:2]:
        text.append("watch: ", style="red")
        text.append(safe_text(error))
        text.append("\n")
    for budget in status.budgets:
        style = "yellow" if budget.disruptions_allowed == 0 else "dim"
        text.append(safe_text(budget_line(budget)) + "\n", style=style)
    for event in status.warnings[:warnings]:
        text.append(f"{age(event.last, now):>4} ", style="dim")
        text.append(safe_text(event.reason, CELL), style="yellow")
        text.append(safe_text(f" {event.object_kind.lower()}/{event.object_name}: ", CELL))
        text.append(safe_text(event.message))
        if event.count > 1:
            text.append(f" ({TIMES}{event.count})", style="dim")
        text.append("\n")
    text.rstrip()
    return text


# ----------------------------------------------------------------------------- CLI text

STATUS_MAX_WIDTH = 48  # a column of `sfops k8s status` is cut ("…") beyond this


def status_text(status: ClusterStatus, summary: BackendSummary,
                options: Mapping[str, Any], *, now: datetime | None = None) -> str:
    """The plain text of ``sfops k8s status`` under its health line: the API server, the
    table the screen shows (deployments with their pods, nodes) and the budgets. Control
    characters in cluster text (names, messages) are replaced: it must not drive the
    terminal."""
    now = now or datetime.now(UTC)
    lines = [f"API server {safe_text(redact_text(status.host), CELL)}  namespaces "
             f"{safe_text(', '.join(status.namespaces))}"]
    if not status.synced:
        lines.append(safe_text(f"syncing: {', '.join(status.syncing)}"))
    lines += text_table(COLUMNS, (cells for _, cells in cluster_rows(status, now)),
                        max_width=STATUS_MAX_WIDTH).splitlines()
    lines += [safe_text(budget_line(budget)) for budget in status.budgets]
    return "\n".join(safe_text(line, None) for line in lines)


def budget_line(budget: BudgetInfo) -> str:
    return (f"PDB {budget.key}: {budget.spec_text}, allows {budget.disruptions_allowed} "
            f"({budget.current_healthy}/{budget.expected_pods} healthy)")
