"""Drill-down screens by backend name, and the TUI's actions, both from the backends'
contracts (:mod:`backends.registry`).

A backend may have a screen of its own: ``tui/screens/<name>.py`` defining ``SCREEN`` (a
BackendScreen subclass). One without gets :class:`~tui.screens.generic.GenericScreen`, which
shows its contract's table. Keys, palette entries and help lines come from the contract's
action specs, so the CLI and the TUI build every action the same way.

The overview is :mod:`tui.screens.overview`. Screens never import :mod:`tui.app`: they see the
app as :class:`tui.screens.host.ScreenHost`, and the app pushes each new snapshot to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.actions import Action

if TYPE_CHECKING:
    from backends.contract import ActionSpec
    from tui.screens.base import BackendScreen
    from tui.screens.host import ScreenHost


@dataclass(frozen=True)
class ScreenAction:
    """An action key on a drill-down screen."""

    key: str
    label: str
    # Builds the action: build(app, the selected row's key or None for an action without a
    # target). A screen not migrated to a contract types its app and target its own way.
    build: Callable[..., Action]
    needs_target: bool = True
    mutating: bool = True


def _from_spec(spec: ActionSpec) -> ScreenAction:
    def build(app: ScreenHost, target: str | None) -> Action:
        return spec.make(app, target, spec.defaults())

    assert spec.key is not None
    return ScreenAction(spec.key, spec.label, build, needs_target=spec.target is not None,
                        mutating=spec.mutating)


def specs(backend: str) -> list[ActionSpec]:
    """The backend's actions the TUI offers (a key, no required parameter)."""
    from backends.registry import backend as find

    declared = find(backend)
    return [] if declared is None else [s for s in declared.actions if s.in_tui]


def screen_actions(backend: str) -> list[ScreenAction]:
    return [_from_spec(spec) for spec in specs(backend)]


def screen_for(backend: str) -> type[BackendScreen] | None:
    from backends.registry import optional_module

    module = optional_module(f"tui.screens.{backend}")
    # The screens package's own modules (base, generic, host, overview) define no SCREEN.
    screen: type[BackendScreen] | None = getattr(module, "SCREEN", None)
    if screen is not None:
        return screen
    from backends.registry import backend as find

    if find(backend) is None:
        return None
    from tui.screens.generic import generic_screen

    return generic_screen(backend)


def palette_actions(app: ScreenHost) -> Iterator[tuple[str, str, Callable[[], Action]]]:
    """(title, help, build) for every action on every target the backends know about."""
    from backends.registry import backend as find

    for service in app.services:
        declared = find(service.name)
        if declared is None:
            continue  # a service no contract declares (a test's fake): nothing to offer
        for spec in specs(service.name):
            targets: list[Any] = [None]
            if spec.target is not None:
                targets = list(spec.target.choices(app.config, app.status(service.name)))
            for target in targets:
                on = "" if target is None else f": {target}"
                yield (
                    f"{spec.label}{on}",
                    f"{declared.title}: {spec.help}",
                    _builder(spec, app, target),
                )


def _builder(spec: ActionSpec, app: ScreenHost, target: Any) -> Callable[[], Action]:
    return lambda: spec.make(app, target, spec.defaults())


def preload(backends: list[str], *, read_only: bool = False) -> None:
    """Import the screens (and through them the backends' action modules) before the event
    loop runs: importing e.g. the kubernetes client takes seconds and would freeze the UI.
    Read-only, no action can be built in the TUI (no key, no palette entry): their modules
    are left out (Kubernetes': some 60 ms of CPU before the first poll could start)."""
    for backend in backends:
        screen_for(backend)
        if read_only:
            continue
        for spec in specs(backend):
            spec.action_class()


def screen_key_help(backends: list[str], *, read_only: bool) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if read_only:
        return lines
    for backend in backends:
        for action in screen_actions(backend):
            what = "the selected row" if action.needs_target else "the whole backend"
            lines.append((action.key, f"{backend}: {action.label.lower()} {what}"))
    return lines
