"""The Kafka admin worker process (backends/kafka/worker.py) without a cluster: crashes, hangs,
cancellation, closing, the event loop never blocked, the parent never loading librdkafka, and
values that must cross the pipe."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backends.kafka.model import (
    BrokerState,
    ClusterInfo,
    ClusterRead,
    ClusterView,
    GroupState,
    KafkaStatus,
    KafkaUnreachable,
    PartitionCounts,
    PartitionLag,
    PartitionState,
    TopicState,
)
from backends.kafka.worker import (
    KILL_MARGIN,
    AdminWorker,
    AdminWorkerClosed,
    AdminWorkerCrashed,
    AdminWorkerHung,
    IsolatedAdmin,
    KafkaAdminError,
)

REPO = Path(__file__).resolve().parents[2]
NOBODY = "127.0.0.1:1"  # nothing listens there


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): look at its state
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
async def worker():
    w = AdminWorker(NOBODY, 1.0)
    yield w
    await w.aclose()


async def test_ping_starts_one_child(worker):
    pid = await worker.call("ping", budget=5)
    assert pid == worker.pid != os.getpid()
    assert await worker.call("ping", budget=5) == pid
    assert worker.starts == 1 and worker.crashes == 0


@pytest.mark.parametrize(("how", "reason"), [
    ("abort", "killed by SIGABRT"),  # what librdkafka's failed assertion does
    ("segv", "killed by SIGSEGV"),
    ("exit", "exit status 3"),
])
async def test_crash_fails_the_request_and_the_next_gets_a_fresh_child(worker, how, reason):
    first = await worker.call("ping", budget=5)
    await worker.call("test_fault", "ping", how, budget=5)
    with pytest.raises(AdminWorkerCrashed) as caught:
        await worker.call("ping", budget=5)
    message = str(caught.value)
    assert message.startswith("Kafka admin worker crashed (librdkafka; ")
    assert reason in message and message.endswith("during ping; restarted")
    assert gone(first)
    second = await worker.call("ping", budget=10)
    assert second != first
    assert worker.crashes == 1 and worker.starts == 2


async def test_child_killed_between_requests_is_replaced_and_reported_once(worker):
    first = await worker.call("ping", budget=5)
    os.kill(first, 9)
    assert gone(first)
    second = await worker.call("ping", budget=10)
    assert second != first
    note = worker.take_idle_crash()
    assert note is not None and "crashed between polls" in note and "SIGKILL" in note
    assert worker.take_idle_crash() is None


async def test_hung_child_is_killed_and_replaced_without_blocking_the_loop(worker):
    first = await worker.call("ping", budget=5)
    await worker.call("test_fault", "ping", "hang", budget=5)
    lag = 0.0
    stop = asyncio.Event()

    async def ticker():
        nonlocal lag
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.05)
            lag = max(lag, time.monotonic() - before - 0.05)

    tick = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(AdminWorkerHung, match="no answer to ping within"):
        await worker.call("ping", budget=0.5)
    elapsed = time.monotonic() - started
    stop.set()
    await tick
    # It waited out the budget and the margin before killing (a lower bound: load only
    # makes it later); how much later is a figure, not an assertion.
    assert elapsed > 0.5 + KILL_MARGIN - 0.2
    print(f"hung worker killed {elapsed:.2f} s after the call; event loop lag {lag:.3f} s")
    assert lag < 1.0, f"event loop blocked for {lag:.2f} s"  # blocked, not merely busy
    assert gone(first)
    assert await worker.call("ping", budget=10) != first


async def test_cancelled_call_leaves_the_worker_usable(worker):
    first = await worker.call("ping", budget=5)
    await worker.call("test_fault", "ping", "hang", budget=5)
    task = asyncio.create_task(worker.call("ping", budget=0.5))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The abandoned request's thread kills the hung child at its deadline; then we go on.
    pid = await worker.call("ping", budget=10)
    assert pid != first and gone(first)


async def test_remote_errors_cross_as_errors(worker):
    with pytest.raises(KafkaAdminError, match="unknown request 'nope'"):
        await worker.call("nope", budget=5)
    assert await worker.call("ping", budget=5) == worker.pid  # no crash, same child


async def test_close_ends_the_child_and_refuses_more():
    worker = AdminWorker(NOBODY, 1.0)
    pid = await worker.call("ping", budget=5)
    await worker.aclose()
    assert gone(pid)
    with pytest.raises(AdminWorkerClosed):
        await worker.call("ping", budget=5)


async def test_close_during_a_request_ends_it_promptly():
    worker = AdminWorker(NOBODY, 1.0)
    pid = await worker.call("ping", budget=5)
    await worker.call("test_fault", "ping", "hang", budget=5)
    task = asyncio.create_task(worker.call("ping", budget=30))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await worker.aclose()
    with pytest.raises(AdminWorkerClosed):
        await task
    assert time.monotonic() - started < 3
    assert gone(pid)


async def test_dropping_the_worker_ends_the_child():
    worker = AdminWorker(NOBODY, 1.0)
    pid = await worker.call("ping", budget=5)
    del worker
    gc.collect()
    assert gone(pid)


async def test_all_brokers_down_is_a_bounded_kafka_unreachable():
    admin = IsolatedAdmin(NOBODY, 1.0)
    try:
        started = time.monotonic()
        with pytest.raises(KafkaUnreachable, match=r"no broker of 127\.0\.0\.1:1 answered"):
            await admin.read(())
        assert time.monotonic() - started < admin.read_budget + 20  # first call: start-up
        started = time.monotonic()
        with pytest.raises(KafkaUnreachable):
            await admin.view()
        assert time.monotonic() - started < 5
    finally:
        await admin.close()


def test_the_sfops_process_never_loads_librdkafka():
    code = (
        "import asyncio, sys\n"
        "from backends.kafka.config import KafkaConfig\n"
        "import backends.kafka, backends.kafka.contract, backends.kafka.actions\n"
        "from backends.kafka.service import KafkaService\n"
        "async def main():\n"
        "    s = KafkaService(KafkaConfig('127.0.0.1:1', request_timeout=1.0))\n"
        "    try:\n"
        "        await s.poll()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
        "print('confluent_kafka' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.stdout.split() == ["KafkaUnreachable", "False"], result.stderr


def sample_status() -> KafkaStatus:
    partition = PartitionState("t<b>", 0, 1, (1, 2, 3), (1, 2), 2, None)
    topic = TopicState("t<b>", (partition,), min_isr=2)
    group = GroupState("g", "STABLE", 1, (PartitionLag("t<b>", 0, 5, 9),))
    return KafkaStatus(
        bootstrap="b:9092", cluster_id="c", controller_id=1,
        brokers=(BrokerState(1, "h", 9092, "r1", leaders=1, replicas=1, preferred=1),),
        topics=(topic,), groups=(group,), counts=PartitionCounts(1, 1, 0, 1, 0, 1, 0),
        problems=("describe_cluster: x",), poll_seconds=0.1,
    )


def test_snapshot_values_are_picklable():
    status = sample_status()
    assert pickle.loads(pickle.dumps(status)) == status
    view = ClusterView("c", 1, {1: ("h", 9092)}, status.topics)
    read = ClusterRead(view, ClusterInfo("c", 1, {1: "r1"}, {1: ("h", 9092)}), status.groups,
                       ("p",))
    assert pickle.loads(pickle.dumps(read)) == read


class _SecondOpinion:
    """librdkafka's side of a secured session: ``describe_cluster`` fails with ``error``
    (or answers, when None) and counts its calls."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls = 0

    async def describe_cluster(self) -> ClusterInfo:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return ClusterInfo(cluster_id="c", controller_id=1, racks={}, nodes={})


