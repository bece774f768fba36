"""The app as its screens see it.

Screens never import :mod:`tui.app` (the app imports them): what they use of it is this
protocol, which :class:`tui.app.SfopsApp` satisfies. It is also the contract's
:class:`~backends.contract.ActionContext`, so a screen hands it to an action spec's build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rich.text import Text

from backends.actions import Action
from backends.contract import ActionContext
from backends.service import BackendService
from backends.snapshot import Snapshot
from backends.timeline.observer import TimelineWriter


class ScreenHost(ActionContext, Protocol):
    @property
    def read_only(self) -> bool: ...

    @property
    def services(self) -> Sequence[BackendService]: ...

    def last_snapshot(self, backend: str) -> Snapshot[Any] | None:
        """The backend's latest snapshot (a screen shows it when mounted; after that the app
        pushes each new one to the screen)."""
        ...

    def start_action(self, build: Callable[[], Action]) -> None:
        """Build (errors are shown), preflight, confirm, run: the one way a screen acts."""
        ...

    def open_backend(self, name: str) -> None: ...

    def environment_badge(self) -> Text | None:
        """The environment on screen, for a title line (None: the file has none)."""
        ...

    def timeline_writer(self) -> TimelineWriter | None:
        """The timeline store's writer of the environment on screen (None: not observing,
        e.g. between environments)."""
        ...

    def overview_mounted(self) -> None:
        """The overview is composed: fill its alert and recent-action tables."""
        ...
