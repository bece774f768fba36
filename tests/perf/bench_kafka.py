"""Kafka benchmark (issues 6 and 18): prints numbers, asserts nothing.

    sfops lab --dir .lab-bench --port-base 27400 up --only kafka
    .venv/bin/python -m tests.perf.bench_kafka --lab-dir .lab-bench [--partitions 3000]

1. metadata snapshot time for ~N partitions, once every replica is in sync: sfops's snapshot
   (the metadata call: brokers and every partition's leader, replicas and ISR, with the cached
   ``min.insync.replicas``, delivered to the sfops process as a ClusterView) and its full poll
   (plus the cluster description, consumer groups and lag, and the listener probes), beside
   ``kcat -L`` in the same run — the three interleaved, in rotating order, so a change of load
   hits all of them — with the load average before and after; the cost of running the
   AdminClient in a worker process (backends/kafka/worker.py): the same reads in-process, the
   difference per poll, a bare round trip, a worker's cold start and a restart after a crash;
2. drain and undrain time for broker 2 (leading about N/3 partitions);
3. detection time from SIGKILL of kafka-2 to the poll showing under-replicated partitions.

The bench topics (``sfops.bench.*``) are deleted at the end unless ``--keep``. The last lines
are ``RATIO kafka_full_poll_vs_kcat <x>`` and ``RATIO kafka_snapshot_vs_kcat <x>`` (medians;
targets 3 and 1.5, issue 18).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from backends.actions import ActionRunner
from backends.audit import AuditLog
from backends.config import load
from backends.kafka.actions import DrainBroker, ElectLeaders, UndrainBroker
from backends.kafka.model import ClusterRead, summarize_status
from backends.kafka.service import KafkaService
from backends.kafka.wire import decode_read
from backends.kafka.worker import AdminWorkerCrashed, IsolatedAdmin, _Session
from backends.service import observe
from deploy.lab import kafka as lab_kafka
from deploy.lab import ops
from deploy.lab.core import Lab
from tests.perf.bench_pg_switchover import machine

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


def wait_in_sync(client: dict, names: list[str], timeout: float = 600) -> float:
    """Wait until every bench partition has a leader and its whole replica list in the ISR:
    right after creation the followers are still catching up, and a metadata answer then is
    neither the steady state nor the same from one run to the next. Returns the wait."""
    admin = AdminClient({**client, "log_level": 0})
    wanted = set(names)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        md = admin.list_topics(timeout=30)
        lagging = sum(
            1 for name in wanted & set(md.topics)
            for p in md.topics[name].partitions.values()
            if p.leader < 0 or len(p.isrs) < len(p.replicas))
        if not lagging and wanted <= set(md.topics):
            return time.monotonic() - started
        time.sleep(1)
    raise SystemExit(f"bench partitions not in sync after {timeout:.0f} s")


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
    parts of the difference: one round trip, moving the answer (its compact wire form,
    backends/kafka/wire.py: pickle and unpickle) and decoding it into the snapshot values."""
    groups = tuple(service.config.consumer_groups)
    local = _Session(service.config.bootstrap_servers, service.config.request_timeout,
                     service.config.security)
    async def local_read() -> ClusterRead:  # what sfops would do without the worker
        return decode_read(await local.read(groups))

    await local_read()  # warm: connections, the min.insync cache
    await service.admin.read(groups)

    async def timed(coro) -> float:
        t = time.perf_counter()
        await coro
        return time.perf_counter() - t

    worker_times, local_times, diffs, pings = [], [], [], []
    for i in range(max(runs, 15)):
        if i % 2:
            w = await timed(service.admin.read(groups))
            loc = await timed(local_read())
        else:
            loc = await timed(local_read())
            w = await timed(service.admin.read(groups))
        worker_times.append(w)
        local_times.append(loc)
        diffs.append(w - loc)
        pings.append(await timed(service.admin.worker.call("ping", budget=5)))
    wire = await local.read(groups)
    payload = pickle.dumps(wire)
    moves, decodes = [], []
    for _ in range(max(runs, 15)):
        t = time.perf_counter()
        pickle.loads(pickle.dumps(wire))
        moves.append(time.perf_counter() - t)
        t = time.perf_counter()
        decode_read(wire)
        decodes.append(time.perf_counter() - t)
    print(f"  AdminClient reads in the worker process: {ms(worker_times)}")
    print(f"  the same reads in-process (no isolation): {ms(local_times)}")
    print(f"  added per poll by the isolation (median of paired differences): "
          f"{statistics.median(diffs) * 1000:.0f} ms")
    partitions = sum(len(topic[3]) for topic in wire.view.topics)
    print(f"    of which a bare round trip (ping) {ms(pings)}; pickling + unpickling the "
          f"answer ({len(payload) // 1024} KB, {partitions} partitions) {ms(moves)}; "
          f"decoding it into PartitionState values {ms(decodes)}")
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


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def kcat_setup(client: dict) -> Iterator[tuple[Path, dict[str, str]]]:
    """kcat's ``-F`` config file and environment for the lab.

    The config file holds the lab's client settings (SASL_SSL, SCRAM-SHA-512, the CA), 0600
    in a 0700 directory removed afterwards: the password never goes on a command line, where
    ``ps`` would show it. The environment makes kcat load the librdkafka bundled with
    confluent-kafka (the one sfops's worker uses): Debian's kcat links librdkafka 2.0.2, whose
    SCRAM client-final message Kafka 4.x rejects as invalid credentials (fixed in 2.6.1,
    confluentinc/librdkafka#4895, edenhill/kcat#462) — and the same library on both sides
    makes the comparison about the clients, not the library versions."""
    with tempfile.TemporaryDirectory(prefix="sfops-bench-kcat-") as directory:
        path = Path(directory) / "kcat.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(f"{key}={value}\n" for key, value in client.items())
        env = dict(os.environ)
        bundled = sorted((Path(confluent_kafka.__file__).parent.parent
                          / "confluent_kafka.libs").glob("librdkafka*.so*"))
        if bundled:
            (Path(directory) / "librdkafka.so.1").symlink_to(bundled[0])
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (directory, env.get("LD_LIBRARY_PATH", "")) if p)
        yield path, env


