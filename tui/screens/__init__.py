"""Drill-down screens by backend name. Each module tui/screens/<module>.py defines SCREEN
(a BackendScreen subclass); slices that are not part of this build are simply absent."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from backends.actions import Action

if TYPE_CHECKING:
    from tui.app import SfopsApp
    from tui.screens.base import BackendScreen

SCREEN_MODULES = {
    "nginx": "tui.screens.nginx",
    "postgres": "tui.screens.postgres",
    "kafka": "tui.screens.kafka",
    "kubernetes": "tui.screens.kubernetes",
}


def screen_for(backend: str) -> type[BackendScreen] | None:
    module_name = SCREEN_MODULES.get(backend)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    screen: type[BackendScreen] = module.SCREEN
    return screen


def palette_actions(app: SfopsApp) -> Iterator[tuple[str, str, Callable[[], Action]]]:
    """(title, help, build) for every action on every target the backends know about."""
    for service in app.services:
        screen = screen_for(service.name)
        if screen is None:
            continue
        targets = screen.palette_targets(app)
        for action in screen.actions:
            for target in targets:
                yield (
                    f"{action.label}: {target}",
                    f"{service.title}: {action.label.lower()} {target}",
                    lambda action=action, target=target: action.build(app, target),
                )


def preload(backends: list[str]) -> None:
    """Import the screens (and through them the backends' action modules) before the event
    loop runs: importing e.g. the kubernetes client takes seconds and would freeze the UI."""
    for backend in backends:
        screen_for(backend)


def screen_key_help(backends: list[str], *, read_only: bool) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for backend in backends:
        screen = screen_for(backend)
        if screen is None or read_only:
            continue
        for action in screen.actions:
            lines.append((action.key, f"{backend}: {action.label.lower()} the selected row"))
    return lines
