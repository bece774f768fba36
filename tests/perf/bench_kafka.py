"""Kafka benchmark (issue 6): prints numbers, asserts nothing.

    .venv/bin/python -m tests.perf.bench_kafka --lab-dir /tmp/lab-kafka6 [--partitions 3000]

1. metadata snapshot time for ~N partitions: sfops's full poll and its metadata call alone,
   beside ``kcat -L`` in the same run (median of several); the cost of running the AdminClient
   in a worker process (backends/kafka/worker.py): the same reads in-process, the difference
   per poll, a bare round trip, a worker's cold start and a restart after a crash;
2. drain and undrain time for broker 2 (leading about N/3 partitions);
3. detection time from SIGKILL of kafka-2 to the poll showing under-replicated partitions.

The bench topics (``sfops.bench.*``) are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.kafka.actions import DrainBroker, ElectLeaders, UndrainBroker
from backends.kafka.service import KafkaService
from backends.kafka.worker import AdminWorkerCrashed, IsolatedAdmin, _Session
from deploy.lab import kafka as lab_kafka
from deploy.lab import ops
from deploy.lab.core import Lab

PREFIX = "sfops.bench."
PER_TOPIC = 30


def create_topics(client: dict, partitions: int) -> list[str]:
    admin = AdminClient({**client, "log_level": 0})
    count = max(1, partitions // PER_TOPIC)
    names = [f"{PREFIX}{i:03d}" for i in range(count)]
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(n, PER_TOPIC, 3, config={"min.insync.replicas": "2"})
           for n in names if n not in existing]
    for start in range(0, len(new), 20):
        futures = admin.create_topics(new[start:start + 20], request_timeout=60,
                                      operation_timeout=60)
        for future in futures.values():
            future.result(timeout=90)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=30)
        ready = [n for n in names if n in md.topics
                 and all(p.leader >= 0 for p in md.topics[n].partitions.values())]
        if len(ready) == len(names):
            return names
        time.sleep(1)
    raise SystemExit("bench topics did not get leaders in 300 s")


def delete_topics(client: dict, names: list[str]) -> None:
    admin = AdminClient({**client, "log_level": 0})
    for start in range(0, len(names), 50):
        for future in admin.delete_topics(names[start:start + 50],
                                          operation_timeout=60).values():
            try:
                future.result(timeout=90)
            except Exception as exc:
                print(f"  delete: {exc}")


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms / {min(values) * 1000:.0f} ms"


async def isolation_cost(service: KafkaService, runs: int) -> None:
    """What the admin worker process adds to a poll: the same AdminClient reads in a worker
    and in this process, in alternating order so both see the same cluster and load; and the
    parts of the difference: one round trip, moving the answer (pickle and unpickle)."""
    groups = tuple(service.config.consumer_groups)
    local = _Session(service.config.bootstrap_servers, service.config.request_timeout,
                     service.config.security)
    await local.read(groups)  # warm: connections, the min.insync cache
    await service.admin.read(groups)

    async def timed(coro) -> float:
        t = time.perf_counter()
        await coro
        return time.perf_counter() - t

    worker_times, local_times, diffs, pings = [], [], [], []
    for i in range(max(runs, 15)):
        if i % 2:
            w = await timed(service.admin.read(groups))
            loc = await timed(local.read(groups))
        else:
            loc = await timed(local.read(groups))
            w = await timed(service.admin.read(groups))
        worker_times.append(w)
        local_times.append(loc)
        diffs.append(w - loc)
        pings.append(await timed(service.admin.worker.call("ping", budget=5)))
    read = await service.admin.read(groups)
    payload = pickle.dumps(read)
    moves = []
    for _ in range(max(runs, 15)):
        t = time.perf_counter()
        pickle.loads(pickle.dumps(read))
        moves.append(time.perf_counter() - t)
    print(f"  AdminClient reads in the worker process: {ms(worker_times)}")
    print(f"  the same reads in-process (no isolation): {ms(local_times)}")
    print(f"  added per poll by the isolation (median of paired differences): "
          f"{statistics.median(diffs) * 1000:.0f} ms")
    print(f"    of which a bare round trip (ping) {ms(pings)}; pickling + unpickling the "
          f"answer ({len(payload) // 1024} KB, {len(read.view.partitions())} "
          f"partitions) {ms(moves)}")
    fresh = IsolatedAdmin(service.config.bootstrap_servers, service.config.request_timeout,
                          security=service.config.security)
    try:
        t = time.perf_counter()
        await fresh.worker.call("ping", budget=5)
        spawn = time.perf_counter() - t
        t = time.perf_counter()
        await fresh.read(groups)
        first = time.perf_counter() - t
        await fresh.worker.call("test_fault", "read", "abort", budget=5)
        t = time.perf_counter()
        try:
            await fresh.read(groups)
        except AdminWorkerCrashed:
            pass
        crash = time.perf_counter() - t
        t = time.perf_counter()
        await fresh.read(groups)
        restart = time.perf_counter() - t
    finally:
        await fresh.close()
    print(f"  worker cold start (spawn + import) {spawn * 1000:.0f} ms, then its first read "
          f"(new AdminClient) {first * 1000:.0f} ms")
    print(f"  crash mid-poll reported after {crash * 1000:.0f} ms; the next poll (fresh "
          f"worker and client) {restart * 1000:.0f} ms")


def median_time(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def kcat_security(client: dict) -> list[str]:
    """The lab's security settings as kcat ``-X`` options (it speaks librdkafka's)."""
    return [arg for key, value in client.items() if key != "bootstrap.servers"
            for arg in ("-X", f"{key}={value}")]


async def bench(args: argparse.Namespace) -> None:
    lab = Lab.open(Path(args.lab_dir))
    config = load(lab.config_path)
    assert config.kafka is not None
    bootstrap = config.kafka.bootstrap_servers
    client = lab_kafka.client_config(lab)
    print(f"creating ~{args.partitions} partitions in topics {PREFIX}* (RF 3)…", flush=True)
    started = time.perf_counter()
    names = create_topics(client, args.partitions)
    print(f"  {len(names)} topics ready in {time.perf_counter() - started:.1f} s")
    service = KafkaService(config.kafka, config.sfops.state_dir)
    runner = ActionRunner(AuditLog(config.sfops.audit_log))
    try:
        status = await service.poll()  # warm: connections and the min.insync cache
        print(f"cluster: {status.counts.total} partitions, "
              f"broker 2 leads {status.broker(2).leaders}")

        print("\n1. metadata snapshot (median / best of", args.runs, "runs)")
        polls, metas = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            await service.poll()
            polls.append(time.perf_counter() - t)
            t = time.perf_counter()
            await service.admin.view()
            metas.append(time.perf_counter() - t)
        print(f"  sfops full poll (metadata + cluster + configs + lag + probes): "
              f"{statistics.median(polls) * 1000:.0f} ms / {min(polls) * 1000:.0f} ms")
        print(f"  sfops metadata call alone (with cached min.insync.replicas): "
              f"{statistics.median(metas) * 1000:.0f} ms / {min(metas) * 1000:.0f} ms")
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        if kcat:
            med, best = median_time(lambda: subprocess.run(
                [kcat, "-L", "-b", bootstrap, *kcat_security(client)],
                capture_output=True, check=True, timeout=60),
                args.runs)
            print(f"  kcat -L: {med * 1000:.0f} ms / {best * 1000:.0f} ms")
        else:
            print("  kcat not installed")
        await isolation_cost(service, args.runs)

        print("\n2. drain / undrain broker 2")
        actions = () if args.skip_drain else (
            DrainBroker(service, 2, config.sfops.state_dir),
            UndrainBroker(service, 2, config.sfops.state_dir))
        for action in actions:
            t = time.perf_counter()
            result = await runner.run(action, force=False)
            print(f"  {action.name}: {result.outcome.value} in "
                  f"{time.perf_counter() - t:.1f} s"
                  + (f" — {result.error}" if result.error else ""))
        status = await service.poll()
        print(f"  after undrain: broker 2 leads {status.broker(2).leaders}, "
              f"not preferred {status.counts.not_preferred}")

        if not args.skip_kill:
            print("\n3. detection of a killed broker (poll every "
                  f"{config.sfops.refresh_interval:g} s)")
            ops.stop(lab, "kafka-2", kill=True)
            killed = time.monotonic()
            first_down = None
            while True:
                status = await service.poll()
                now = time.monotonic() - killed
                if first_down is None and status.broker(2) and not status.broker(2).up:
                    first_down = now
                if status.counts.under_replicated:
                    print(f"  broker 2 shown down after {first_down:.1f} s; "
                          f"URP ({status.counts.under_replicated}) after {now:.1f} s")
                    break
                if now > 120:
                    print("  no URP within 120 s")
                    break
                await asyncio.sleep(config.sfops.refresh_interval)
            t = time.perf_counter()
            ops.start(lab, "kafka-2")
            while (await service.poll()).counts.under_replicated:
                await asyncio.sleep(1)
            print(f"  restart until no URP: {time.perf_counter() - t:.1f} s")
            result = await runner.run(ElectLeaders(service), force=False)
            print(f"  elect-leaders: {result.outcome.value} in {result.duration_s:.1f} s")
    finally:
        await service.close()
        if not args.keep:
            print("\ndeleting bench topics…")
            delete_topics(client, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab-dir", default=".lab")
    parser.add_argument("--partitions", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench topics")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
