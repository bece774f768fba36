"""Kafka on the timeline: brokers up and down, the counts of offline, under-replicated and
under-min-ISR partitions, and leadership moves, as facts compared between readings
(backends.timeline.model)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from backends.kafka.model import KafkaStatus
from backends.timeline.model import (
    CRITICAL,
    INFO,
    OK,
    TIMES,
    WARNING,
    Change,
    Facts,
    Observation,
    diff,
    names,
)

SOURCE = "kafka"
BROKER, LEADER = "broker:", "leader:"
COUNTS = {  # fact → (what it counts, level when it rises)
    "offline": ("offline partitions", CRITICAL),
    "urp": ("under-replicated partitions", WARNING),
    "under-min-isr": ("partitions under min.insync.replicas", CRITICAL),
}


def observe(status: KafkaStatus, section: Any = None) -> Observation:
    facts: dict[str, str] = {}
    notes: dict[str, str] = {}
    for broker in status.brokers:
        facts[f"{BROKER}{broker.broker_id}"] = "up" if broker.up else "down"
        notes[f"{BROKER}{broker.broker_id}"] = broker.address
    partitions = list(status.partitions())
    affected = {
        "offline": [p.name for p in partitions if p.offline],
        "urp": [p.name for p in partitions if p.under_replicated and not p.offline],
        "under-min-isr": [p.name for p in partitions if p.under_min_isr and not p.offline],
    }
    for key, found in affected.items():
        facts[key] = str(len(found))
        notes[key] = names(found)
    for p in partitions:
        facts[f"{LEADER}{p.name}"] = str(p.leader)
    return Observation(facts, notes)


def changes(old: Facts, new: Observation) -> list[Change]:
    found: list[Change] = []
    for key, _, after in diff(old, new.facts, BROKER):
        broker = key.removeprefix(BROKER)
        where = new.notes.get(key, "")
        found.append(Change(SOURCE, "broker", broker,
                            f"broker {broker} ({where}) {after}",
                            OK if after == "up" else CRITICAL, data={"to": after}))
    for key, (what, level) in COUNTS.items():
        was, now = old.get(key), new.facts.get(key)
        if was is not None and now is not None and was != now:
            before, after = was, now
            rising = int(after) > int(before)
            which = new.notes.get(key, "")
            message = f"{what} {before} → {after}" + (f": {which}" if rising and which else "")
            found.append(Change(SOURCE, key, "*", message,
                                level if rising else (OK if after == "0" else INFO),
                                data={"from": int(before), "to": int(after)}))
    moves = [(key.removeprefix(LEADER), before, after)
             for key, before, after in diff(old, new.facts, LEADER)]
    if moves:
        # One line for all the moves of one reading (a drain moves hundreds at once).
        pairs = Counter(f"{_broker(b)}→{_broker(a)}" for _, b, a in moves)
        summary = ", ".join(f"{pair} {TIMES}{count}" for pair, count in pairs.most_common(4))
        found.append(Change(
            SOURCE, "leader-moves", "*",
            f"{len(moves)} leadership(s) moved ({summary}): "
            f"{names([p for p, _, _ in moves])}",
            WARNING if any(a == "-1" for _, _, a in moves) else INFO,
            data={"moves": [{"partition": p, "from": int(b), "to": int(a)}
                            for p, b, a in moves[:200]], "count": len(moves)}))
    return found


def _broker(leader: str) -> str:
    return "none" if leader == "-1" else leader