def _secured_session(monkeypatch: pytest.MonkeyPatch, librdkafka: _SecondOpinion) -> Any:
    from backends.kafka.security import KafkaSecurity
    from backends.kafka.worker import _Session
    from backends.secrets import Secret

    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                             sasl_username="sfops", sasl_password=Secret("x"))
    session = _Session("127.0.0.1:1", 1.0, security)

    def only_disconnects(call: Any) -> Any:  # what kafka-python says when it lost the answer
        raise KafkaAdminError("KafkaTimeoutError: Unable to bootstrap; kafka-python: Bootstrap "
                              "connection to bootstrap-0 failed: socket disconnected")

    monkeypatch.setattr(session, "_kafka_python", only_disconnects)
    monkeypatch.setattr(session, "admin", lambda: librdkafka)
    return session


async def test_kafka_python_failure_on_a_secured_cluster_is_explained_by_librdkafka(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python sometimes reads only the close of a refused SASL login; librdkafka's
    reading of the same credentials names the key instead."""
    from backends.kafka.model import KafkaSecurityError

    refused = KafkaSecurityError("[kafka] sasl_password: authentication failed "
                                 "(SCRAM-SHA-512, user sfops); check ...")
    librdkafka = _SecondOpinion(refused)
    session = _secured_session(monkeypatch, librdkafka)
    with pytest.raises(KafkaSecurityError, match=r"^\[kafka\] sasl_password"):
        await session.ongoing(None)
    with pytest.raises(KafkaSecurityError, match=r"^\[kafka\] sasl_password"):
        await session.reassign({("t", 0): [1, 2]}, 5.0)
    assert librdkafka.calls == 2


async def test_kafka_python_failure_stays_itself_when_librdkafka_gets_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    librdkafka = _SecondOpinion(None)
    session = _secured_session(monkeypatch, librdkafka)
    with pytest.raises(KafkaAdminError, match="socket disconnected"):
        await session.ongoing(None)
    librdkafka.error = KafkaUnreachable("no broker answered")
    with pytest.raises(KafkaAdminError, match="socket disconnected"):
        await session.reassign({("t", 0): [1, 2]}, 5.0)
    assert librdkafka.calls == 2
