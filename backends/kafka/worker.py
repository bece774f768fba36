"""The Kafka admin worker: librdkafka runs in a child process, so its crashes never kill sfops.

Why: confluent-kafka 2.16.1 (librdkafka) crashed the whole Python process twice when one
long-lived AdminClient served many polls — a segfault after an undrain, and an abort
(``rd_kafka_enq_once_del_source_return: Assertion eonce->refcnt > 0``) when a broker was killed
while polls ran. A crash in a C library cannot be caught, only contained: every AdminClient
sfops uses lives in a worker process (``python -c …child_main()``) that the sfops process talks
to with pickled requests over a socket pair.

* Every request carries a time budget. The child bounds its work by it; the parent kills a child
  that has not answered within the budget plus :data:`KILL_MARGIN` (a hung librdkafka call) and
  starts a fresh one (:class:`AdminWorkerHung`).
* A child that dies fails the request in flight with :class:`AdminWorkerCrashed` ("Kafka admin
  worker crashed (librdkafka; killed by SIGABRT: …); restarted") and a fresh child is started
  at once, so the next request gets a new AdminClient. One found dead between requests is
  replaced silently and reported once through :attr:`AdminWorker.crashed_while_idle`.
* The parent waits in an executor thread, never on the event loop.
* Only plain values cross the pipe (:mod:`backends.kafka.model`'s dataclasses, builtin and
  sfops exceptions): the sfops process never imports confluent_kafka. The metadata, thousands
  of partitions, travels in :mod:`backends.kafka.wire`'s compact form (tuples, shared replica
  lists), decoded in the parent's executor thread.

Inside the child one AdminClient is reused while its calls succeed (a fresh client per poll
costs about 75 ms on the lab) and replaced after any failure or timeout, and at the latest
every :data:`CLIENT_MAX_AGE` seconds: a long-lived client was seen to keep asking a killed
"controller" broker until each call timed out.

The child runs in its own session (a terminal hang-up or Ctrl-C reaches sfops, not it), writes
stderr to an anonymous file the parent reads when it dies (the assertion text goes into the
error; the TUI's terminal stays clean) and exits when its socket closes.

Partition reassignment (KIP-455: AlterPartitionReassignments, ListPartitionReassignments),
which librdkafka — so confluent-kafka, up to 2.16.1 at least — does not offer, runs here too,
through kafka-python's ``KafkaAdminClient`` (3.x). Why a second client library rather than
the hand-written protocol client sfops had before: a secured cluster needs TLS and SASL
(SCRAM-SHA-256/512, PLAIN) on those requests as on every other, and kafka-python is a
maintained implementation of exactly that; in the worker process its blocking calls and its
start-up (a metadata bootstrap) are bounded by the request's budget like any librdkafka call,
and never touch the sfops process. It retries a request only on NOT_CONTROLLER (refused, so
nothing happened); sfops never retries a reassignment itself.
"""


from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from backends.kafka.model import (
    ClusterInfo,
    ClusterRead,
    ClusterView,
    ElectionOutcome,
    GroupState,
    KafkaSecurityError,
    OngoingReassignment,
    PartitionLag,
    PartitionResult,
)
from backends.kafka.security import PLAINTEXT, KafkaSecurity, explain
from backends.kafka.wire import WireRead, WireView, decode_read, decode_view, encode_view
from backends.resilience import BackendTimeout, RetryPolicy, describe_error
from backends.secrets import child_environment

if TYPE_CHECKING:
    from backends.kafka.admin import KafkaAdmin

log = logging.getLogger(__name__)

GRACE = 1.0  # as backends.kafka.admin.GRACE: each client call's bound beyond its own timeout
KILL_MARGIN = 3.0  # beyond a request's budget before a silent child is killed
STARTUP_ALLOWANCE = 20.0  # spawn + import confluent_kafka: ~1 s, several on a loaded host
EXIT_GRACE = 0.5  # for a child to exit on its own when closed
CLIENT_MAX_AGE = 600.0
STDERR_TAIL = 4096
# One retry: a metadata request that lands on a broker that just died is answered by another.
SECONDARY_BUDGET = 1.5  # seconds a poll waits, after the metadata, for everything else
METADATA_POLICY = RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.3, deadline=6.0)
REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_CODE = "from backends.kafka.worker import child_main; child_main()"


