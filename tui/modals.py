"""Modal screens: action confirmation (with the preflight), action progress, quit guard, help.

Everything an action says — its description (the target's name), check names and details,
step messages, errors — may carry outside text: it is shown as ``Text`` (never markup) after
:func:`~backends.safetext.safe_text`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from backends.actions import Action, CheckResult, CheckStatus, RunResult, Step, refusing
from backends.safetext import TEXT, safe_text

CHECK_STYLE = {CheckStatus.PASS: "green", CheckStatus.WARN: "yellow", CheckStatus.FAIL: "bold red"}
CHECK_MARK = {CheckStatus.PASS: "✔ pass", CheckStatus.WARN: "! warn", CheckStatus.FAIL: "✖ FAIL"}


def checks_text(checks: Sequence[CheckResult]) -> Text:
    """Preflight/verify results as plain text (details come from servers: never markup)."""
    text = Text()
    for check in checks:
        text.append(f"{CHECK_MARK[check.status]:<7}", style=CHECK_STYLE[check.status])
        text.append(safe_text(check.name), style="bold")
        if check.detail:
            text.append(f"  {safe_text(check.detail, TEXT)}")
        text.append("\n")
    if not checks:
        text.append("(no checks)", style="dim")
    return text


class ConfirmActionScreen(ModalScreen[bool]):
    """Shows what the action will do and what its preflight found; Cancel has the focus.

    Destructive actions are confirmed only by typing the target's name. When a check failed,
    Confirm stays disabled: forcing is a deliberate CLI act (``--force``), audited there.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, action: Action, checks: Sequence[CheckResult], *,
                 environment: Text | None = None) -> None:
        super().__init__()
        self.environment = environment  # the environment's badge (None: no environments)
        self.action_obj = action
        self.checks = list(checks)
        self.blocked = any(c.status is CheckStatus.FAIL for c in self.checks)

    def compose(self) -> ComposeResult:
        phrase = self.action_obj.confirmation_phrase
        with Vertical(id="dialog"):
            what = Text()
            if self.environment is not None:
                what.append_text(self.environment)
                what.append(" ")
            what.append(safe_text(self.action_obj.describe()), style="bold")
            yield Label(what, markup=False, id="what")
            yield Label("Preflight checks:", markup=False)
            with VerticalScroll(id="checks"):
                yield Static(checks_text(self.checks), markup=False)
            if self.blocked:
                busy = bool(refusing(self.checks, force=True))  # not even --force runs it
                yield Label(
                    Text(
                        "The target is busy: try again once the other action has finished."
                        if busy else
                        "A check failed: refusing. Fix the cause, or use the CLI with --force.",
                        style="bold red",
                    ),
                    markup=False,
                )
            elif phrase:
                yield Label(Text(f"Type {safe_text(repr(phrase))} to confirm:"), markup=False)
                yield Input(placeholder=safe_text(phrase), id="phrase")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button(
                    "Confirm",
                    id="confirm",
                    variant="error",
                    disabled=self.blocked or bool(phrase),
                )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Input.Changed, "#phrase")
    def phrase_changed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = (
            event.value != self.action_obj.confirmation_phrase
        )

    @on(Input.Submitted, "#phrase")
    def phrase_submitted(self, event: Input.Submitted) -> None:
        if event.value == self.action_obj.confirmation_phrase and not self.blocked:
            self.dismiss(True)

    @on(Button.Pressed, "#confirm")
    def confirm(self) -> None:
        if not self.query_one("#confirm", Button).disabled:
            self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class ProgressScreen(ModalScreen[None]):
    """Streams an action's steps; closes with Enter/Escape once the run has finished. ``q``
    is the app's quit (a modal screen hides the app's bindings): it asks, and waits for every
    running action."""

    BINDINGS = [Binding("escape,enter", "close", "Close"),
                Binding("q", "app.request_quit", "Quit")]

    def __init__(self, action: Action) -> None:
        super().__init__()
        self.action_obj = action
        self.finished = False
        self.lines = Text()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(f"Running: {safe_text(self.action_obj.describe())}", style="bold"),
                        markup=False)
            yield ProgressBar(total=1.0, show_eta=False, id="bar")
            with VerticalScroll(id="steps"):
                yield Static(self.lines, markup=False, id="log")
            yield Label(
                Text("working… (the action continues if the connection drops)", style="dim"),
                markup=False,
                id="status",
            )

    def add_step(self, step: Step) -> None:
        self.lines.append(f"• {safe_text(step.message, TEXT)}\n")
        self.query_one("#log", Static).update(self.lines)
        bar = self.query_one("#bar", ProgressBar)
        if step.fraction is not None:
            bar.update(total=1.0, progress=max(0.0, min(1.0, step.fraction)))
        self.query_one("#steps", VerticalScroll).scroll_end(animate=False)

    def finish(self, result: RunResult) -> None:
        self.finished = True
        style = "bold green" if result.ok else "bold red"
        summary = Text(f"{result.outcome.value} in {result.duration_s:.1f}s", style=style)
        if result.error:
            summary.append(f": {safe_text(result.error)}", style="")
        if result.verify:
            self.lines.append("verify:\n", style="bold")
            self.lines.append_text(checks_text(result.verify))
            self.query_one("#log", Static).update(self.lines)
        write_path = result.write_path
        if write_path is not None and write_path.checks() != result.verify:
            # The canary after the action: "done, but users cannot write" when it failed.
            self.lines.append("write path:\n", style="bold")
            self.lines.append_text(checks_text(write_path.checks()))
            self.query_one("#log", Static).update(self.lines)
            if result.ok and not write_path.ok:
                summary = Text(f"done, but users cannot write: {safe_text(write_path.problem())}",
                               style="bold red")
        if result.ok:
            self.query_one("#bar", ProgressBar).update(total=1.0, progress=1.0)
        summary.append("   [Enter] close", style="dim")
        self.query_one("#status", Label).update(summary)

    def action_close(self) -> None:
        if self.finished:
            self.dismiss(None)


class QuitGuardScreen(ModalScreen[str]):
    """Quitting while an action runs: never abandon it silently."""

    BINDINGS = [Binding("escape", "stay", "Stay")]

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(
                Text(f"An action is in progress: {safe_text(self.description, TEXT)}",
                     style="bold"),
                markup=False,
            )
            yield Label(
                "Quit after it finishes (its outcome goes to the audit log), or stay.",
                markup=False,
            )
            with Horizontal(id="buttons"):
                yield Button("Stay", id="stay", variant="primary")
                yield Button("Quit when done", id="quit-when-done", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    @on(Button.Pressed, "#stay")
    def action_stay(self) -> None:
        self.dismiss("stay")

    @on(Button.Pressed, "#quit-when-done")
    def quit_when_done(self) -> None:
        self.dismiss("quit-when-done")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(self.text, markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
