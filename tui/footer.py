"""Textual's Footer, rebuilt only when the keys it shows changed.

Why not Footer as it is: it recomposes every key widget whenever its screen *may* have new
bindings — each push or pop of a screen above it (the help, a dialog) and each focus change —
although the keys are then the same. Profiled (py-spy) on the 5,000-pod Kubernetes screen,
that rebuild and the restyling it causes were about a tenth of the event loop's time while
`?` opened the help, and ran between the key and the help's paint.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class SteadyFooter(Footer):
    _shown: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        # Footer.bindings_changed recomposes under exactly these conditions; the keys it
        # would show are remembered only when it does, so a skipped change is never lost.
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = keys_shown(screen)
            if shown == self._shown:
                self._bindings_ready = True
                return
            self._shown = shown
        super().bindings_changed(screen)


def keys_shown(screen: Screen[Any]) -> tuple[object, ...]:
    """What a Footer's compose reads of the screen's bindings."""
    app = screen.app
    return tuple((key, active.binding.action, active.binding.description, active.binding.show,
                  active.binding.key_display, app.get_key_display(active.binding),
                  active.enabled, active.tooltip)
                 for key, active in screen.active_bindings.items())
