"""`sfops k8s ...`: status, rollout actions on a Deployment, cordon / uncordon / drain a Node.

    sfops k8s status [--json] [-n NS]
    sfops k8s restart|pause|resume DEPLOYMENT [-n NS]
    sfops k8s set-image DEPLOYMENT CONTAINER=IMAGE
    sfops k8s undo DEPLOYMENT [--to-revision N]
    sfops k8s scale DEPLOYMENT N
    sfops k8s cordon|uncordon NODE
    sfops k8s drain NODE [--timeout S] [--grace-period S]

Actions run through the shared runner (tui/commands/_action.py): read-only mode refuses them
before any request, preflight (RBAC first), confirmation, streamed progress, audit record.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, TextIO

from backends.actions import Action, ActionRunner
from backends.config import ConfigError, SfopsConfig
from backends.kubernetes.config import KubernetesConfig
from tui import exitcodes
from tui.commands._action import add_action_flags, load_config, run_action_command

DEFAULT_STATUS_TIMEOUT = 15.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k8s = subparsers.add_parser(
        "k8s", help="Kubernetes: status, rollout restart/set-image/undo/pause/resume/scale, "
        "cordon/uncordon/drain",
        description="Kubernetes deployments and nodes. Namespace defaults to the first of "
        "[kubernetes].namespaces.")
    commands = k8s.add_subparsers(dest="k8s_command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="deployments, pods with probe outcomes, nodes")
    _common(status, namespace_help="only this namespace (default: all configured)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--timeout", type=float, default=DEFAULT_STATUS_TIMEOUT, metavar="S",
                        help="time budget for the initial sync (default %(default)g)")
    status.set_defaults(func=run_status)

    from backends.kubernetes.nodes import DEFAULT_DRAIN_TIMEOUT
    from backends.kubernetes.rollout import DEFAULT_ROLLOUT_TIMEOUT

    def deployment_command(name: str, text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=text, description=text)
        parser.add_argument("deployment", metavar="DEPLOYMENT")
        _common(parser)
        parser.add_argument("--timeout", type=float, default=DEFAULT_ROLLOUT_TIMEOUT,
                            metavar="S", help="how long to follow the rollout "
                            "(default %(default)g)")
        add_action_flags(parser)
        return parser

    deployment_command("restart", "rolling restart (the restartedAt annotation, as kubectl)"
                       ).set_defaults(func=_deployment("restart"))
    set_image = deployment_command("set-image", "set a container's image and follow the rollout")
    set_image.add_argument("assignment", metavar="CONTAINER=IMAGE")
    set_image.set_defaults(func=_deployment("set-image"))
    undo = deployment_command("undo", "roll back to the previous (or a given) revision")
    undo.add_argument("--to-revision", type=int, default=None, metavar="N")
    undo.set_defaults(func=_deployment("undo"))
    deployment_command("pause", "pause rollouts").set_defaults(func=_deployment("pause"))
    deployment_command("resume", "resume rollouts and follow").set_defaults(
        func=_deployment("resume"))
    scale = deployment_command("scale", "set the replica count and follow")
    scale.add_argument("replicas", type=int, metavar="N")
    scale.set_defaults(func=_deployment("scale"))

    for name, text in (("cordon", "mark NODE unschedulable"),
                       ("uncordon", "mark NODE schedulable again"),
                       ("drain", "cordon NODE and evict its pods (PodDisruptionBudgets honoured, "
                        "DaemonSet and mirror pods skipped)")):
        parser = commands.add_parser(name, help=text, description=text)
        parser.add_argument("node", metavar="NODE")
        _common(parser, namespace=False)
        if name == "drain":
            parser.add_argument("--timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT,
                                metavar="S", help="overall time limit (default %(default)g)")
            parser.add_argument("--grace-period", type=int, default=None, metavar="S",
                                help="termination grace period for evicted pods "
                                "(default: each pod's own)")
        add_action_flags(parser)
        parser.set_defaults(func=_node(name))


def _common(parser: argparse.ArgumentParser, *, namespace: bool = True,
            namespace_help: str = "namespace (default: the first configured)") -> None:
    if namespace:
        parser.add_argument("-n", "--namespace", default=None, help=namespace_help)
    parser.add_argument("--context", default=None,
                        help="kubeconfig context (default: [kubernetes].context)")


def _section(config: SfopsConfig) -> KubernetesConfig:
    if config.kubernetes is None:
        raise ConfigError(f"{config.path}: [kubernetes] section is missing")
    return config.kubernetes


def _namespace(args: argparse.Namespace, section: KubernetesConfig) -> str:
    return str(args.namespace or section.namespaces[0])


def _client(config: SfopsConfig, args: argparse.Namespace, stack: AsyncExitStack) -> Any:
    from backends.kubernetes.client import KubeError
    from backends.kubernetes.service import make_client

    section = _section(config)
    try:
        client = make_client(section, context=args.context)
    except KubeError as exc:
        raise ConfigError(f"{config.path}: kubernetes: {exc}") from exc
    stack.push_async_callback(client.close)
    return client


# ----------------------------------------------------------------------------- actions


def _deployment(kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from backends.kubernetes import rollout

        classes: dict[str, type[rollout.DeploymentAction]] = {
            "restart": rollout.RestartDeployment, "set-image": rollout.SetImage,
            "undo": rollout.UndoDeployment, "pause": rollout.PauseDeployment,
            "resume": rollout.ResumeDeployment, "scale": rollout.ScaleDeployment,
        }
        action_cls = classes[kind]
        extra: dict[str, Any] = {}
        if kind == "set-image":
            container, sep, image = args.assignment.partition("=")
            if not sep or not container or not image:
                print(f"sfops: expected CONTAINER=IMAGE, got {args.assignment!r}",
                      file=sys.stderr)
                return exitcodes.USAGE
            from backends.kubernetes.access import image_reference_problem

            problem = image_reference_problem(image)
            if problem:
                print(f"sfops: invalid image reference {image!r}: {problem}", file=sys.stderr)
                return exitcodes.USAGE
            extra = {"container": container, "image": image}
        elif kind == "undo":
            if args.to_revision is not None and args.to_revision < 1:
                print("sfops: --to-revision must be >= 1", file=sys.stderr)
                return exitcodes.USAGE
            extra = {"to_revision": args.to_revision}
        elif kind == "scale":
            if args.replicas < 0:
                print("sfops: replicas must be >= 0", file=sys.stderr)
                return exitcodes.USAGE
            extra = {"replicas": args.replicas}

        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            runner.check_allowed(action_cls)
            client = _client(config, args, stack)
            namespace = _namespace(args, _section(config))
            return runner.build(action_cls, client, namespace, args.deployment,
                                timeout=args.timeout, **extra)

        return run_action_command(args, action_cls, build)

    return run


def _node(kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from backends.kubernetes import nodes

        classes: dict[str, type[nodes.NodeAction]] = {
            "cordon": nodes.CordonNode, "uncordon": nodes.UncordonNode,
            "drain": nodes.DrainNode,
        }
        action_cls = classes[kind]

        async def build(config: SfopsConfig, runner: ActionRunner,
                        stack: AsyncExitStack) -> Action:
            runner.check_allowed(action_cls)
            client = _client(config, args, stack)
            if kind == "drain":
                return runner.build(nodes.DrainNode, client, args.node, timeout=args.timeout,
                                    grace_period=args.grace_period)
            return runner.build(action_cls, client, args.node)

        return run_action_command(args, action_cls, build)

    return run


# ----------------------------------------------------------------------------- status


def run_status(args: argparse.Namespace) -> int:
    config = load_config(args)
    if config is None:
        return exitcodes.USAGE
    try:
        section = _section(config)
    except ConfigError as exc:
        print(f"sfops: configuration error:\n{exc}", file=sys.stderr)
        return exitcodes.USAGE
    if args.namespace:
        section = dataclasses.replace(section, namespaces=(args.namespace,))
    try:
        return asyncio.run(_status(section, args, config))
    except ConfigError as exc:
        print(f"sfops: configuration error:\n{exc}", file=sys.stderr)
        return exitcodes.USAGE


async def _status(section: KubernetesConfig, args: argparse.Namespace,
                  config: SfopsConfig) -> int:
    from backends.kubernetes.client import KubeError
    from backends.kubernetes.service import KubernetesService, make_client
    from backends.kubernetes.status import status_json, summarize_cluster
    from backends.snapshot import Health

    try:
        client = make_client(section, context=args.context)
    except KubeError as exc:
        raise ConfigError(f"{config.path}: kubernetes: {exc}") from exc
    service = KubernetesService(section, client)
    try:
        synced = await service.wait_synced(args.timeout)
        status = service.current()
        if not synced:
            errors = [i.error for i in service.informers if i.error]
            why = errors[0] if errors else f"not synced within {args.timeout:g} s"
            print(f"sfops: Kubernetes API {client.host} unreachable: {why}", file=sys.stderr)
            return exitcodes.UNREACHABLE
    finally:
        await service.close()
    summary = summarize_cluster(service.name, service.title, status)
    code = exitcodes.OK if summary.health is Health.OK else exitcodes.DEGRADED
    if args.json:
        data = status_json(status)
        data["health"] = summary.health.value
        data["exit_code"] = code
        data["requests"] = dict(client.stats.requests)
        print(json.dumps(data, ensure_ascii=False))
    else:
        print_status(status, summary, sys.stdout)
    return code


def print_status(status: Any, summary: Any, out: TextIO) -> None:
    from tui.render.kubernetes import COLUMNS, cluster_rows

    now = datetime.now(UTC)
    rows = [[cell.plain for cell in cells] for _, cells in cluster_rows(status, now)]
    table = [list(COLUMNS), *rows]
    widths = [min(48, max(len(r[i]) for r in table)) for i in range(len(COLUMNS))]
    print(f"Kubernetes {status.host}: {summary.health.value.upper()}  "
          + "  ".join(f"{f.label} {f.value}" for f in summary.figures), file=out)
    for row in table:
        cells = [(c if len(c) <= w else c[: w - 1] + "…").ljust(w) for c, w in zip(row, widths,
                                                                                 strict=True)]
        print("  ".join(cells).rstrip(), file=out)
    for budget in status.budgets:
        print(f"PDB {budget.key}: {budget.spec_text}, allows {budget.disruptions_allowed} "
              f"({budget.current_healthy}/{budget.expected_pods} healthy)", file=out)
    for alert in summary.alerts:
        print(f"{alert.severity.name.lower():<8}  {alert.message}", file=out)
