"""Pure Kubernetes renderers: rows, keys, colours, and outside text never treated as markup."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.text import Text

from backends.kubernetes.model import build_status
from backends.kubernetes.objects import (
    budget_from_json,
    deployment_from_json,
    event_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
)
from tests.unit.test_k8s_objects import budget, deployment, event, node, pod, replicaset
from tui.render.kubernetes import COLUMNS, age, cluster_rows, detail_text

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EVIL = "[@click=app.quit]x[/] [bold red]boom"


def _status(pods=None, events=(), nodes=None, deployments=None):
    return build_status(
        host="https://k", namespaces=("streamforge",), now=NOW,
        deployments=deployments or [deployment_from_json(deployment(revision=3))],
        replicasets=[replicaset_from_json(replicaset("api-abcde", 3)),
                     replicaset_from_json(replicaset("api-zzzzz", 2, replicas=0))],
        pods=pods if pods is not None else [pod_from_json(pod(f"api-abcde-{i}"))
                                            for i in range(3)],
        nodes=nodes or [node_from_json(node("node-1"))],
        budgets=[budget_from_json(budget())],
        events=[event_from_json(e) for e in events],
    )


def test_rows_deployment_then_pods_then_nodes():
    rows = cluster_rows(_status(), NOW)
    keys = [k for k, _ in rows]
    assert keys == ["deploy:streamforge/api", "pod:streamforge/api-abcde-0",
                    "pod:streamforge/api-abcde-1", "pod:streamforge/api-abcde-2",
                    "section:nodes", "node:node-1"]
    for _, cells in rows:
        assert len(cells) == len(COLUMNS)
        assert all(isinstance(c, Text) for c in cells)
    deploy = [c.plain for c in rows[0][1]]
    assert deploy[1] == "3/3"
    assert deploy[2].startswith("complete rev 3←2")
    pod_cells = [c.plain for c in rows[1][1]]
    assert pod_cells[1] == "1/1" and pod_cells[2] == "Running" and pod_cells[4] == "node-1"
    assert "R✓" in pod_cells[5] and "L✓" in pod_cells[5]


def test_unready_pod_shows_probe_failure():
    status = _status(
        pods=[pod_from_json(pod("api-abcde-0", ready=False))],
        events=[event("e", "api-abcde-0",
                      "Readiness probe failed: HTTP probe failed with statuscode: 503",
                      count=3)])
    rows = dict(cluster_rows(status, NOW))
    cells = [c.plain for c in rows["pod:streamforge/api-abcde-0"]]
    assert cells[1] == "0/1"
    assert "R✗" in cells[5]
    assert "readiness failed 3\u00d7 in 2 m: HTTP 503" in cells[5]
    assert "red" in str(rows["pod:streamforge/api-abcde-0"][1].style)


def test_cordoned_and_draining_nodes():
    status = _status(nodes=[
        node_from_json(node("a", unschedulable=True)),
        node_from_json(node("b", unschedulable=True, annotations={
            "sfops.streamforge.io/drain-started": "2026-01-01T11:59:00Z"})),
        node_from_json(node("c", ready=False)),
    ])
    rows = dict(cluster_rows(status, NOW))
    assert rows["node:a"][2].plain == "cordoned"
    assert rows["node:b"][2].plain == "draining"
    assert rows["node:c"][1].plain == "NotReady"


def test_outside_text_is_never_markup():
    status = _status(
        pods=[pod_from_json(pod(EVIL, ready=False, node=EVIL))],
        events=[event("e", EVIL, "Readiness probe failed: " + EVIL),
                event("f", "x", EVIL, reason=EVIL)],
        deployments=[deployment_from_json(deployment(image=EVIL))],
    )
    rows = cluster_rows(status, NOW)
    texts = [cell for _, cells in rows for cell in cells]
    texts.append(detail_text(status, NOW, warnings=5))
    joined = "\n".join(t.plain for t in texts)
    assert EVIL in joined  # shown literally, brackets and all
    for text in texts:
        for span in text.spans:
            assert "@click" not in str(span.style)
            assert "link" not in str(span.style)


def test_age():
    assert age(None, NOW) == "?"
    assert age(datetime(2026, 1, 1, 11, 59, 15, tzinfo=UTC), NOW) == "45s"
    assert age(datetime(2026, 1, 1, 11, 0, 0, tzinfo=UTC), NOW) == "60m"
    assert age(datetime(2025, 12, 25, tzinfo=UTC), NOW) == "7d"


def test_detail_lists_budgets_and_warnings():
    status = _status(events=[event("e", "api-abcde-0", "Readiness probe failed: statuscode: 503",
                                   count=4)])
    text = detail_text(status, NOW).plain
    assert "PDB streamforge/api: maxUnavailable 1, allows 1" in text
    assert "Unhealthy pod/api-abcde-0" in text and "\u00d74" in text


def test_row_cache_reuses_unchanged_pod_rows():
    from tui.render.kubernetes import RowCache

    status = _status()
    cache = RowCache()
    first = dict(cluster_rows(status, NOW, cache=cache))
    again = dict(cluster_rows(status, NOW, cache=cache))
    key = "pod:streamforge/api-abcde-0"
    assert again[key] is first[key]  # same status object, same age: the same cells
    changed = _status(pods=[pod_from_json(pod("api-abcde-0", ready=False))])
    third = dict(cluster_rows(changed, NOW, cache=cache))
    assert third[key] is not first[key] and third[key][1].plain == "0/1"


def test_fixed_width_cells_for_the_tui_table():
    from tui.render.kubernetes import WIDTHS, RowCache

    long = "streamforge-api-" + "x" * 80
    status = _status(pods=[pod_from_json(pod(long))])
    rows = cluster_rows(status, NOW, cache=RowCache(fixed=True))
    for _, cells in rows:
        assert [c.cell_len for c in cells] == list(WIDTHS)
    name = dict(rows)[f"pod:streamforge/{long}"][0].plain
    assert name.endswith("…") and name.startswith("  └ streamforge-api-")


def test_status_text_for_the_cli_is_plain_and_clean():
    from backends.kubernetes.model import summarize_status
    from tui.render.kubernetes import status_text

    status = _status(
        pods=[pod_from_json(pod("api-abcde-0\x1b]0;pwned\x07", node="node-1"))],
        nodes=[node_from_json(node("node-1")), node_from_json(node("node-2",
                                                                    unschedulable=True))])
    summary = summarize_status(status)
    text = status_text(status, summary, {}, now=NOW)
    lines = text.splitlines()
    assert lines[0] == "API server https://k  namespaces streamforge"
    assert lines[1].split() == [*COLUMNS[:4], "NODE", "/", "IMAGE", *COLUMNS[5:]]
    assert any(line.startswith("▸ api ") and "complete" in line for line in lines)
    assert any("cordoned" in line and "node-2" in line for line in lines)
    assert "PDB streamforge/api: maxUnavailable 1, allows 1 (3/3 healthy)" in lines
    assert "\x1b" not in text and "\x07" not in text and "pwned" in text
