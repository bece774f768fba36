"""The fault matrix against the real lab: for each component (nginx, each API worker, each
PostgreSQL member, one Kafka broker, all Kafka brokers, kube-apiserver, etcd) and each fault
(clean stop, SIGKILL, SIGSTOP), the overview — the real TUI under Pilot — and
`sfops status --json` show it within two refreshes (the affected panel not OK, the wrong-now
list naming it, UNREACHABLE where the whole backend is gone), and show it back within two
refreshes of its return; then the whole stack reads OK again. Refreshes are counted as polls,
not seconds (see tests/faults.py); the seconds are printed by tests/perf/bench_faults.py.
"""

from __future__ import annotations

import pytest

from tests.faults import (
    FAULTS,
    GROUPS,
    POLLS_ALLOWED,
    TARGETS,
    make_app,
    not_ok,
    run_cell,
    settle,
    target,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.k8s]


@pytest.fixture(scope="module")
def stack(lab):
    lab.ensure(*GROUPS)
    return lab


@pytest.mark.timeout(900)
@pytest.mark.parametrize("label", [t.label for t in TARGETS])
async def test_fault_is_shown_and_recovery_is_shown(stack, label):
    t = target(label)
    stack.ensure(*GROUPS)  # a row whose restore failed must not fail every row after it
    app = make_app(stack.config_path)
    async with app.run_test(size=(80, 24)):
        await settle(app, stack)
        for fault in FAULTS:
            result = await run_cell(app, stack, t, fault)
            cell = f"{label} x {fault}"
            assert result.detected.seen, (
                f"{cell}: the overview did not show {t.alert} within {POLLS_ALLOWED} polls "
                f"({result.detected.polls} polls, {result.detected.seconds:.1f} s); "
                f"it showed: {not_ok(app) or 'everything OK'}")
            assert result.status_detected, (
                f"{cell}: sfops status --json did not show it: {result.status_during}")
            assert result.recovered.seen, (
                f"{cell}: the overview still showed {t.alert} {result.recovered.polls} polls "
                f"({result.recovered.seconds:.1f} s) after it came back: {not_ok(app)}")
            assert result.status_recovered, (
                f"{cell}: sfops status --json not OK after it: {result.status_seen}")
