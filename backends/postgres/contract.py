"""The PostgreSQL backend, declared once: its service, its redacted status JSON and its
actions (failover, switchover, rejoin)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from backends.actions import Action
from backends.config import SfopsConfig, redact_text
from backends.contract import ActionContext, ActionSpec, Backend, Target, load, service_factory

NAME = "postgres"


def _members(config: SfopsConfig, status: Any) -> list[str]:
    return [] if config.postgres is None else list(config.postgres.members)


def _cluster_action(path: str) -> Callable[[ActionContext, Any, Mapping[str, Any]], Action]:
    def build(context: ActionContext, member: Any, params: Mapping[str, Any]) -> Action:
        from backends.postgres.cluster import PgCluster

        action_cls = load(path)
        context.runner.check_allowed(action_cls)  # read-only: refused before anything is built
        # The context's service: in the TUI the app's live one (it keeps recording the
        # primary's position the failover's lag check compares against), which the action
        # never closes; in the CLI one the command closes on exit.
        service: Any = context.service(NAME)
        cluster = PgCluster(context.config, service=service)
        action: Action = context.runner.build(action_cls, cluster, str(member))
        return action

    return build


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def status_json(status: Any) -> Any:
    """The cluster status as JSON, every conninfo and URL with its password redacted (a
    standby's ``primary_conninfo`` may carry ``password=``)."""
    return _scrub(status.to_json())


FAILOVER_TO = Target("member", "MEMBER", "standby to promote", option="--to",
                     choices=_members)
SWITCHOVER_TO = Target("member", "MEMBER", "standby to promote", option="--to",
                       choices=_members)
REJOIN_MEMBER = Target("member", "MEMBER", "member to rejoin (e.g. pg-1)", choices=_members)

# What to check after a run that stopped without an outcome (see ActionSpec.if_interrupted).
IF_SWITCHOVER_INTERRUPTED = (
    "check `sfops pg status`: exactly one primary must accept writes. One does: `sfops pg "
    "rejoin` the other member unless it already streams from it. None does (the old primary "
    "was stopped, maybe fenced): `sfops pg failover --to {target}`, then rejoin the old "
    "primary")
IF_FAILOVER_INTERRUPTED = (
    "check `sfops pg status`: exactly one primary must accept writes. {target} is it: `sfops "
    "pg rejoin` the old primary once it is reachable. None is: run the failover again")
IF_REJOIN_INTERRUPTED = (
    "{target} may be stopped, half-rewound or without its standby settings: check `sfops pg "
    "status` (exactly one primary) and run `sfops pg rejoin {target}` again")

BACKEND = Backend(
    name=NAME,
    title="PostgreSQL",
    command="pg",
    help="PostgreSQL: status, failover, switchover, rejoin",
    build_service=service_factory(NAME, "backends.postgres.service:build_service"),
    status_json=status_json,
    actions=(
        ActionSpec("pg.failover", "failover", "Failover to",
                   "the primary is gone: promote MEMBER and fence the old primary",
                   "backends.postgres.actions:Failover",
                   _cluster_action("backends.postgres.actions:Failover"),
                   key="f", target=FAILOVER_TO, destructive=True,
                   if_interrupted=IF_FAILOVER_INTERRUPTED,
                   description="Promote a standby after the primary died. Refused while the "
                   "primary answers (use switchover). --force accepts a candidate lagging more "
                   "than max_lag_on_failover (audited); it never overrides the primary-is-gone "
                   "check."),
        ActionSpec("pg.switchover", "switchover", "Switchover to",
                   "planned, zero-loss: make MEMBER the primary, old primary rejoins",
                   "backends.postgres.actions:Switchover",
                   _cluster_action("backends.postgres.actions:Switchover"),
                   key="s", target=SWITCHOVER_TO, destructive=True,
                   if_interrupted=IF_SWITCHOVER_INTERRUPTED,
                   description="CHECKPOINT, clean fast shutdown of the primary, confirm MEMBER "
                   "received the shutdown checkpoint, promote it, rejoin the old primary as "
                   "its standby."),
        ActionSpec("pg.rejoin", "rejoin", "Rejoin",
                   "make MEMBER a streaming standby of the primary (pg_rewind if needed)",
                   "backends.postgres.actions:Rejoin",
                   _cluster_action("backends.postgres.actions:Rejoin"),
                   key="j", target=REJOIN_MEMBER, destructive=True,
                   if_interrupted=IF_REJOIN_INTERRUPTED),
    ),
)
