"""Kafka benchmark (issue 6): prints numbers, asserts nothing.

    .venv/bin/python -m tests.perf.bench_kafka --lab-dir /tmp/lab-kafka6 [--partitions 3000]

1. metadata snapshot time for ~N partitions: sfops's full poll and its metadata call alone,
   beside ``kcat -L`` in the same run (median of several);
2. drain and undrain time for broker 2 (leading about N/3 partitions);
3. detection time from SIGKILL of kafka-2 to the poll showing under-replicated partitions.

The bench topics (``sfops.bench.*``) are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from deploy.lab import ops
from deploy.lab.core import Lab

PREFIX = "sfops.bench."
PER_TOPIC = 30


def create_topics(bootstrap: str, partitions: int) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
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


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for start in range(0, len(names), 50):
        for future in admin.delete_topics(names[start:start + 50],
                                          operation_timeout=60).values():
            try:
                future.result(timeout=90)
            except Exception as exc:
                print(f"  delete: {exc}")


def median_time(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


async def bench(args: argparse.Namespace) -> None:
    lab = Lab.open(Path(args.lab_dir))
    config = load(lab.config_path)
    assert config.kafka is not None
    bootstrap = config.kafka.bootstrap_servers
    print(f"creating ~{args.partitions} partitions in topics {PREFIX}* (RF 3)…", flush=True)
    started = time.perf_counter()
    names = create_topics(bootstrap, args.partitions)
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
            await service.admin.metadata()
            metas.append(time.perf_counter() - t)
        print(f"  sfops full poll (metadata + cluster + configs + lag + probes): "
              f"{statistics.median(polls) * 1000:.0f} ms / {min(polls) * 1000:.0f} ms")
        print(f"  sfops metadata call alone: {statistics.median(metas) * 1000:.0f} ms / "
              f"{min(metas) * 1000:.0f} ms")
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        if kcat:
            med, best = median_time(lambda: subprocess.run(
                [kcat, "-L", "-b", bootstrap], capture_output=True, check=True, timeout=60),
                args.runs)
            print(f"  kcat -L: {med * 1000:.0f} ms / {best * 1000:.0f} ms")
        else:
            print("  kcat not installed")

        print("\n2. drain / undrain broker 2")
        for action in (DrainBroker(service, 2, config.sfops.state_dir),
                       UndrainBroker(service, 2, config.sfops.state_dir)):
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
            delete_topics(bootstrap, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab-dir", default=".lab")
    parser.add_argument("--partitions", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench topics")
    parser.add_argument("--skip-kill", action="store_true")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
