"""The command palette's provider: Textual's system commands, shown as plain text.

Textual's own provider parses every command title and help line as markup
(``Content.from_markup``), and sfops's titles carry target names from the cluster or the
configuration ("Restart: streamforge/[@click=app.quit]"). This one shows the titles as
``Content``/``Text`` built from plain strings and escapes the help's markup, so nothing in a
name is ever interpreted. The titles and help lines are made safe by the app
(:func:`~backends.safetext.safe_text`) when it yields them.
"""

from __future__ import annotations

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Matcher
from textual.content import Content
from textual.markup import escape
from textual.system_commands import SystemCommandsProvider

__all__ = ["SafeSystemCommands"]


def _display(matcher: Matcher, title: str) -> Content | Text:
    """The title with the matched letters highlighted: the matcher's highlight parses markup,
    so it is used only when the title has no "[" (plain ``Content`` then); otherwise plain
    ``Text``."""
    if "[" in title:
        return Text(title)
    return matcher.highlight(title)


class SafeSystemCommands(SystemCommandsProvider):
    async def discover(self) -> Hits:
        commands = sorted(self.app.get_system_commands(self.screen), key=lambda c: c[0])
        for name, help_text, callback, discover in commands:
            if discover:
                yield DiscoveryHit(Text(name), callback, text=name, help=escape(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback, *_ in self.app.get_system_commands(self.screen):
            if (score := matcher.match(name)) > 0:
                yield Hit(score, _display(matcher, name), callback, text=name,
                          help=escape(help_text))