class AdminWorkerCrashed(Exception):
    """The worker process died while serving a request (librdkafka segfault or abort, or
    killed); a fresh worker has been started."""


class AdminWorkerHung(TimeoutError):
    """The worker did not answer within the request's budget; it was killed and replaced."""


class AdminWorkerClosed(Exception):
    """The worker was closed (sfops is shutting down)."""


class KafkaAdminError(Exception):
    """An error raised in the worker whose type does not cross the pipe (e.g. a
    confluent_kafka exception): its type name and text."""


# --------------------------------------------------------------------------- parent side


class _Child:
    """The current child process, if any: all the finalizer needs (no reference to the
    worker, so dropping the worker kills its child)."""

    def __init__(self) -> None:
        self.popen: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.stderr: IO[bytes] | None = None
        self.answered = False  # it has answered at least once (its imports are done)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.popen is not None
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass

    def stderr_tail(self) -> str:
        """The most telling line the child wrote to stderr (an assertion, a fatal error)."""
        if self.stderr is None:
            return ""
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - STDERR_TAIL))
            text = self.stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if text.strip():
            log.info("Kafka admin worker stderr:\n%s", text.strip())
        for marker in ("Assertion", "Fatal Python error", "Error"):
            found = [line for line in lines if marker in line]
            if found:
                return found[-1][:200]
        return lines[-1][:200] if lines else ""

    def discard(self) -> None:
        """Close the socket, kill the process if it still runs, forget it."""
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.kill()
        if self.popen is not None:
            self.popen.poll()  # reap if it already exited; subprocess reaps the rest later
        if self.stderr is not None:
            self.stderr.close()
        self.popen, self.conn, self.stderr, self.answered = None, None, None, False


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class AdminWorker:
    """One child process serving AdminClient requests, one at a time; restarted when it dies
    or hangs. :meth:`call` is a coroutine that never blocks the event loop."""

    def __init__(self, bootstrap: str, request_timeout: float = 5.0, *,
                 label: str = "Kafka admin worker",
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.request_timeout = request_timeout
        self.label = label
        self.security = security
        self.starts = 0  # processes started (the first one included)
        self.crashes = 0  # processes found dead (in a request or between requests)
        self.crashed_while_idle: str | None = None  # set when one died between requests
        self._child = _Child()
        self._lock = threading.Lock()  # held by the executor thread serving a request
        self._closed = False
        self._finalizer = weakref.finalize(self, self._child.discard)

    @property
    def pid(self) -> int | None:
        popen = self._child.popen
        return popen.pid if popen is not None and popen.poll() is None else None

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(self, op: str, *args: Any, budget: float,
                   convert: Callable[[Any], Any] | None = None) -> Any:
        """Run ``op(*args)`` in the worker, within ``budget`` seconds of the child's time;
        ``convert`` turns the answer into what the caller wants, in the executor thread (a
        large answer is decoded off the event loop)."""
        abandoned = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._call, op, args, budget, abandoned,
                                              convert)
        except asyncio.CancelledError:
            # Not yet sent: it never will be. In flight: the thread collects the answer (or
            # kills a child that does not give one in time), so the next request starts clean.
            abandoned.set()
            raise

    def take_idle_crash(self) -> str | None:
        note, self.crashed_while_idle = self.crashed_while_idle, None
        return note

    async def aclose(self) -> None:
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                child = self._child
                if child.conn is not None:
                    child.conn.close()  # the child sees EOF and exits
                    child.conn = None
                deadline = time.monotonic() + EXIT_GRACE
                while child.alive() and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)  # a process exit has no awaitable here
                child.discard()
            finally:
                self._lock.release()
        else:
            # A request is in flight: its thread sees EOF, finds the worker closed, cleans up.
            self._child.kill()

    # -- in an executor thread ----------------------------------------------------------
    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        stderr = tempfile.TemporaryFile()
        env = child_environment()  # no secret in a child's environment
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            popen = subprocess.Popen(
                [sys.executable, "-c", CHILD_CODE, str(child_sock.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                pass_fds=(child_sock.fileno(),), start_new_session=True, env=env,
                cwd=str(REPO_ROOT),
            )
        except BaseException:
            parent_sock.close()
            stderr.close()
            raise
        finally:
            child_sock.close()
        child = self._child
        child.popen, child.conn, child.stderr = popen, Connection(parent_sock.detach()), stderr
        child.answered = False
        self.starts += 1
        # Settings as a dict of plain values and KafkaSecurity (its Secrets pickle as
        # themselves): over the socket pair, never in the child's environment or argv.
        child.conn.send({"bootstrap": self.bootstrap, "request_timeout": self.request_timeout,
                         "security": self.security})

    def _death(self, wait: float) -> str:
        """Why the current child died (waits up to ``wait`` s for it to finish dying)."""
        child = self._child
        assert child.popen is not None
        try:
            returncode = child.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:  # EOF but still running: it is of no use anyway
            child.kill()
            returncode = child.popen.wait()
        tail = child.stderr_tail()
        return _describe_exit(returncode) + (f": {tail}" if tail else "")

    def _restart(self) -> None:
        self._child.discard()
        if not self._closed:
            self._start()

    def _call(self, op: str, args: tuple[Any, ...], budget: float,
              abandoned: threading.Event, convert: Callable[[Any], Any] | None = None) -> Any:
        if not self._lock.acquire(timeout=budget + KILL_MARGIN):
            raise AdminWorkerHung(f"{self.label}: still busy with an earlier request after "
                                  f"{budget + KILL_MARGIN:g} s")
        try:
            if abandoned.is_set():
                raise AdminWorkerClosed(f"{op}: abandoned before it was sent")
            if self._closed:
                raise AdminWorkerClosed(f"{self.label} is closed")
            child = self._child
            if child.popen is not None and not child.alive():
                # Died between requests (a librdkafka background thread): report it once.
                self.crashes += 1
                self.crashed_while_idle = (f"{self.label} crashed between polls (librdkafka; "
                                           f"{self._death(0.0)}); restarted")
                log.info("%s", self.crashed_while_idle)
                child.discard()
            if child.popen is None:
                self._start()
            allowance = 0.0 if child.answered else STARTUP_ALLOWANCE
            answer = self._exchange(op, args, budget, budget + KILL_MARGIN + allowance)
        finally:
            self._lock.release()
        return answer if convert is None else convert(answer)

    def _exchange(self, op: str, args: tuple[Any, ...], budget: float, limit: float) -> Any:
        child = self._child
        assert child.conn is not None and child.popen is not None
        conn, popen = child.conn, child.popen
        hung = threading.Event()

        def watchdog() -> None:
            hung.set()
            try:
                popen.kill()  # unblocks recv() below with EOF
            except ProcessLookupError:
                pass

        timer = threading.Timer(limit, watchdog)
        timer.daemon = True
        timer.start()
        try:
            conn.send((op, args, budget))
            reply = conn.recv()
        except (EOFError, OSError):
            timer.cancel()
            if self._closed:
                child.discard()
                raise AdminWorkerClosed(f"{self.label} is closed") from None
            if hung.is_set():
                self._restart()
                raise AdminWorkerHung(
                    f"{self.label}: no answer to {op} within {limit:g} s; killed it and "
                    "started a fresh one") from None
            self.crashes += 1
            reason = self._death(2.0)
            log.info("%s crashed during %s: %s", self.label, op, reason)
            self._restart()
            raise AdminWorkerCrashed(
                f"{self.label} crashed (librdkafka; {reason}) during {op}; restarted"
            ) from None
        finally:
            timer.cancel()
        if hung.is_set():  # the answer and the watchdog crossed: keep the answer, replace it
            self._restart()
        else:
            child.answered = True
        return _unwrap(reply)


def _unwrap(reply: tuple[Any, ...]) -> Any:
    if reply[0] == "ok":
        return reply[1]
    kind = reply[1]
    if kind == "timeout":
        raise BackendTimeout(reply[2], reply[3])
    if kind == "exception" and isinstance(reply[2], BaseException):
        raise reply[2]
    raise KafkaAdminError(reply[2])


# --------------------------------------------------------------------------- the typed API


class IsolatedAdmin:
    """The Kafka admin calls sfops makes, each run in an :class:`AdminWorker`: the
    AdminClient's, and the two reassignment requests confluent-kafka lacks (kafka-python)."""

    def __init__(self, bootstrap: str, request_timeout: float = 5.0, *,
                 label: str = "Kafka admin worker",
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.timeout = request_timeout
        self.worker = AdminWorker(bootstrap, request_timeout, label=label, security=security)

    @property
    def read_budget(self) -> float:
        # metadata (two attempts at most) with describe_cluster, configs and groups alongside
        return 2 * (self.timeout + GRACE)

    async def read(self, group_ids: Sequence[str]) -> ClusterRead:
        """One poll's AdminClient reads (``group_ids`` empty: every group)."""
        result: ClusterRead = await self.worker.call("read", tuple(group_ids),
                                                     budget=self.read_budget,
                                                     convert=decode_read)
        return result

    async def view(self) -> ClusterView:
        """Metadata with every topic's ``min.insync.replicas``."""
        result: ClusterView = await self.worker.call("view", budget=3 * (self.timeout + GRACE),
                                                     convert=decode_view)
        return result

    async def elect_preferred(
        self, partitions: Sequence[tuple[str, int]] | None
    ) -> list[ElectionOutcome]:
        """A preferred-leader election for ``partitions`` (None: every partition). A write:
        never retried here."""
        keys = None if partitions is None else [tuple(k) for k in partitions]
        result: list[ElectionOutcome] = await self.worker.call(
            "elect", keys, budget=2 * self.timeout + 2 * GRACE)
        return result

    @property
    def reassign_setup(self) -> float:
        """A fresh kafka-python client's start-up: its bootstrap, then finding the
        controller (each bounded by the request timeout)."""
        return 2 * self.timeout + GRACE

    async def reassign(self, assignments: dict[tuple[str, int], list[int]],
                       *, timeout: float = 30.0  # noqa: ASYNC109
                       ) -> list[PartitionResult]:
        """Ask the controller to set each partition's replica list (in order). A write:
        never retried here."""
        plan = {(t, p): list(replicas) for (t, p), replicas in assignments.items()}
        result: list[PartitionResult] = await self.worker.call(
            "reassign", plan, timeout, budget=self.reassign_setup + timeout + GRACE)
        return result

    async def ongoing_reassignments(
        self, partitions: Sequence[tuple[str, int]] | None = None
    ) -> list[OngoingReassignment]:
        """Reassignments still in progress (all of them when ``partitions`` is None)."""
        keys = None if partitions is None else [tuple(k) for k in partitions]
        result: list[OngoingReassignment] = await self.worker.call(
            "ongoing", keys, budget=self.reassign_setup + self.timeout + GRACE)
        return result

    async def close(self) -> None:
        await self.worker.aclose()


# --------------------------------------------------------------------------- child side


def _portable(exc: BaseException) -> tuple[Any, ...]:
    """An error as it can cross the pipe: sfops' and builtin exceptions as themselves (if they
    survive a pickle round trip), the rest (confluent_kafka's) as text."""
    if isinstance(exc, BackendTimeout):
        return ("error", "timeout", exc.what, exc.seconds)
    module = type(exc).__module__
    if module == "builtins" or module.startswith("backends."):
        try:
            pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
        except Exception:  # noqa: S110 - falls through to text
            pass
        else:
            return ("error", "exception", exc)
    return ("error", "text", describe_error(exc))


def _fault(how: str) -> None:
    """Test hook: fail the way librdkafka does."""
    if how == "abort":
        os.abort()
    elif how == "segv":
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    elif how == "hang":
        time.sleep(3600)  # blocks the child's only thread, like a stuck C call
    elif how == "exit":
        os._exit(3)


class _Session:
    """The child's state: one AdminClient (replaced after trouble), the configs cache."""

    def __init__(self, bootstrap: str, request_timeout: float,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.timeout = request_timeout
        self.security = security
        self._admin: KafkaAdmin | None = None
        self._reassigner: Any = None  # kafka-python's KafkaAdminClient, made on first use
        self._created = 0.0
        self._min_isr_cache: dict[str, tuple[int | None, float]] = {}
        self._faults: dict[str, str] = {}  # test hooks: op -> how to fail during it
        self._last_groups: list[GroupState] = []
        self.ops: dict[str, Callable[..., Awaitable[Any]]] = {
            "ping": self.ping, "read": self.read, "view": self.view, "elect": self.elect,
            "reassign": self.reassign, "ongoing": self.ongoing, "test_fault": self.test_fault,
        }

    def admin(self) -> KafkaAdmin:
        from backends.kafka.admin import KafkaAdmin

        now = time.monotonic()
        if self._admin is not None and now - self._created > CLIENT_MAX_AGE:
            self.recycle()
        if self._admin is None:
            self._admin = KafkaAdmin(self.bootstrap, self.timeout, self.security)
            self._created = now
            self._admin._min_isr = self._min_isr_cache
        return self._admin

    def recycle(self) -> None:
        """Drop the client (the next call builds a fresh one); keep the configs cache."""
        if self._admin is not None:
            self._min_isr_cache = self._admin._min_isr
        self._admin = None
        reassigner, self._reassigner = self._reassigner, None
        if reassigner is not None:
            try:
                reassigner.close()
            except Exception as exc:  # closing a broken client must not hide the real error
                log.debug("closing kafka-python's admin client: %s", exc)

    def fault(self, op: str) -> None:
        how = self._faults.pop(op, None)
        if how is not None:
            _fault(how)

    async def handle(self, op: str, args: tuple[Any, ...], budget: float) -> tuple[Any, ...]:
        handler = self.ops.get(op)
        if handler is None:
            return ("error", "text", f"unknown request {op!r}")
        scope = asyncio.timeout(budget)
        try:
            async with scope:
                value = await handler(*args)
        except TimeoutError as exc:
            self.recycle()
            if scope.expired():
                return ("error", "timeout", f"kafka {op}", budget)
            return _portable(exc)
        except Exception as exc:
            self.recycle()
            return _portable(exc)
        return ("ok", value)

    async def ping(self) -> int:
        self.fault("ping")
        return os.getpid()

    async def test_fault(self, op: str, how: str) -> None:
        self._faults[op] = how

    async def _metadata(self, admin: KafkaAdmin) -> Any:
        from backends.resilience import call_read

        return await call_read(admin.metadata, METADATA_POLICY, what="kafka metadata")

    async def view(self) -> WireView:
        admin = self.admin()
        metadata = await self._metadata(admin)
        self.fault("view")
        min_isr = await admin.min_insync_replicas(sorted(metadata.topics))
        return encode_view(metadata, min_isr)

    async def read(self, group_ids: tuple[str, ...]) -> WireRead:
        admin = self.admin()
        cluster_task = asyncio.ensure_future(admin.describe_cluster())
        groups_task = asyncio.ensure_future(self._groups(admin, list(group_ids)))
        try:
            metadata = await self._metadata(admin)  # without it we know nothing: fail
        except BaseException:
            cluster_task.cancel()
            groups_task.cancel()
            await asyncio.gather(cluster_task, groups_task, return_exceptions=True)
            raise
        self.fault("read")  # mid-poll: metadata read, other calls in flight
        problems: list[str] = []
        topics = sorted(metadata.topics)
        isr_task = asyncio.ensure_future(admin.min_insync_replicas(topics))
        # The rest is secondary and may be sent to any broker — a hung one answers after the
        # whole request timeout. Waiting for it would stretch every poll past the liveness
        # bound, so it gets a short budget and the previous answer is shown, said so.
        secondary = (cluster_task, groups_task, isr_task)
        _, late = await asyncio.wait(secondary, timeout=SECONDARY_BUDGET)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        slow = f"no answer within {SECONDARY_BUDGET:g} s (a broker hung?)"
        cluster: ClusterInfo | None = None
        if cluster_task in late:
            problems.append(f"describe_cluster: {slow}")
        else:
            try:
                cluster = cluster_task.result()
            except Exception as exc:
                problems.append(f"describe_cluster: {describe_error(exc)}")
        if isr_task in late:
            cached = admin._min_isr
            min_isr = {t: cached[t][0] if t in cached else None for t in topics}
            problems.append(f"topic configs: {slow}; cached values shown")
        else:
            min_isr = isr_task.result()
        unknown = sum(v is None for v in min_isr.values())
        if unknown:
            problems.append(f"topic configs: min.insync.replicas unknown for {unknown} topic(s)")
        if groups_task in late:
            groups = self._last_groups
            problems.append(f"consumer groups: {slow}; the previous read is shown")
        else:
            groups, group_problems = groups_task.result()
            problems += group_problems
            self._last_groups = groups
        if problems:
            self.recycle()  # start the next poll with a client that has no stale view
        return WireRead(encode_view(metadata, min_isr), cluster, tuple(groups),
                        tuple(problems))

    async def _groups(self, admin: KafkaAdmin,
                      group_ids: list[str]) -> tuple[list[GroupState], list[str]]:
        if not group_ids:
            try:
                group_ids = await admin.list_group_ids()
            except Exception as exc:
                return [], [f"consumer groups: {describe_error(exc)}"]
        results = await asyncio.gather(*(self._group(admin, g) for g in group_ids))
        return list(results), []

    async def _group(self, admin: KafkaAdmin, group_id: str) -> GroupState:
        try:
            (state, members, assigned), committed = await asyncio.gather(
                admin.describe_group(group_id), admin.committed_offsets(group_id))
            # Assigned but never committed partitions count too (their lag is unknown).
            keys = sorted(set(committed) | assigned)
            latest = await admin.latest_offsets(keys)
        except Exception as exc:
            return GroupState(group_id, "UNKNOWN", 0, (), describe_error(exc))
        lags = tuple(PartitionLag(t, p, committed.get((t, p)), latest.get((t, p)))
                     for t, p in keys)
        return GroupState(group_id, state, members, lags)

    async def elect(self, keys: list[tuple[str, int]] | None) -> list[ElectionOutcome]:
        admin = self.admin()
        self.fault("elect")
        return await admin.elect_preferred(keys)

    # -- reassignment (kafka-python; see the module's docstring for why) ------------------

    def _kafka_python(self, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` with the (lazily made) KafkaAdminClient; blocking, so run in a
        thread. A TLS/SASL refusal becomes a KafkaSecurityError naming its key, any other
        kafka-python or socket error a KafkaAdminError (what :meth:`_via_kafka_python` may
        explain)."""
        from kafka import errors as kafka_errors

        refusals: list[str] = []
        try:
            if self._reassigner is None:
                from kafka.admin import KafkaAdminClient

                timeout_ms = int(self.timeout * 1000)
                with _KafkaLogTap(refusals):
                    self._reassigner = KafkaAdminClient(
                        bootstrap_servers=[s.strip() for s in self.bootstrap.split(",")],
                        client_id="sfops", request_timeout_ms=timeout_ms,
                        bootstrap_timeout_ms=timeout_ms, reconnect_backoff_max_ms=1000,
                        **self.security.kafka_python())
            with _KafkaLogTap(refusals):
                return call(self._reassigner)
        except (kafka_errors.KafkaError, OSError) as exc:
            for text in (str(exc), *reversed(refusals)):
                keyed = explain(text, self.security)
                if keyed is not None:
                    raise KafkaSecurityError(keyed) from None
            # "Unable to bootstrap from [...]" alone does not say why: add the last distinct
            # reasons kafka-python gave for dropping a connection.
            said = list(dict.fromkeys(
                text for text in reversed(refusals)
                if " failed: " in text and not text.startswith("Bootstrap failed")))[:2]
            raise KafkaAdminError(describe_error(exc) + (
                "; kafka-python: " + "; ".join(said) if said else "")) from None

    async def _via_kafka_python(self, call: Callable[[Any], Any]) -> Any:
        """``_kafka_python(call)`` in a thread; a failure it cannot explain, on a secured
        cluster, is explained by librdkafka if that names a key.

        Why a second opinion: a broker that refuses a SASL login answers, then closes the
        connection (after ``connection.failed.authentication.delay.ms``); kafka-python 3.0.12
        sometimes reads only the close ("socket disconnected" on every attempt, until its
        bootstrap times out: CI's run of the wrong-password test, and locally about one run in
        five beside a CPU hog), librdkafka reads the answer. The second opinion is a read;
        a write is never sent again."""
        try:
            return await asyncio.to_thread(self._kafka_python, call)
        except KafkaAdminError:
            if self.security.uses_sasl or self.security.uses_tls:
                try:
                    await self.admin().describe_cluster()
                except KafkaSecurityError:
                    raise
                except Exception as second:  # the first error is the answer
                    log.debug("librdkafka's second opinion: %s", second)
            raise

    async def reassign(self, plan: dict[tuple[str, int], list[int]],
                       timeout: float) -> list[PartitionResult]:  # noqa: ASYNC109
        from kafka import TopicPartition

        for (topic, partition), replicas in plan.items():
            if not replicas:  # kafka-python reads None as "cancel": never send one
                raise ValueError(f"{topic}-{partition}: an empty replica list, refused")
        request = {TopicPartition(t, p): list(r) for (t, p), r in sorted(plan.items())}
        self.fault("reassign")
        answers = await self._via_kafka_python(lambda client: (
            client.alter_partition_reassignments(request, timeout_ms=int(timeout * 1000))))
        results: list[PartitionResult] = []
        for topic, partition in sorted(plan):
            key = TopicPartition(topic, partition)
            if key not in answers:
                results.append(PartitionResult(topic, partition, -1, "NOT_REPORTED",
                                               "the controller did not answer for it"))
                continue
            error = answers[key]
            if error is None:
                results.append(PartitionResult(topic, partition, 0))
            else:
                results.append(PartitionResult(
                    topic, partition, int(getattr(error, "errno", -1)),
                    str(getattr(error, "message", error.__name__)),
                    getattr(error, "description", None) or None))
        return results

    async def ongoing(self, keys: list[tuple[str, int]] | None) -> list[OngoingReassignment]:
        from kafka import TopicPartition

        request = None if keys is None else [TopicPartition(t, p) for t, p in keys]
        found = await self._via_kafka_python(lambda client: (
            client.list_partition_reassignments(request,
                                                timeout_ms=int(self.timeout * 1000))))
        return sorted(
            (OngoingReassignment(tp.topic, tp.partition, tuple(state["replicas"]),
                                 tuple(state["adding_replicas"]),
                                 tuple(state["removing_replicas"]))
             for tp, state in found.items()),
            key=lambda o: (o.topic, o.partition))


class _KafkaLogTap(logging.Handler):
    """Collects what kafka-python logs at WARNING and above while a call runs: a failed TLS
    handshake or SASL login is logged there, and the exception raised afterwards (no broker
    available, a timeout) no longer says why."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(record.getMessage())
        except Exception:  # noqa: S110 - a message that cannot be formatted is just lost
            pass

    def __enter__(self) -> _KafkaLogTap:
        logging.getLogger("kafka").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("kafka").removeHandler(self)


def child_main() -> None:
    """The worker process: ``python -c CHILD_CODE FD``; serves until its socket closes."""
    faulthandler.enable()  # a segfault prints the Python stack to stderr (the parent's file)
    conn = Connection(int(sys.argv[1]))
    try:
        settings = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    # kafka-python logs its configuration, the SASL password included, at DEBUG: nothing of
    # it below WARNING is ever wanted here (and the stderr file must not hold a secret).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").propagate = False
    session = _Session(settings["bootstrap"], float(settings["request_timeout"]),
                       settings.get("security", PLAINTEXT))
    loop = asyncio.new_event_loop()
    while True:
        try:
            op, args, budget = conn.recv()
        except (EOFError, OSError):
            break
        reply = loop.run_until_complete(session.handle(op, args, budget))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            break
        except Exception as exc:  # the value did not pickle (nothing was written yet)
            conn.send(("error", "text", f"{op}: answer not transferable: {describe_error(exc)}"))
    # No orderly librdkafka shutdown: its destroy can block, and nothing here needs saving.
    os._exit(0)
