"""The lab's application consumer: a member of a consumer group that reads a topic and commits
its offsets, so the group's lag is a real, moving number for sfops to show.

    python -m deploy.lab.kafka_consumer --bootstrap HOST:PORT,... --group G --topic T
        [--max-rate N] [--status-file PATH]
        [--security-protocol SASL_SSL --sasl-mechanism M --sasl-username U
         --sasl-password-file PATH --ssl-ca-location PATH]
        [--database-url CONNINFO --database-password-file PATH]

The lab runs it against its SASL_SSL listener (deploy/lab/kafka.py); the password is read
from a file, never passed in argv.

``--max-rate`` caps records per second (0 = as fast as they come), so a test can make lag
grow on purpose. The status file (JSON: pid, assigned partitions, records consumed, time) is
rewritten on every assignment change and every few seconds; the lab's readiness probe reads
it. SIGTERM/SIGINT leave the group cleanly (final commit, then close).

Write-path canaries (``sfops verify``, deploy/api/canary.py): with ``--database-url``, a
record keyed ``canary:KEY`` is marked as received in the API's ``canary`` table (the row of
that key and token gets ``consumed_at``), which ``GET /canary/KEY`` reads back. A mark that
cannot be written yet (the database is failing over) is kept, at most
:data:`MAX_PENDING_MARKS`, and tried again about every second; one try holds consumption
up for at most one connection attempt (the conninfo's connect_timeout) and 3 s per mark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

STATUS_EVERY_SECONDS = 2.0
CANARY_PREFIX = b"canary:"
MAX_PENDING_MARKS = 100
MARK_RETRY_SECONDS = 1.0


class CanaryMarks:
    """Canary records received, written to PostgreSQL as "consumed" (one short statement
    each, on a connection of its own; libpq's multi-host conninfo with
    target_session_attrs=read-write finds the primary after a failover)."""

    def __init__(self, conninfo: str, password_file: Path | None, consumer: str) -> None:
        self.conninfo = conninfo
        # Read at each connect, not at start: the lab may start PostgreSQL (which writes the
        # file) after this consumer, and a canary must still be marked then.
        self.password_file = password_file
        self.consumer = consumer
        self.pending: deque[tuple[str, str]] = deque(maxlen=MAX_PENDING_MARKS)
        self._conn: Any = None
        self._next_try = 0.0
        self._failing = False

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if not key or not key.startswith(CANARY_PREFIX) or not value:
            return
        try:
            data = json.loads(value)
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("canary"), str) \
                and isinstance(data.get("token"), str):
            self.pending.append((data["canary"], data["token"]))

    def flush(self) -> None:
        if not self.pending or time.monotonic() < self._next_try:
            return
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                password = (self.password_file.read_text().splitlines()[0]
                            if self.password_file is not None else None)
                self._conn = psycopg.connect(
                    self.conninfo, password=password, autocommit=True,
                    application_name="streamforge-consumer",
                    options="-c statement_timeout=3000")
            while self.pending:
                key, token = self.pending[0]
                self._conn.execute(
                    "UPDATE canary SET consumed_at = now(), consumed_by = %s "
                    "WHERE key = %s AND token = %s AND consumed_at IS NULL",
                    (self.consumer, key, token))
                self.pending.popleft()
            if self._failing:
                log("canary marks: written again")
            self._failing = False
        except (psycopg.Error, OSError, IndexError) as exc:  # IndexError: an empty file
            if not self._failing:
                log(f"canary marks: cannot write ({type(exc).__name__}); "
                    f"{len(self.pending)} kept, retrying")
            self._failing = True
            self._next_try = time.monotonic() + MARK_RETRY_SECONDS
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.kafka_consumer")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--max-rate", type=float, default=0.0, help="records/s, 0 = unlimited")
    parser.add_argument("--status-file", type=Path)
    parser.add_argument("--security-protocol", default="PLAINTEXT")
    parser.add_argument("--sasl-mechanism")
    parser.add_argument("--sasl-username")
    parser.add_argument("--sasl-password-file", type=Path)
    parser.add_argument("--ssl-ca-location", type=Path)
    parser.add_argument("--database-url", help="libpq conninfo (no password): mark canaries")
    parser.add_argument("--database-password-file", type=Path)
    args = parser.parse_args(argv)
    marks = None
    if args.database_url:
        marks = CanaryMarks(args.database_url, args.database_password_file,
                            f"{args.group}/{os.getpid()}")

    stopping = False

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    assigned: list[TopicPartition] = []
    consumed = 0

    def write_status() -> None:
        if args.status_file is None:
            return
        status = {
            "pid": os.getpid(),
            "group": args.group,
            "topic": args.topic,
            "assigned": sorted(tp.partition for tp in assigned),
            "consumed": consumed,
            "time": time.time(),
        }
        tmp = args.status_file.with_name(f".{args.status_file.name}.tmp")
        tmp.write_text(json.dumps(status) + "\n")
        os.replace(tmp, args.status_file)

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned[:] = partitions
        log(f"assigned partitions {sorted(tp.partition for tp in partitions)}")
        write_status()

    def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log(f"revoked partitions {sorted(tp.partition for tp in partitions)}")
        assigned.clear()
        write_status()

    consumer = Consumer(
        {
            **security_settings(args),
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": f"{args.group}-{os.getpid()}",
            "auto.offset.reset": "earliest",
            # Offsets are committed in the background every second for records already handed
            # to the application (at-least-once), so the group's lag tracks what was processed.
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 2000,
        }
    )
    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    log(f"consuming {args.topic} as group {args.group} from {args.bootstrap}")
    last_status = 0.0
    try:
        while not stopping:
            message = consumer.poll(0.5)
            if marks is not None:
                marks.flush()
            now = time.monotonic()
            if now - last_status > STATUS_EVERY_SECONDS:
                write_status()
                last_status = now
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log(f"consumer error: {error}")
                continue
            if marks is not None:
                marks.add(message.key(), message.value())
                marks.flush()
            consumer.store_offsets(message)
            consumed += 1
            if args.max_rate > 0:
                time.sleep(1.0 / args.max_rate)
    finally:
        log(f"stopping after {consumed} records; committing and leaving the group")
        try:
            consumer.commit(asynchronous=False)
        except Exception as exc:  # nothing stored yet, or the brokers are gone
            log(f"final commit skipped: {exc}")
        consumer.close()
        if marks is not None:
            marks.close()
    return 0


def security_settings(args: argparse.Namespace) -> dict[str, str]:
    """librdkafka's security properties from the command line."""
    settings = {"security.protocol": args.security_protocol.lower()}
    if args.sasl_mechanism:
        settings["sasl.mechanism"] = args.sasl_mechanism
        settings["sasl.username"] = args.sasl_username or ""
        if args.sasl_password_file is not None:
            settings["sasl.password"] = args.sasl_password_file.read_text().splitlines()[0]
    if args.ssl_ca_location is not None:
        settings["ssl.ca.location"] = str(args.ssl_ca_location)
    return settings


def log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%dT%H:%M:%S')}] kafka-consumer: {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
