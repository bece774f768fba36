"""The command palette and notifications with hostile text: titles and help are never parsed
as markup (Textual's own provider would), control characters are shown as escapes."""

from __future__ import annotations

from rich.text import Text
from textual.content import Content

from tests.ui.fakes import FakeService
from tests.ui.helpers import wait_for
from tests.ui.test_app_shell import make_app
from tui.palette import SafeSystemCommands

HOSTILE = "[@click=app.quit]LB\x1b]0;PWNED\x07[bold]x"


def plain(prompt: object) -> str:
    if isinstance(prompt, Text):
        return prompt.plain
    assert isinstance(prompt, Content), type(prompt)
    return prompt.plain


async def test_palette_titles_are_plain_text(tmp_path):
    app = make_app(tmp_path, [FakeService("nginx", HOSTILE)])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.services[0].polls >= 1)
        provider = SafeSystemCommands(app.screen)
        shown = [(plain(hit.prompt), hit.help) async for hit in provider.discover()]
        shown += [(plain(hit.prompt), hit.help) async for hit in provider.search("open")]
        ours = [(title, help_line) for title, help_line in shown if "PWNED" in title]
        assert len(ours) == 2  # discovered, and found by "open"
        for title, help_line in ours:
            assert title == "Open [@click=app.quit]LB\\x1b]0;PWNED\\x07[bold]x"
            assert "\x1b" not in title and "\x1b" not in (help_line or "")
        await pilot.press("q")


async def test_notifications_are_made_safe_and_never_markup(tmp_path):
    app = make_app(tmp_path, [FakeService("nginx", "Load balancer")])
    async with app.run_test(size=(80, 24)) as pilot:
        app.notify(HOSTILE + "y" * 5000, title=HOSTILE, markup=True)
        app.screen.notify(HOSTILE)  # a screen's notify goes through the app's
        await wait_for(pilot, lambda: len(list(app._notifications)) == 2, what="two notes")
        notes = list(app._notifications)
        assert len(notes) == 2
        for note in notes:
            assert not note.markup
            assert "\x1b" not in note.message and "\\x1b]0;PWNED\\x07" in note.message
            assert len(note.message) <= 2000
        assert notes[0].title == "[@click=app.quit]LB\\x1b]0;PWNED\\x07[bold]x"
        await pilot.press("q")
