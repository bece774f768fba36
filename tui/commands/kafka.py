"""`sfops kafka status|elect-leaders|drain|undrain`: the Kafka cluster from the command line.

``status`` polls once (exit 0 healthy, 1 degraded, 5 unreachable); the actions run through the
shared action runner (preflight, confirmation, progress, audit, --yes/--json/--force).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO

from backends.actions import Action, ActionRunner
from backends.config import ConfigError, SfopsConfig, redacted
from backends.kafka.actions import DrainBroker, ElectLeaders, UndrainBroker
from backends.kafka.model import CONTROLLER_LABEL, KafkaStatus, leader_balance
from backends.kafka.service import KafkaService
from backends.resilience import PollJob
from backends.service import observe, summary_of
from backends.snapshot import Health, Snapshot
from tui import exitcodes
from tui.commands._action import add_action_flags, load_config, run_action_command

STATUS_TIMEOUT = 15.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = subparsers.add_parser(
        "kafka", help="Kafka: status, preferred leader election, broker drain/undrain")
    commands = kafka.add_subparsers(dest="kafka_command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", help="brokers, partition health, consumer lag",
        description="Poll the cluster once. Exit 0 healthy, 1 degraded, 5 unreachable.")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--partitions", action="store_true",
                        help="list every partition (leader, replicas, ISR)")
    status.set_defaults(func=run_status)

    elect = commands.add_parser(
        "elect-leaders", help="preferred leader election (all partitions or one topic)",
        description="Move each partition's leadership to its preferred (first) replica.")
    elect.add_argument("--topic", metavar="T", help="only this topic's partitions")
    add_action_flags(elect)
    elect.set_defaults(func=_command(ElectLeaders, lambda service, config, args:
                                     ElectLeaders(service, args.topic)))

    for name, action_cls, text in (
        ("drain", DrainBroker, "move BROKER last in every replica list (no data moves) and "
         "its leadership elsewhere; the original order is saved for undrain"),
        ("undrain", UndrainBroker, "restore BROKER's recorded replica order and elect the "
         "preferred leaders"),
    ):
        parser = commands.add_parser(name, help=text.split(";")[0], description=text)
        parser.add_argument("broker", type=int, metavar="BROKER", help="broker (node) id")
        add_action_flags(parser)
        parser.set_defaults(func=_command(
            action_cls, lambda service, config, args, cls=action_cls:
            cls(service, args.broker, config.sfops.state_dir)))


Factory = Callable[[KafkaService, SfopsConfig, argparse.Namespace], Action]


def _command(action_cls: type[Action], factory: Factory) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            runner.check_allowed(action_cls)
            service = _service(config)
            stack.push_async_callback(service.close)
            return factory(service, config, args)

        return run_action_command(args, action_cls, build)

    return run


def _service(config: SfopsConfig) -> KafkaService:
    from backends.kafka import build_service

    service = build_service(config)
    if service is None:
        raise ConfigError(f"{config.path}: [kafka]: section is missing")
    return service


# --------------------------------------------------------------------------- status


def run_status(args: argparse.Namespace) -> int:
    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    try:
        service = _service(config)
    except ConfigError as exc:
        print(f"sfops: configuration error:\n{exc}", file=sys.stderr)
        return exitcodes.USAGE
    snapshot = asyncio.run(_poll(service))
    summary = summary_of(service, snapshot)
    status = snapshot.value
    if not snapshot.ok or not isinstance(status, KafkaStatus):
        code = exitcodes.UNREACHABLE
    else:
        code = exitcodes.OK if summary.health is Health.OK else exitcodes.DEGRADED
    if args.json:
        print(json.dumps({
            "health": summary.health.value,
            "exit_code": code,
            "error": snapshot.error,
            "figures": [{"label": f.label, "value": f.value, "health": f.health.value}
                        for f in summary.figures],
            "alerts": [{"key": a.key, "severity": a.severity.name.lower(), "message": a.message}
                       for a in summary.alerts],
            "status": redacted(status) if status is not None else None,
        }, ensure_ascii=False, default=str))
        return code
    if status is None:
        print(f"Kafka: {snapshot.error}", file=sys.stderr)
        return code
    print_status(status, summary.health, sys.stdout, partitions=args.partitions)
    for alert in summary.alerts:
        print(f"{alert.severity.name.lower():<8}  {alert.message}")
    return code


async def _poll(service: KafkaService) -> Snapshot[Any]:
    # The liveness rule, as in `sfops status` and the TUI: a contact probe beside the poll.
    job: PollJob[KafkaStatus] = PollJob("kafka", lambda: observe(service), interval=0,
                                        timeout=STATUS_TIMEOUT)
    try:
        return await job.poll_once()
    finally:
        try:
            async with asyncio.timeout(3.0):
                await service.close()
        except Exception:  # noqa: S110 - closing must not change the verdict
            pass


def print_status(status: KafkaStatus, health: Health, out: TextIO, *,
                 partitions: bool = False) -> None:
    counts = status.counts
    print(f"Kafka cluster {status.cluster_id}  health {health.value.upper()}  "
          f"{CONTROLLER_LABEL}: {status.controller_id}", file=out)
    print(f"partitions {counts.total}: online {counts.online}, offline {counts.offline}, "
          f"under-replicated {counts.under_replicated}, under-min-ISR {counts.under_min_isr}, "
          f"at-min-ISR {counts.at_min_isr}, not on preferred leader {counts.not_preferred} "
          f"({counts.electable} electable now)", file=out)
    balance = leader_balance(status)
    print(f"leader skew {balance.skew} ({balance.skew_after_election} after a preferred "
          f"election), replica skew {status.replica_skew}", file=out)
    print("", file=out)
    print(f"{'BROKER':>6}  {'ADDRESS':<22} {'RACK':<8} {'STATE':<12} {'LEADERS':>7} "
          f"{'REPLICAS':>8} {'PREFERRED':>9}", file=out)
    for b in status.brokers:
        state = "up" if b.up else ("unreachable" if b.registered else "down")
        print(f"{b.broker_id:>6}  {b.address:<22} {b.rack or '-':<8} {state:<12} "
              f"{b.leaders:>7} {b.replicas:>8} {b.preferred:>9}", file=out)
    if status.groups:
        print("", file=out)
        print(f"{'GROUP':<32} {'STATE':<20} {'MEMBERS':>7} {'LAG':>10}", file=out)
        for g in status.groups:
            print(f"{g.group_id:<32} {g.error or g.state:<20} {g.members:>7} "
                  f"{g.total_lag:>10}", file=out)
    if partitions:
        print("", file=out)
        print(f"{'PARTITION':<40} {'LEADER':>6}  {'REPLICAS':<12} {'ISR':<12} MIN-ISR",
              file=out)
        for p in status.partitions():
            print(f"{p.name:<40} {p.leader:>6}  {','.join(map(str, p.replicas)):<12} "
                  f"{','.join(map(str, p.isr)):<12} {p.min_isr if p.min_isr else '?'}",
                  file=out)
    print("", file=out)
