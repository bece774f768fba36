"""Pure rendering of a KafkaStatus: table rows of ``rich.text.Text`` cells for the screens,
and the plain text of ``sfops kafka status``.

Topic and consumer-group names come from the cluster; group ids may contain anything
(``[@click=app.quit]``, an ESC), so every cell is built as plain ``Text`` — never parsed as
markup — and all of it goes through :func:`~backends.safetext.safe_text` (escapes shown,
length capped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from backends.kafka.model import (
    CONTROLLER_LABEL,
    BrokerState,
    GroupState,
    KafkaStatus,
    PartitionState,
    TopicState,
    leader_balance,
)
from backends.service import BackendSummary
from tui.render.cells import CELL, plain, safe_text

Row = tuple[str, Sequence[Text]]

BROKER_COLUMNS = ("Broker", "Address", "Rack", "State", "Leaders", "Replicas", "Preferred")
TOPIC_COLUMNS = ("Topic", "Partitions", "RF", "Min ISR", "URP", "Offline", "Not preferred")
PARTITION_COLUMNS = ("Partition", "Leader", "Replicas", "ISR", "State")
GROUP_COLUMNS = ("Group", "State", "Members", "Lag", "Partitions")

OK, WARN, BAD, DIM = "green", "yellow", "bold red", "dim"


def _ids(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def broker_state(broker: BrokerState) -> Text:
    if not broker.registered:
        return plain("down", style=BAD)
    if broker.reachable is False:
        return plain("unreachable", style=BAD)
    return plain("up", style=OK)


def broker_rows(status: KafkaStatus) -> list[Row]:
    rows: list[Row] = []
    for b in status.brokers:
        leaders = plain(str(b.leaders))
        if b.up and b.leaders == 0 and b.replicas > 0:
            leaders.stylize(WARN)  # drained, or leadership never came back
        rows.append((str(b.broker_id), [
            plain(str(b.broker_id)),
            plain(b.address),
            plain(b.rack or "-", style="" if b.rack else DIM),
            broker_state(b),
            leaders,
            plain(str(b.replicas)),
            plain(str(b.preferred)),
        ]))
    return rows


def _count(value: int, style: str) -> Text:
    return plain(str(value), style=style if value else DIM)


def topic_rows(status: KafkaStatus) -> list[Row]:
    rows: list[Row] = []
    for t in status.topics:
        urp = sum(p.under_replicated for p in t.partitions)
        offline = sum(p.offline for p in t.partitions)
        moved = sum(p.not_preferred for p in t.partitions)
        rows.append((t.name, [
            plain(t.name, style=DIM if t.internal else ""),
            plain(str(len(t.partitions))),
            plain(str(t.replication_factor)),
            plain(str(t.min_isr) if t.min_isr is not None else "?"),
            _count(urp, WARN),
            _count(offline, BAD),
            _count(moved, WARN),
        ]))
    return rows


def partition_state(p: PartitionState) -> Text:
    if p.offline:
        return plain("offline", style=BAD)
    if p.under_min_isr:
        return plain("under min ISR", style=BAD)
    if p.under_replicated:
        return plain("under-replicated", style=WARN)
    if p.not_preferred:
        return plain("not preferred", style=WARN)
    return plain("ok", style=OK)


def partition_rows(topic: TopicState) -> list[Row]:
    return [
        (p.name, [plain(p.name), plain(str(p.leader) if p.leader >= 0 else "none"),
                  plain(_ids(p.replicas)), plain(_ids(p.isr)), partition_state(p)])
        for p in topic.partitions
    ]


def group_rows(status: KafkaStatus) -> list[Row]:
    rows: list[Row] = []
    for g in status.groups:
        state = plain(g.error or g.state, style=BAD if g.error else
                      (OK if g.state == "STABLE" else WARN))
        rows.append((g.group_id, [
            plain(g.group_id),
            state,
            plain(str(g.members), style=WARN if g.members == 0 else ""),
            plain(str(g.total_lag)),
            plain(str(len(g.partitions))),
        ]))
    return rows


def group_lag_rows(group: GroupState) -> list[Row]:
    return [
        (f"{p.topic}-{p.partition}", [
            plain(f"{p.topic}-{p.partition}"),
            plain("-" if p.committed is None else str(p.committed)),
            plain("-" if p.latest is None else str(p.latest)),
            plain("?" if p.lag is None else str(p.lag)),
        ])
        for p in group.partitions
    ]


def cluster_text(status: KafkaStatus) -> Text:
    """The lines under the broker table: cluster, partition health, skew, groups."""
    c = status.counts
    text = Text()
    text.append("cluster ")
    text.append(safe_text(status.cluster_id or "?", CELL), style="bold")
    text.append(f"   {CONTROLLER_LABEL}: {status.controller_id}\n", style=DIM)
    text.append(f"partitions {c.total}: online {c.online}, ")
    text.append(f"offline {c.offline}", style=BAD if c.offline else "")
    text.append(", ")
    text.append(f"URP {c.under_replicated}", style=WARN if c.under_replicated else "")
    text.append(", ")
    text.append(f"under min ISR {c.under_min_isr}", style=BAD if c.under_min_isr else "")
    text.append(f", at min ISR {c.at_min_isr}, ")
    text.append(f"not on preferred leader {c.not_preferred}",
                style=WARN if c.electable else "")
    if c.not_preferred != c.electable:
        text.append(f" ({c.electable} electable now)", style=DIM)
    balance = leader_balance(status)
    text.append("\n")
    text.append(f"leader skew {balance.skew}",
                style=WARN if balance.skew_after_election < balance.skew else "")
    if balance.skew_after_election < balance.skew:
        text.append(f" ({balance.skew_after_election} after elect-leaders)", style=WARN)
    text.append(f", replica skew {status.replica_skew}")
    for g in status.groups:
        text.append("\ngroup ")
        text.append(safe_text(g.group_id, CELL))
        text.append(safe_text(f": {g.error or g.state}, {g.members} member(s), "
                              f"lag {g.total_lag}"))
    for problem in status.problems:
        text.append("\n")
        text.append(safe_text(problem), style=WARN)
    return text


# --------------------------------------------------------------------------- sfops kafka status


def _state_word(broker: BrokerState) -> str:
    return "up" if broker.up else ("unreachable" if broker.registered else "down")


def status_text(status: KafkaStatus, summary: BackendSummary,
                options: Mapping[str, Any]) -> str:
    """The text of ``sfops kafka status`` under the health line (the alerts follow it, in the
    generic "What is wrong now"): the cluster, partition health and skew, the brokers, the
    consumer groups and, with ``--partitions``, every partition. Names from the cluster are
    outside text: control characters are replaced."""
    counts = status.counts
    balance = leader_balance(status)
    lines = [
        f"Kafka cluster {safe_text(status.cluster_id or '?', CELL)}  "
        f"{CONTROLLER_LABEL}: {status.controller_id}",
        f"partitions {counts.total}: online {counts.online}, offline {counts.offline}, "
        f"under-replicated {counts.under_replicated}, under-min-ISR {counts.under_min_isr}, "
        f"at-min-ISR {counts.at_min_isr}, not on preferred leader {counts.not_preferred} "
        f"({counts.electable} electable now)",
        f"leader skew {balance.skew} ({balance.skew_after_election} after a preferred "
        f"election), replica skew {status.replica_skew}",
        "",
        f"{'BROKER':>6}  {'ADDRESS':<22} {'RACK':<8} {'STATE':<12} {'LEADERS':>7} "
        f"{'REPLICAS':>8} {'PREFERRED':>9}",
    ]
    lines += [f"{b.broker_id:>6}  {safe_text(b.address, CELL):<22} "
              f"{safe_text(b.rack or '-', CELL):<8} "
              f"{_state_word(b):<12} {b.leaders:>7} {b.replicas:>8} {b.preferred:>9}"
              for b in status.brokers]
    if status.groups:
        lines += ["", f"{'GROUP':<32} {'STATE':<20} {'MEMBERS':>7} {'LAG':>10}"]
        lines += [f"{safe_text(g.group_id, CELL):<32} {safe_text(g.error or g.state):<20} "
                  f"{g.members:>7} "
                  f"{g.total_lag:>10}" for g in status.groups]
    if options.get("partitions"):
        lines += ["", f"{'PARTITION':<40} {'LEADER':>6}  {'REPLICAS':<12} {'ISR':<12} MIN-ISR"]
        lines += [f"{safe_text(p.name, CELL):<40} {p.leader:>6}  {_ids(p.replicas):<12} "
                  f"{_ids(p.isr):<12} {p.min_isr if p.min_isr else '?'}"
                  for p in status.partitions()]
    return "\n".join(lines)
