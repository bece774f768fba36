"""librdkafka is isolated from the sfops process (backends/kafka/worker.py), against the lab's
three brokers: a worker that crashes mid-poll (abort like librdkafka's failed assertion, a
segfault, SIGKILL from outside) fails that one poll with a clear error while sfops lives on,
the snapshot keeps the last good value, and the next poll succeeds on a fresh worker. Actions
run in their own worker: a crash there is retried for reads and never touches the polls."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from backends.actions import ActionRunner, Outcome
from backends.audit import AuditLog
from backends.kafka.actions import ElectLeaders
from backends.kafka.model import KafkaStatus
from backends.kafka.service import KafkaService
from backends.resilience import PollJob
from backends.snapshot import Snapshot

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


@pytest.fixture(scope="module")
def kafka_lab(lab):
    return lab.ensure("kafka")


@pytest.fixture
async def service(kafka_lab):
    config = kafka_lab.config()
    service = KafkaService(config.kafka, config.sfops.state_dir)
    yield service
    await service.close()


def job_for(service: KafkaService) -> PollJob[KafkaStatus]:
    # as the TUI polls: a PollJob turns a failed poll into a failed Snapshot
    return PollJob("kafka", service.poll, interval=2.0, timeout=30.0)


async def healthy(job: PollJob[KafkaStatus]) -> Snapshot[KafkaStatus]:
    deadline = time.monotonic() + 60
    while True:
        snapshot = await job.poll_once()
        if snapshot.ok and snapshot.value.brokers_up == 3:
            return snapshot
        assert time.monotonic() < deadline, f"no healthy poll: {snapshot.error}"
        await asyncio.sleep(1)


def assert_crash_then_recovery(failed, good, again, reason: str) -> None:
    assert not failed.ok
    assert failed.error.startswith(
        "AdminWorkerCrashed: Kafka admin worker crashed (librdkafka; "), failed.error
    assert reason in failed.error and failed.error.endswith("during read; restarted")
    assert failed.best == good.value  # the UI keeps showing the last good value, stale
    assert failed.stale_for() is not None and failed.stale_for() > 0
    assert again.ok, again.error
    assert again.value.brokers_up == 3
    assert again.value.counts.total == good.value.counts.total
    assert again.value.counts.offline == 0


@pytest.mark.parametrize(("how", "reason"), [("abort", "killed by SIGABRT"),
                                             ("segv", "killed by SIGSEGV")])
async def test_worker_crash_mid_poll_fails_only_that_poll(service, how, reason):
    job = job_for(service)
    worker = service.admin.worker
    good = await healthy(job)
    first = worker.pid
    assert first is not None and first != os.getpid()
    # Crash inside the next poll, after its metadata read, other AdminClient calls in flight.
    await worker.call("test_fault", "read", how, budget=5)
    failed = await job.poll_once()
    assert worker.pid != first  # restarted at once
    again = await job.poll_once()
    assert_crash_then_recovery(failed, good, again, reason)
    assert worker.crashes == 1
    assert again.value.problems == ()  # the crash was reported by the failed poll, once


async def test_sigkill_of_the_worker_mid_poll(service):
    job = job_for(service)
    worker = service.admin.worker
    good = await healthy(job)
    first = worker.pid
    await worker.call("test_fault", "read", "hang", budget=5)  # holds it mid-poll
    poll = asyncio.create_task(job.poll_once())
    await asyncio.sleep(1.0)
    assert not poll.done()
    os.kill(first, signal.SIGKILL)
    started = time.monotonic()
    failed = await poll
    assert time.monotonic() - started < 5
    again = await job.poll_once()
    assert_crash_then_recovery(failed, good, again, "killed by SIGKILL")
    assert worker.pid not in (None, first)


async def test_hung_worker_is_replaced_and_polls_resume(service):
    job = job_for(service)
    worker = service.admin.worker
    await healthy(job)
    first = worker.pid
    await worker.call("test_fault", "read", "hang", budget=5)
    # The TUI's poll timeout (6 s at a 2 s interval) gives up first; the worker's own
    # deadline then kills the hung child; a later poll works on a fresh one.
    tui_job = PollJob("kafka", service.poll, interval=2.0, timeout=6.0)
    timed_out = await tui_job.poll_once()
    assert not timed_out.ok and "no answer within 6 s" in timed_out.error
    snapshot = await healthy(tui_job)
    assert snapshot.ok
    assert worker.pid != first


async def test_action_runs_in_its_own_fresh_worker_and_retries_a_crashed_read(
        service, tmp_path):
    job = job_for(service)
    await healthy(job)
    poll_pid = service.admin.worker.pid
    action = ElectLeaders(service)
    worker = action.admin.worker
    await worker.call("test_fault", "view", "abort", budget=30)  # starts it: a new process
    action_pid = worker.pid
    assert action_pid not in (None, poll_pid)
    result = await ActionRunner(AuditLog(tmp_path / "audit.jsonl")).run(action)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert worker.crashes == 1  # the preflight's first read crashed and was read again
    assert worker.closed and worker.pid is None  # ended with the action
    assert service.admin.worker.pid == poll_pid  # the polls' worker never noticed
    assert (await job.poll_once()).ok
