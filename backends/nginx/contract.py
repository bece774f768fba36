"""The nginx backend, declared once: its service, its status JSON and its actions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from backends.actions import Action
from backends.config import SfopsConfig, redacted
from backends.contract import (
    ActionContext,
    ActionSpec,
    Backend,
    Param,
    Target,
    load,
    service_factory,
)

DEFAULT_DRAIN_TIMEOUT = 60.0


def _members(config: SfopsConfig, status: Any) -> list[str]:
    return [] if config.nginx is None else list(config.nginx.members)


def _member_action(path: str) -> Callable[[ActionContext, Any, Mapping[str, Any]], Action]:
    def build(context: ActionContext, member: Any, params: Mapping[str, Any]) -> Action:
        action: Action = context.runner.build(load(path), context.service("nginx"), str(member),
                                              timeout=params.get("timeout",
                                                                 DEFAULT_DRAIN_TIMEOUT),
                                              audit=context.runner.audit)
        return action

    return build


MEMBER = Target("member", "MEMBER", "member name as in [nginx.members.*] (e.g. api-3)",
                choices=_members)
TIMEOUT = Param("timeout", "how long to wait for in-flight requests (default %(default)g)",
                type=float, default=DEFAULT_DRAIN_TIMEOUT, metavar="S")

# What to check after a drain or undrain that stopped without an outcome.
IF_INTERRUPTED = (
    "the upstream file may be edited but not reloaded (or reloaded with {target} half-way): "
    "check `sfops nginx status` and `nginx -t`, then drain or undrain {target} again: that "
    "writes the state you choose and reloads")

BACKEND = Backend(
    name="nginx",
    title="Load balancer",
    command="nginx",
    help="nginx upstream members: status, drain, undrain",
    build_service=service_factory("nginx", "backends.nginx.service:build_service"),
    status_json=redacted,
    actions=(
        ActionSpec("nginx.drain", "drain", "Drain",
                   "mark MEMBER down, reload gracefully, wait for its in-flight requests",
                   "backends.nginx.actions:DrainMember", _member_action(
                       "backends.nginx.actions:DrainMember"),
                   key="d", target=MEMBER, params=(TIMEOUT,), destructive=True,
                   if_interrupted=IF_INTERRUPTED),
        ActionSpec("nginx.undrain", "undrain", "Undrain", "put MEMBER back into rotation",
                   "backends.nginx.actions:UndrainMember", _member_action(
                       "backends.nginx.actions:UndrainMember"),
                   key="u", target=MEMBER, params=(TIMEOUT,),
                   if_interrupted=IF_INTERRUPTED),
    ),
)
