"""The Kubernetes backend, declared once: its service, its status JSON, its options (-n,
--context) and its actions — rollouts on a Deployment, cordon/uncordon/drain on a Node.

Cheap to import: the client library and the action modules load only when an action is built.

A build accepts both forms of a target: the TUI's row keys (``deploy:NS/NAME``,
``pod:NS/NAME`` — resolved through the last status to its Deployment or its node —
``node:NAME``) and the CLI's plain names (the namespace from ``-n``, else the first of
``[kubernetes].namespaces``). Bad input raises ValueError with a message the CLI prints
(exit 2) and the TUI shows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from backends.config import ConfigError, SfopsConfig
from backends.contract import (
    ActionContext,
    ActionSpec,
    Backend,
    Param,
    Target,
    lazy,
    load,
    service_factory,
)

if TYPE_CHECKING:
    from backends.actions import Action
    from backends.kubernetes.model import ClusterStatus

DEFAULT_ROLLOUT_TIMEOUT = 600.0
DEFAULT_DRAIN_TIMEOUT = 300.0
PALETTE_NODES_MAX = 20  # beyond this many nodes the palette offers deployments only
ALL_NAMESPACES = ("*", "all")

# Object names as the API server accepts them (DNS-1123): anything else would also change the
# request path ("../", "?"), so it is refused before a request is made.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

ROLLOUT = "backends.kubernetes.rollout:"
NODES = "backends.kubernetes.nodes:"


# ----------------------------------------------------------------------------- targets


def _name(value: str, what: str) -> str:
    if not value or len(value) > 253 or not _SUBDOMAIN.match(value):
        raise ValueError(f"{value!r} is not a valid {what} name (lowercase letters, digits, "
                         "'-' and '.')")
    return value


def _namespace_name(value: str) -> str:
    if not value or len(value) > 63 or not _LABEL.match(value):
        raise ValueError(f"{value!r} is not a valid namespace name (lowercase letters, "
                         "digits and '-')")
    return value


def _status(context: ActionContext) -> ClusterStatus | None:
    from backends.kubernetes.model import ClusterStatus

    status = context.status("kubernetes")
    return status if isinstance(status, ClusterStatus) else None


def default_namespace(config: SfopsConfig, params: Mapping[str, Any]) -> str:
    """``-n``, else the first of ``[kubernetes].namespaces``."""
    given = params.get("namespace")
    if given:
        return _namespace_name(str(given))
    section = config.kubernetes
    first = section.namespaces[0] if section is not None and section.namespaces else "default"
    if first in ALL_NAMESPACES:
        raise ValueError("[kubernetes].namespaces watches every namespace: name the "
                         "deployment's with -n NAMESPACE")
    return _namespace_name(first)


def _row(target: Any) -> tuple[str, str]:
    """(kind, rest) of a row key, or ("", name) for a plain name."""
    text = str(target if target is not None else "").strip()
    if not text:
        raise ValueError("no target given")
    kind, sep, rest = text.partition(":")
    return (kind, rest) if sep else ("", text)


def _namespaced(rest: str, what: str) -> tuple[str, str]:
    namespace, sep, name = rest.partition("/")
    if not sep:
        raise ValueError(f"{what} {rest!r}: expected NAMESPACE/NAME")
    return _namespace_name(namespace), _name(name, what)


def deployment_target(context: ActionContext, target: Any,
                      params: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, deployment) for a deployment row, a pod row (its Deployment, from the last
    status) or a plain name."""
    kind, rest = _row(target)
    if kind == "":
        return default_namespace(context.config, params), _name(rest, "deployment")
    if kind == "deploy":
        return _namespaced(rest, "deployment")
    if kind == "pod":
        namespace, name = _namespaced(rest, "pod")
        status = _status(context)
        if status is not None:
            for d in status.deployments:
                if any(p.info.namespace == namespace and p.info.name == name for p in d.pods):
                    return d.info.namespace, d.info.name
        raise ValueError(f"pod {namespace}/{name} belongs to no Deployment")
    if kind == "node":
        raise ValueError("select a deployment (or one of its pods), not a node")
    raise ValueError(f"{target!r} is not a deployment: expected DEPLOYMENT, "
                     "deploy:NAMESPACE/NAME or pod:NAMESPACE/NAME")


