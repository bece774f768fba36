"""uvicorn server that turns readiness off the moment SIGTERM arrives.

uvicorn 0.54 installs ``Server.handle_exit`` as the SIGTERM/SIGINT handler (plain
``signal.signal``); it sets ``should_exit`` and the main loop then closes the listeners, waits
for in-flight requests (``timeout_graceful_shutdown``) and runs the lifespan shutdown.
We override it to flip ``Lifecycle.shutting_down`` first, so /health/ready answers 503 at once,
and keep accepting for ``drain_delay`` seconds so load balancers that poll readiness stop
routing here before connections are refused. A second signal skips the remaining delay.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from deploy.api.app import Lifecycle

log = logging.getLogger("sfapi")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_delay: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_delay = drain_delay
        self._pending_signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.lifecycle.shutting_down
        self.lifecycle.begin_shutdown()
        if first and self.drain_delay > 0:
            self._pending_signal = sig  # uvicorn's own shutdown starts in on_tick
            return
        self._pending_signal = None
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        requested = self.lifecycle.shutdown_requested_at
        if self._pending_signal is not None and requested is not None:
            if time.monotonic() - requested >= self.drain_delay:
                sig, self._pending_signal = self._pending_signal, None
                log.info("drain delay over (%.1fs): closing listeners", self.drain_delay)
                super().handle_exit(sig, None)
        return await super().on_tick(counter)
