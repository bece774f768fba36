"""Which component groups the lab has, in start order.

Each group module exposes ``COMPONENTS`` (start order within the group) and
``sfops_config(lab) -> dict``: its part of the sfops configuration the lab writes. It may set
``STOP_WAVES``: lists of component names stopped together, one list after the other (by
default its components stop one at a time, in reverse start order).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

from deploy.lab.core import Component, LabError

# Start order: databases before the API that needs them, the API before nginx in front of it.
GROUP_MODULES: dict[str, str] = {
    "pg": "deploy.lab.postgres",
    "kafka": "deploy.lab.kafka",
    "api": "deploy.lab.api",
    "nginx": "deploy.lab.nginx",
    "sshd": "deploy.lab.sshd",
    "k8s": "deploy.lab.k8s",
}

# Groups whose processes use another group's: `lab down` stops the users first, so the API does
# not log a burst of database and broker errors on its way out. Unrelated groups stop together.
USED_BY: dict[str, tuple[str, ...]] = {"pg": ("api",), "kafka": ("api",), "api": ("nginx",)}


def group_module(group: str) -> ModuleType | None:
    name = GROUP_MODULES[group]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # the group is not part of this build yet
            return None
        raise


def all_components() -> list[Component]:
    components: list[Component] = []
    for group in GROUP_MODULES:
        module = group_module(group)
        if module is not None:
            components.extend(module.COMPONENTS)
    return components


def select(only: Iterable[str] | None) -> list[Component]:
    """Components named by group or by name, in start order; all when ``only`` is empty."""
    components = all_components()
    wanted = [w.strip() for item in (only or ()) for w in item.split(",") if w.strip()]
    if not wanted:
        return components
    known = {c.name for c in components} | {c.group for c in components}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise LabError(
            f"unknown lab component or group: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return [c for c in components if c.name in wanted or c.group in wanted]


def by_name(name: str) -> Component:
    for component in all_components():
        if component.name == name:
            return component
    names = ", ".join(c.name for c in all_components())
    raise LabError(f"unknown lab component {name!r} (known: {names})")


def stop_waves(group: str, components: list[Component]) -> list[list[Component]]:
    """``components`` (of ``group``) as waves: each wave stops together, waves in order."""
    module = group_module(group) if group in GROUP_MODULES else None
    waves: list[list[str]] = list(getattr(module, "STOP_WAVES", []) or [])
    by_name = {c.name: c for c in components}
    planned = [[by_name[n] for n in wave if n in by_name] for wave in waves]
    listed = {n for wave in waves for n in wave}
    # Anything a group did not list stops first, alone, in reverse start order.
    alone = [[c] for c in reversed(components) if c.name not in listed]
    return [wave for wave in alone + planned if wave]