def node_target(context: ActionContext, target: Any) -> str:
    """The node of a node row, of a pod row (the node it runs on) or a plain name."""
    kind, rest = _row(target)
    if kind == "":
        return _name(rest, "node")
    if kind == "node":
        return _name(rest, "node")
    if kind == "pod":
        namespace, name = _namespaced(rest, "pod")
        status = _status(context)
        if status is not None:
            for pod in status.all_pods():
                if pod.info.namespace == namespace and pod.info.name == name and pod.info.node:
                    return pod.info.node
        raise ValueError(f"pod {namespace}/{name} is on no node")
    if kind == "deploy":
        raise ValueError("select a node (or a pod on it), not a deployment")
    raise ValueError(f"{target!r} is not a node: expected NODE, node:NAME or "
                     "pod:NAMESPACE/NAME")


def _deployments(config: SfopsConfig, status: Any) -> list[str]:
    from backends.kubernetes.model import ClusterStatus

    if not isinstance(status, ClusterStatus):
        return []
    return [f"deploy:{d.info.key}" for d in status.deployments]


def _nodes(config: SfopsConfig, status: Any) -> list[str]:
    from backends.kubernetes.model import ClusterStatus

    if not isinstance(status, ClusterStatus) or len(status.nodes) > PALETTE_NODES_MAX:
        return []
    return [f"node:{n.info.name}" for n in status.nodes]


# ----------------------------------------------------------------------------- builds


def _service(context: ActionContext) -> Any:
    """The Kubernetes service: its clients and breaker. In the TUI the app's live one (shared:
    an action never closes it); in the CLI one the CLI context builds and closes on exit."""
    return context.service("kubernetes")


def _operator(context: ActionContext, action_cls: Any) -> tuple[Any, Any]:
    """(operator client, breaker) for an action of ``action_cls``: refused first in read-only
    mode, so the operator identity is never loaded there."""
    context.runner.check_allowed(action_cls)
    service = _service(context)
    return service.operator_client(), service.breaker


def _check_timeout(params: Mapping[str, Any], default: float) -> float:
    value = params.get("timeout")
    timeout = default if value is None else float(value)
    if timeout <= 0:
        raise ValueError("--timeout must be > 0")
    return timeout


BuildAction = Callable[[ActionContext, Any, Mapping[str, Any]], "Action"]
# (context, namespace, deployment, params) → the action class's own keyword arguments.
Extra = Callable[[ActionContext, str, str, Mapping[str, Any]], dict[str, Any]]


