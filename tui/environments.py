"""Environments in the TUI: the badge that says which one is on screen, its colour, the
picker (key ``E``) and what a switch needs from the front end that opened the app.

The app never reads configuration files or builds clients itself: ``run_tui`` hands it an
:class:`EnvironmentOpener` (load an environment's configuration — blocking, file reads and
secrets, run off the event loop — and make a :class:`Session` of it: the services and the
action runner, with the command line's ``--read-only`` applied).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from backends.actions import ActionRunner
from backends.config import Environment, SfopsConfig
from backends.safetext import CELL, safe_text
from backends.service import BackendService

__all__ = [
    "BADGE_STYLE",
    "EnvironmentOpener",
    "EnvironmentPicker",
    "Session",
    "badge",
    "env_class",
]

# Rich styles of the badge per configured colour (backends.environments.COLOURS): a strong
# background with a readable foreground. The name is always written too (NO_COLOR, and
# colour is never the only signal).
BADGE_STYLE: Mapping[str, str] = {
    "red": "bold white on red",
    "yellow": "bold black on yellow",
    "green": "bold black on green",
    "blue": "bold white on blue",
    "magenta": "bold white on magenta",
    "cyan": "bold black on cyan",
    "neutral": "bold reverse",
}


def badge(config: SfopsConfig) -> Text | None:
    """`` prod `` in the environment's colour, `` READ-ONLY`` after it when read-only; None
    for a file without environments (nothing to tell apart)."""
    if not config.has_environments:
        return None
    text = Text(f" {config.env} ", style=BADGE_STYLE.get(config.colour, BADGE_STYLE["neutral"]))
    if config.sfops.read_only:
        text.append(" read-only", style="bold yellow")
    return text


def env_class(colour: str) -> str:
    """The app's CSS class for this colour (sfops.tcss tints the header with it)."""
    return f"-env-{colour}"


@dataclass
class Session:
    """What the app runs for one environment."""

    config: SfopsConfig
    services: list[BackendService]
    runner: ActionRunner


class EnvironmentOpener(Protocol):
    def load(self, env: str) -> SfopsConfig:
        """The environment's configuration (blocking: reads files; raises ConfigError)."""
        ...

    def session(self, config: SfopsConfig) -> Session:
        """Its services and runner (cheap: clients connect on first use)."""
        ...


class CallableOpener:
    """An :class:`EnvironmentOpener` from two functions (run_tui, tests)."""

    def __init__(self, load: Callable[[str], SfopsConfig],
                 session: Callable[[SfopsConfig], Session]) -> None:
        self._load = load
        self._session = session

    def load(self, env: str) -> SfopsConfig:
        return self._load(env)

    def session(self, config: SfopsConfig) -> Session:
        return self._session(config)


def picker_line(environment: Environment, current: str) -> Text:
    text = Text(f" {environment.name} ",
                style=BADGE_STYLE.get(environment.colour, BADGE_STYLE["neutral"]))
    if environment.read_only:
        text.append("  read-only", style="yellow")
    if environment.name == current:
        text.append("  (current)", style="dim")
    return text


class EnvironmentPicker(ModalScreen[str | None]):
    """Every environment of the file; Enter switches to the highlighted one, Esc keeps the
    current one."""

    BINDINGS = [Binding("escape,q", "cancel", "Cancel")]

    def __init__(self, environments: Sequence[Environment], current: str) -> None:
        super().__init__()
        self.environments = list(environments)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Switch environment", style="bold"), markup=False)
            # Names are identifiers (checked by the configuration): safe, still shown as Text.
            options = [Option(picker_line(e, self.current), id=safe_text(e.name, CELL))
                       for e in self.environments]
            yield OptionList(*options, id="environments")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        names = [e.name for e in self.environments]
        option_list.highlighted = names.index(self.current) if self.current in names else 0
        option_list.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
