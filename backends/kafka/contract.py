"""The Kafka backend, declared once: its service, its status JSON and its actions (preferred
leader election; broker drain/undrain, Cruise Control's demote).

Cheap to import: the service and the actions are named, loaded when used (and librdkafka is
only ever loaded in the admin worker processes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from backends.actions import Action
from backends.config import SfopsConfig, redacted
from backends.contract import (
    ActionContext,
    ActionSpec,
    Backend,
    BuildAction,
    Param,
    Target,
    load,
    service_factory,
)

ELECT = "backends.kafka.actions:ElectLeaders"
DRAIN = "backends.kafka.actions:DrainBroker"
UNDRAIN = "backends.kafka.actions:UndrainBroker"


def broker_id(target: Any) -> int:
    """A broker (node) id: the CLI gives an int, the TUI the selected row's key (a string)."""
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    try:
        return int(str(target).strip())
    except ValueError:
        raise ValueError(f"{target!r} is not a broker id (an integer node id)") from None


def _brokers(config: SfopsConfig, status: Any) -> Sequence[str]:
    """The palette's targets: the brokers of the last status; none before the first poll."""
    return [str(b.broker_id) for b in getattr(status, "brokers", None) or ()]


def _elect(context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
    action: Action = context.runner.build(load(ELECT), context.service("kafka"),
                                          params.get("topic"))
    return action


def _broker_action(path: str) -> BuildAction:
    def build(context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
        broker = broker_id(target)  # a bad target is refused before anything is built
        action: Action = context.runner.build(load(path), context.service("kafka"), broker,
                                              context.config.sfops.state_dir)
        return action

    return build


BROKER = Target("broker", "BROKER", "broker (node) id", type=int, choices=_brokers)
DRAIN_HELP = ("move BROKER last in every replica list (no data moves) and its leadership "
              "elsewhere; the original order is saved for undrain")
UNDRAIN_HELP = "restore BROKER's recorded replica order and elect the preferred leaders"

BACKEND = Backend(
    name="kafka",
    title="Kafka",
    command="kafka",
    help="Kafka: status, preferred leader election, broker drain/undrain",
    build_service=service_factory("kafka", "backends.kafka.service:build_service"),
    status_json=redacted,
    status_params=(Param("partitions", "list every partition (leader, replicas, ISR)",
                         type=bool, default=False),),
    actions=(
        ActionSpec("kafka.elect-leaders", "elect-leaders", "Elect preferred leaders",
                   "preferred leader election (all partitions or one topic)", ELECT, _elect,
                   key="e", params=(Param("topic", "only this topic's partitions",
                                          metavar="T"),),
                   description="Move each partition's leadership to its preferred (first) "
                   "replica."),
        ActionSpec("kafka.drain", "drain", "Drain broker", DRAIN_HELP.split(";")[0], DRAIN,
                   _broker_action(DRAIN), key="d", target=BROKER, description=DRAIN_HELP),
        ActionSpec("kafka.undrain", "undrain", "Undrain broker", UNDRAIN_HELP, UNDRAIN,
                   _broker_action(UNDRAIN), key="u", target=BROKER),
    ),
)
