"""A hung backend (SIGSTOP, the process is there but answers nothing) must not freeze the UI:
keys keep working, other panels keep updating, the event loop stays responsive."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.ui.helpers import wait_for
from tests.ui.test_nginx_screen import make_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx")


async def test_sigstopped_nginx_leaves_the_ui_answering(stack):
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "nginx" in app.snapshots, timeout=30, what="first poll")
        pid = stack.pid("nginx")
        assert pid is not None
        os.killpg(pid, signal.SIGSTOP)
        try:
            app.loop_lag_max = 0.0
            polls_before = {name: job.polls for name, job in app.poller.jobs.items()}
            stopped_at = time.monotonic()
            # A person keeps pressing keys while nginx hangs.
            while time.monotonic() - stopped_at < 8:
                await pilot.press("question_mark")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen",
                               timeout=2, what="help opens while nginx hangs")
                await pilot.press("escape")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "OverviewScreen",
                               timeout=2, what="help closes")
            others = [n for n in app.poller.jobs if n != "nginx"]
            for name in others:  # bulkhead: the other backends kept polling
                assert app.poller.jobs[name].polls > polls_before[name], name
            await wait_for(pilot, lambda: app.snapshots["nginx"].error is not None, timeout=30,
                           what="the nginx panel reports its poll failing")
            assert app.loop_lag_max < 1.0, f"event loop stalled {app.loop_lag_max:.2f}s"
        finally:
            os.killpg(pid, signal.SIGCONT)
        await wait_for(pilot, lambda: app.snapshots["nginx"].error is None, timeout=30,
                       what="nginx recovers after SIGCONT")