def _rollout(cls: str, extra: Extra | None = None) -> BuildAction:
    def build(context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
        namespace, name = deployment_target(context, target, params)
        kwargs: dict[str, Any] = {} if extra is None else extra(context, namespace, name,
                                                                 params)
        timeout = _check_timeout(params, DEFAULT_ROLLOUT_TIMEOUT)
        action_cls = load(ROLLOUT + cls)
        client, breaker = _operator(context, action_cls)
        action: Action = context.runner.build(action_cls, client, namespace, name,
                                              timeout=timeout, breaker=breaker, **kwargs)
        return action

    return build


def _set_image(context: ActionContext, namespace: str, name: str,
               params: Mapping[str, Any]) -> dict[str, Any]:
    from backends.kubernetes.access import image_reference_problem

    assignment = str(params.get("assignment") or "")
    container, sep, image = assignment.partition("=")
    if not sep or not container or not image:
        raise ValueError(f"expected CONTAINER=IMAGE, got {assignment!r}")
    problem = image_reference_problem(image)
    if problem:
        raise ValueError(f"invalid image reference {image!r}: {problem}")
    return {"container": container, "image": image}


def _undo(context: ActionContext, namespace: str, name: str,
          params: Mapping[str, Any]) -> dict[str, Any]:
    revision = params.get("to_revision")
    if revision is not None and int(revision) < 1:
        raise ValueError("--to-revision must be >= 1")
    return {"to_revision": None if revision is None else int(revision)}


def _scale(context: ActionContext, namespace: str, name: str,
           params: Mapping[str, Any]) -> dict[str, Any]:
    replicas = params.get("replicas")
    if replicas is None:
        raise ValueError("give the replica count: scale DEPLOYMENT N")
    if int(replicas) < 0:
        raise ValueError("replicas must be >= 0")
    return {"replicas": int(replicas)}


def _scale_by(step: int) -> Extra:
    """The TUI's +/-: desired ± 1 from the last status, as shown. Without one (the CLI) the
    action reads the live count in its preflight and scales from there."""

    def extra(context: ActionContext, namespace: str, name: str,
              params: Mapping[str, Any]) -> dict[str, Any]:
        status = _status(context)
        if status is None:
            return {"replicas": None, "step": step}
        current = status.deployment(namespace, name)
        if current is None:
            raise ValueError(f"deployment {namespace}/{name} not known yet")
        replicas = current.info.desired + step
        if replicas < 0:
            raise ValueError("already scaled to 0")
        return {"replicas": replicas}

    return extra


def _node(cls: str, drain: bool = False) -> BuildAction:
    def build(context: ActionContext, target: Any, params: Mapping[str, Any]) -> Action:
        node = node_target(context, target)
        kwargs: dict[str, Any] = {}
        if drain:
            kwargs["timeout"] = _check_timeout(params, DEFAULT_DRAIN_TIMEOUT)
            grace = params.get("grace_period")
            if grace is not None and int(grace) < 0:
                raise ValueError("--grace-period must be >= 0")
            kwargs["grace_period"] = None if grace is None else int(grace)
        action_cls = load(NODES + cls)
        client, breaker = _operator(context, action_cls)
        action: Action = context.runner.build(action_cls, client, node, breaker=breaker,
                                              **kwargs)
        return action

    return build


# ----------------------------------------------------------------------------- options


def configure(config: SfopsConfig, options: Mapping[str, Any]) -> SfopsConfig:
    """``--context`` picks the kubeconfig context of the client the CLI builds; ``-n`` makes
    ``status`` watch only that namespace (and is the deployment actions' namespace). A bad
    value is a ConfigError (exit 2), raised before anything is built."""
    section = config.kubernetes
    if section is None:
        return config  # building the service names the missing section
    changes: dict[str, Any] = {}
    if options.get("context"):
        changes["context"] = str(options["context"])
    if options.get("namespace"):
        try:
            changes["namespaces"] = (_namespace_name(str(options["namespace"])),)
        except ValueError as exc:
            raise ConfigError(f"-n/--namespace: {exc}") from None
    if not changes:
        return config
    return config.with_section("kubernetes", dataclasses.replace(section, **changes))


DEPLOYMENT = Target("deployment", "DEPLOYMENT",
                    "Deployment name (its namespace: -n, else the first configured)",
                    choices=_deployments)
NODE = Target("node", "NODE", "node name", choices=_nodes)
NAMESPACE = Param("namespace", "namespace: status shows only it, deployment actions act in it "
                  "(default: status all configured, actions the first of "
                  "[kubernetes].namespaces; node actions ignore it)", short="-n", metavar="NS")
CONTEXT = Param("context", "kubeconfig context (default: [kubernetes].context)", metavar="C")
ROLLOUT_TIMEOUT = Param("timeout", "how long to follow the rollout (default %(default)g)",
                        type=float, default=DEFAULT_ROLLOUT_TIMEOUT, metavar="S")
DRAIN_TIMEOUT = Param("timeout", "overall time limit (default %(default)g)", type=float,
                      default=DEFAULT_DRAIN_TIMEOUT, metavar="S")
GRACE_PERIOD = Param("grace_period", "termination grace period for evicted pods (default: "
                     "each pod's own)", type=int, default=None, metavar="S")
TO_REVISION = Param("to_revision", "the revision to go back to (default: the previous one)",
                    type=int, default=None, metavar="N")
REPLICAS = Param("replicas", "the replica count", type=int, metavar="N", required=True,
                 positional=True)
ASSIGNMENT = Param("assignment", "the container and its new image", metavar="CONTAINER=IMAGE",
                   required=True, positional=True)


def _deployment_spec(name: str, command: str, label: str, help: str, cls: str,
                     key: str | None = None, *, extra: Extra | None = None,
                     params: Sequence[Param] = ()) -> ActionSpec:
    return ActionSpec(f"k8s.{name}", command, label, help, ROLLOUT + cls,
                      _rollout(cls, extra), key=key, target=DEPLOYMENT,
                      params=(*params, ROLLOUT_TIMEOUT))


def _node_spec(name: str, label: str, help: str, cls: str, key: str, *,
               params: Sequence[Param] = (), destructive: bool = False) -> ActionSpec:
    return ActionSpec(f"k8s.{name}", name, label, help, NODES + cls,
                      _node(cls, drain=name == "drain"), key=key, target=NODE,
                      params=tuple(params), destructive=destructive)


BACKEND = Backend(
    name="kubernetes",
    title="Kubernetes",
    command="k8s",
    help="Kubernetes: status, rollout restart/set-image/undo/pause/resume/scale, "
    "cordon/uncordon/drain",
    build_service=service_factory("kubernetes", "backends.kubernetes.service:build_service"),
    status_json=lazy("backends.kubernetes.model:status_json"),  # redacted there
    options=(NAMESPACE, CONTEXT),
    configure=configure,
    actions=(
        _deployment_spec("restart", "restart", "Restart",
                         "rolling restart (the restartedAt annotation, as kubectl)",
                         "RestartDeployment", "R"),
        _deployment_spec("set-image", "set-image", "Set image",
                         "set a container's image and follow the rollout", "SetImage",
                         extra=_set_image, params=(ASSIGNMENT,)),
        _deployment_spec("undo", "undo", "Undo rollout",
                         "roll back to the previous (or a given) revision", "UndoDeployment",
                         "U", extra=_undo, params=(TO_REVISION,)),
        _deployment_spec("pause", "pause", "Pause", "pause rollouts", "PauseDeployment", "p"),
        _deployment_spec("resume", "resume", "Resume", "resume rollouts and follow",
                         "ResumeDeployment", "P"),
        _deployment_spec("scale", "scale", "Scale", "set the replica count and follow",
                         "ScaleDeployment", extra=_scale, params=(REPLICAS,)),
        _deployment_spec("scale", "scale-up", "Scale +1", "add one replica and follow",
                         "ScaleDeployment", "plus", extra=_scale_by(+1)),
        _deployment_spec("scale", "scale-down", "Scale -1", "remove one replica and follow",
                         "ScaleDeployment", "minus", extra=_scale_by(-1)),
        _node_spec("cordon", "Cordon", "mark NODE unschedulable", "CordonNode", "c"),
        _node_spec("uncordon", "Uncordon", "mark NODE schedulable again", "UncordonNode", "C"),
        _node_spec("drain", "Drain", "cordon NODE and evict its pods (PodDisruptionBudgets "
                   "honoured, DaemonSet and mirror pods skipped)", "DrainNode", "D",
                   params=(DRAIN_TIMEOUT, GRACE_PERIOD), destructive=True),
    ),
)