def kcat_version(kcat: str, env: dict[str, str]) -> str:
    done = subprocess.run([kcat, "-V"], capture_output=True, text=True, env=env, timeout=30,
                          check=False)
    found = re.search(r"Version (\S+).*?(librdkafka \S+)", done.stdout + done.stderr)
    return f"kcat {found[1]} with {found[2]}" if found else "kcat (version unknown)"


async def interleaved(contenders: dict[str, Callable[[], Awaitable[object]]],
                      runs: int) -> dict[str, list[float]]:
    """Each contender ``runs`` times, in an order that rotates every round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t = time.perf_counter()
            await contenders[name]()
            times[name].append(time.perf_counter() - t)
    return times


async def bench(args: argparse.Namespace) -> None:
    lab = Lab.open(Path(args.lab_dir))
    config = load(lab.config_path)
    assert config.kafka is not None
    client = lab_kafka.client_config(lab)
    print(f"creating ~{args.partitions} partitions in topics {PREFIX}* (RF 3)…", flush=True)
    started = time.perf_counter()
    names = create_topics(client, args.partitions)
    print(f"  {len(names)} topics ready in {time.perf_counter() - started:.1f} s; every "
          f"replica in sync after {wait_in_sync(client, names):.1f} s more")
    ratios: dict[str, float] = {}
    service = KafkaService(config.kafka, config.sfops.state_dir)
    runner = ActionRunner(AuditLog(config.sfops.audit_log))
    try:
        status = await service.poll()  # warm: connections and the min.insync cache
        print(f"cluster: {status.counts.total} partitions, "
              f"broker 2 leads {status.broker(2).leaders}")

        print(f"\n1. metadata snapshot, interleaved with kcat (median / best of {args.runs} "
              f"runs); machine: {machine()}")
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        with kcat_setup(client) as (kcat_conf, kcat_env):
            async def run_kcat(*only: str) -> None:
                assert kcat is not None
                done = await asyncio.to_thread(
                    subprocess.run, [kcat, "-F", str(kcat_conf), "-L", *only], env=kcat_env,
                    capture_output=True, text=True, check=True, timeout=60)
                if not only:
                    kcat_lines.append(sum(" partition " in line
                                          for line in done.stdout.splitlines()))

            async def refresh() -> None:  # what the TUI does for Kafka every refresh
                summarize_status(await observe(service))

            kcat_lines: list[int] = []
            contenders: dict[str, Callable[[], Awaitable[object]]] = {
                "snapshot": service.admin.view, "poll": service.poll, "refresh": refresh}
            if kcat:
                contenders["kcat"] = run_kcat
                contenders["kcat_one"] = lambda: run_kcat("-t", names[0])
                print(f"  {kcat_version(kcat, kcat_env)}")
            times = await interleaved(contenders, args.runs)
        print(f"  sfops snapshot (metadata call, ClusterView in sfops): {ms(times['snapshot'])}")
        print(f"  sfops poll (metadata + cluster + configs + lag + broker probes): "
              f"{ms(times['poll'])}")
        print(f"  sfops full refresh (the contact probe beside the poll, then the overview "
              f"summary: what the TUI does every refresh): {ms(times['refresh'])}")
        if kcat:
            print(f"  kcat -L ({max(kcat_lines)} partitions listed, a new process with TLS and "
                  f"SCRAM each time): {ms(times['kcat'])}")
            print(f"    of which start-up, TLS and SCRAM login (kcat -L -t {names[0]}, "
                  f"{PER_TOPIC} partitions): {ms(times['kcat_one'])}")
            floor = statistics.median(times["kcat"])
            ratios["kafka_full_poll_vs_kcat"] = statistics.median(times["refresh"]) / floor
            ratios["kafka_snapshot_vs_kcat"] = statistics.median(times["snapshot"]) / floor
            print(f"  ratios (medians): snapshot / kcat "
                  f"{ratios['kafka_snapshot_vs_kcat']:.2f} (target <= 1.5), full refresh / kcat "
                  f"{ratios['kafka_full_poll_vs_kcat']:.2f} (target <= 3)")
        else:
            print("  kcat not installed: no ratio")
        print(f"  load average after: {load_average()}")
        if not args.skip_isolation:
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
    # Last lines, for comparing runs over time (issue 18).
    for name, value in ratios.items():
        print(f"RATIO {name} {value:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lab-dir", default=".lab")
    parser.add_argument("--partitions", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench topics")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-isolation", action="store_true",
                        help="skip the cost-of-the-worker-process measurements")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
