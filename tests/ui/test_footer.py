"""The footer (tui/footer.py) is rebuilt when the keys it shows change, and only then: a
modal opened and closed over a screen leaves its key widgets as they were."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from tests.ui.helpers import wait_for
from tui.footer import SteadyFooter


class Covering(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        yield Static("on top", markup=False)


class Base(Screen[None]):
    BINDINGS = [Binding("x", "noop", "Ex")]

    def compose(self) -> ComposeResult:
        yield Static("base", markup=False)
        yield SteadyFooter()

    def action_noop(self) -> None:
        pass

    def action_other(self) -> None:
        pass


class FooterApp(App[None]):
    def on_mount(self) -> None:
        self.push_screen(Base())


def key_widgets(app: App[None]) -> list[FooterKey]:
    return list(app.screen.query(FooterKey))


async def test_the_footer_keeps_its_keys_over_a_modal_and_shows_new_ones():
    app = FooterApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, Base) and key_widgets(app),
                       what="the footer's keys")
        base = app.screen
        before = key_widgets(app)
        assert before[0].description == "Ex"

        app.push_screen(Covering())
        await wait_for(pilot, lambda: isinstance(app.screen, Covering), what="the modal")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is base, what="back")
        await pilot.pause()  # no polling here: waits until every message, a rebuild too, ran
        await pilot.pause()
        assert key_widgets(app) == before  # the same widgets: not rebuilt

        base._bindings.bind("y", "other", "Why")
        base.refresh_bindings()
        await wait_for(pilot, lambda: "Why" in [k.description for k in key_widgets(app)],
                       what="the new key shown")
