"""Pure planning for drain/undrain (Cruise Control's demote) and the record that makes a drain
reversible: the original replica orders, persisted in sfops's state directory *before* any
change, so an undrain works after a crash, a reboot or from another operator's session."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.kafka.model import PartitionState

PartitionKey = tuple[str, int]
STATE_VERSION = 1


def demoted_order(partition: PartitionState, broker_id: int) -> list[int]:
    """``broker_id`` moved last; the others keep their order, in-sync replicas first (so the
    new preferred leader can actually be elected). No replica is added or removed."""
    others = [r for r in partition.replicas if r != broker_id]
    in_sync = [r for r in others if r in partition.isr]
    lagging = [r for r in others if r not in partition.isr]
    return [*in_sync, *lagging, broker_id]


def drain_plan(partitions: Iterable[PartitionState], broker_id: int
               ) -> dict[PartitionKey, list[int]]:
    """New replica order for every partition where ``broker_id`` is a replica but not last."""
    plan: dict[PartitionKey, list[int]] = {}
    for p in partitions:
        if broker_id in p.replicas and len(p.replicas) > 1:
            new = demoted_order(p, broker_id)
            if new != list(p.replicas):
                plan[(p.topic, p.partition)] = new
    return plan


@dataclass(frozen=True)
class Blocker:
    partition: PartitionState
    reason: str

    def describe(self) -> str:
        return f"{self.partition.name} ({self.reason})"


def drain_blockers(partitions: Iterable[PartitionState], broker_id: int) -> list[Blocker]:
    """Partitions led by ``broker_id`` that a drain would leave unsafe: no other in-sync
    replica to take over, or an ISR not above ``min.insync.replicas`` (losing this broker
    afterwards would stop acks=all writes)."""
    blockers: list[Blocker] = []
    for p in partitions:
        if p.leader != broker_id:
            continue
        others = [r for r in p.isr if r != broker_id]
        if not others:
            blockers.append(Blocker(p, f"no other in-sync replica; ISR {list(p.isr)}"))
        elif p.min_isr is None:
            blockers.append(Blocker(p, "min.insync.replicas unknown"))
        elif len(p.isr) <= p.min_isr:
            blockers.append(Blocker(
                p, f"ISR {list(p.isr)} is not above min.insync.replicas={p.min_isr}"))
    return blockers


def restore_plan(partitions: Iterable[PartitionState], original: dict[PartitionKey, list[int]]
                 ) -> tuple[dict[PartitionKey, list[int]], dict[PartitionKey, str]]:
    """(reassignments that put each recorded partition back in its original order,
    partitions skipped with the reason). A partition whose replica *set* changed since the
    drain (someone reassigned it) is left alone: restoring would move data."""
    current = {(p.topic, p.partition): p for p in partitions}
    plan: dict[PartitionKey, list[int]] = {}
    skipped: dict[PartitionKey, str] = {}
    for key, order in sorted(original.items()):
        p = current.get(key)
        if p is None:
            skipped[key] = f"{key[0]}-{key[1]}: no longer exists"
        elif sorted(p.replicas) != sorted(order):
            skipped[key] = (f"{key[0]}-{key[1]}: replicas are now {list(p.replicas)}, "
                            f"were {order}")
        elif list(p.replicas) != order:
            plan[key] = list(order)
    return plan, skipped


def names(keys: Sequence[PartitionKey], limit: int = 10) -> str:
    shown = ", ".join(f"{t}-{p}" for t, p in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# --------------------------------------------------------------------------- persisted state


@dataclass(frozen=True)
class DrainRecord:
    broker_id: int
    cluster_id: str | None
    drained_at: str
    original: dict[PartitionKey, list[int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "broker_id": self.broker_id,
            "cluster_id": self.cluster_id,
            "drained_at": self.drained_at,
            "partitions": [{"topic": t, "partition": p, "replicas": r}
                           for (t, p), r in sorted(self.original.items())],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrainRecord:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported drain record version {data.get('version')!r}")
        return cls(
            broker_id=int(data["broker_id"]),
            cluster_id=data.get("cluster_id"),
            drained_at=str(data["drained_at"]),
            original={(str(e["topic"]), int(e["partition"])): [int(r) for r in e["replicas"]]
                      for e in data["partitions"]},
        )

    def merged(self, newer: dict[PartitionKey, list[int]]) -> DrainRecord:
        """A repeated drain keeps the *first* recorded order of each partition (the current
        one is already demoted) and adds partitions that appeared since."""
        original = dict(newer)
        original.update(self.original)
        return DrainRecord(self.broker_id, self.cluster_id, self.drained_at, original)


def state_path(state_dir: Path, broker_id: int) -> Path:
    return state_dir / f"kafka-drain-{broker_id}.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_record(path: Path) -> DrainRecord | None:
    if not path.exists():
        return None
    return DrainRecord.from_json(json.loads(path.read_text(encoding="utf-8")))


def save_record(path: Path, record: DrainRecord) -> None:
    """Atomic and durable: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record.to_json(), handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class MinIsrLoss:
    """What losing some brokers would do to the partitions they are in sync for."""

    under: tuple[PartitionState, ...] = ()  # would fall under min.insync.replicas
    at: tuple[PartitionState, ...] = ()  # would fall to exactly min.insync.replicas
    unknown: tuple[PartitionState, ...] = ()  # min.insync.replicas not known


def min_isr_loss(partitions: Iterable[PartitionState], brokers: Iterable[int]) -> MinIsrLoss:
    """The partitions whose ISR would shrink to or under ``min.insync.replicas`` without
    ``brokers`` (a drained broker, once stopped; the brokers on a drained node). Pure."""
    gone = set(brokers)
    under: list[PartitionState] = []
    at: list[PartitionState] = []
    unknown: list[PartitionState] = []
    for p in partitions:
        if not gone & set(p.isr):
            continue
        left = sum(1 for r in p.isr if r not in gone)
        if p.min_isr is None:
            unknown.append(p)
        elif left < p.min_isr:
            under.append(p)
        elif left == p.min_isr:
            at.append(p)
    return MinIsrLoss(tuple(under), tuple(at), tuple(unknown))
