"""Several named environments in one configuration file (production, staging, …).

A file may hold ``[environments.NAME]`` tables. Each holds the usual sections
(``[environments.prod.postgres]``, ``[environments.prod.nginx.members.api-1]``) and two keys of
its own, ``colour`` and ``read_only``. The file's top-level sections are shared defaults: an
environment is the top level with its own table merged over it, key by key and table by table
(any value that is not a table — a string, a number, an array — replaces the shared one).
A file without ``[environments]`` is one environment named ``default``, exactly as before.

Which environment: ``sfops --env NAME``, else ``$SFOPS_ENV``, else the file's top-level
``default_env``, else the only one; with several and none chosen the error lists them.

Only the chosen environment is parsed (its secrets read, its sections validated): a staging
bastion need not be able to read production's password files. The others are checked for
their name, ``colour`` and ``read_only`` only, so the TUI can offer them.

This module knows TOML data and names, not sections: :func:`backends.config.parse` does the
rest with its ``Reader``, which names each problem's key where it was written
(:class:`MergedTable` records, per key, the table it came from).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # backends.config imports this module: names only, at run time none
    from backends.config import Reader, SfopsSettings

__all__ = [
    "COLOURS",
    "DEFAULT_ENV",
    "ENV_KEYS",
    "Environment",
    "MergedTable",
    "choose",
    "declared",
    "default_colour",
    "environment_settings",
    "merge",
]

DEFAULT_ENV = "default"  # the one environment of a file without [environments]
NEUTRAL = "neutral"
# Named, not free-form: the TUI styles each with a fixed, readable foreground.
COLOURS = ("red", "yellow", "green", "blue", "magenta", "cyan", NEUTRAL)
# Keys of an environment's own table that are not sections.
ENV_KEYS = ("colour", "read_only")

_PRODUCTION = {"prod", "production", "prd", "live"}
_STAGING = {"staging", "stage", "stg", "preprod", "pre-prod", "uat"}


def default_colour(name: str) -> str:
    """Production red, staging yellow, anything else neutral — judged by the name's words
    (``prod``, ``eu-production``, ``prod_2`` are red; ``preprod`` and ``staging`` yellow)."""
    lowered = name.lower()
    words = set(re.split(r"[-_.]", lowered))
    if lowered in _STAGING or words & _STAGING:
        return "yellow"
    if words & _PRODUCTION:
        return "red"
    return NEUTRAL


@dataclass(frozen=True)
class Environment:
    """What is known of an environment without parsing it: its name, its colour and whether
    it is read-only (its own ``read_only``, else its ``[sfops] read_only``, else the shared
    one)."""

    name: str
    colour: str = NEUTRAL
    read_only: bool = False


class MergedTable(dict[str, Any]):
    """A table built from a shared one and an environment's. ``origins`` maps each key to the
    dotted prefix of the table it was written in, so an error names the line to fix."""

    origins: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.origins = {}


def merge(shared: Mapping[str, Any], own: Mapping[str, Any], shared_prefix: str,
          own_prefix: str) -> MergedTable:
    """``own`` over ``shared``: tables merge recursively, any other value of ``own`` replaces
    the shared one. Neither input is changed."""
    result = MergedTable()
    for key, value in shared.items():
        result[key] = value
        result.origins[key] = shared_prefix
    for key, value in own.items():
        base = shared.get(key)
        if isinstance(value, dict) and isinstance(base, dict):
            part = _dotted(shared_prefix, key), _dotted(own_prefix, key)
            result[key] = merge(base, value, *part)
        else:
            result[key] = value
        result.origins[key] = own_prefix
    return result


def _dotted(prefix: str, key: str) -> str:
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{prefix}.{part}" if prefix else part


def declared(root: Reader) -> tuple[dict[str, Environment], dict[str, dict[str, Any]],
                                    str | None]:
    """Every environment of the file (name, colour, read-only) with its own table, and the
    file's ``default_env``. Only what the TUI's picker shows is checked here: an environment's
    sections are checked when it is chosen."""
    default_env = root.string("default_env", None)
    outer = root.table("environments")
    environments: dict[str, Environment] = {}
    tables: dict[str, dict[str, Any]] = {}
    if outer is None:
        return environments, tables, None
    if not outer.data:
        root.fail("environments", "must define at least one environment")
    shared = root.data.get("sfops")
    shared_sfops = shared if isinstance(shared, dict) else {}
    for name in outer.data:
        table = outer.table(name)
        if table is None:
            continue
        table.check_name()
        colour = table.string("colour", None)
        if colour is not None and colour not in COLOURS:
            table.fail("colour", f"expected one of {', '.join(COLOURS)}, got "
                                 f"{json.dumps(colour)}")
        read_only = table.boolean("read_only", None)
        if read_only is None:
            own = table.data.get("sfops")
            candidates = [own if isinstance(own, dict) else {}, shared_sfops]
            read_only = next((t["read_only"] for t in candidates
                              if isinstance(t.get("read_only"), bool)), False)
        environments[name] = Environment(name, colour or default_colour(name), read_only)
        tables[name] = dict(table.data)
    if default_env is not None and environments and default_env not in environments:
        root.fail("default_env", f"unknown environment {json.dumps(default_env)} "
                                 f"(configured: {', '.join(environments)})")
    return environments, tables, default_env


def choose(env: str | None, default_env: str | None,
           environments: Mapping[str, Environment]) -> str:
    """The environment to use: ``env`` (--env, SFOPS_ENV), else ``default_env``, else the
    only one. ValueError (naming the known ones) when there is none or it is unknown."""
    known = ", ".join(environments)
    chosen = env or default_env or (next(iter(environments)) if len(environments) == 1
                                    else None)
    if chosen is None:
        raise ValueError(f"several environments ({known}) and none chosen: use --env NAME "
                         f"or SFOPS_ENV, or set default_env in the file")
    if chosen not in environments:
        raise ValueError(f"unknown environment {json.dumps(chosen)} (configured: {known})")
    return chosen


def environment_settings(settings: SfopsSettings, env: str, own: Mapping[str, Any],
                         fail: Callable[[str], None]) -> SfopsSettings:
    """An environment's ``read_only`` (its own key is a shorthand for its ``[sfops]
    read_only``) and its own state: ``state_dir`` defaults to ``<shared state_dir>/<env>``
    (sfops's memory of a cluster — the last primary LSN, a broker's drain record — belongs to
    that environment), while the last-fallback lock files stay in the shared directory (lock
    keys name targets: two environments naming one target must still meet)."""
    prefix = f"environments.{_dotted('', env)}"
    own_sfops: Mapping[str, Any] = own["sfops"] if isinstance(own.get("sfops"), dict) else {}
    if "read_only" in own and "read_only" in own_sfops:
        fail(f"{prefix}.read_only: conflicts with {prefix}.sfops.read_only: give only one")
    if isinstance(own.get("read_only"), bool):
        settings = replace(settings, read_only=own["read_only"])
    if "state_dir" not in own_sfops:
        settings = replace(settings, state_dir=settings.state_dir / env,
                           lock_dir=settings.state_dir)
    return settings
