"""The write-path canary: one write through nginx → API → PostgreSQL → Kafka → consumer, the
time of each hop, and the first hop that failed with the server's (redacted) reason.

``POST <url>/canary/<key>`` goes through nginx to an API worker, which upserts the key's row in
PostgreSQL, produces a record to Kafka with acks=all and answers with both hops' times
(deploy/api/canary.py). Then ``GET <url>/canary/<key>`` is polled until a consumer has recorded
that record (deploy/lab/kafka_consumer.py). Each hop's time:

============================  ==========================================================
nginx accepted                the POST's round trip as sfops saw it (every hop below in it)
API handled                   the worker's own handling of the canary
PostgreSQL committed          the upsert statement
Kafka acknowledged            produce → delivery report (acks=all: every in-sync replica)
consumer received             the PostgreSQL commit → the consumer's record (database clock)
============================  ==========================================================

Why a write is retried here, when sfops never retries writes: the canary's key makes it
idempotent — a POST sent again with the same key upserts the same row (the API gives it a new
token, and only that token's consumer record counts), so sending it again after a failure,
e.g. while a switchover's new primary is being found, can never write twice. Every attempt and
the consumer's wait fit in ``[verify] timeout``; the answer then names the first hop that
failed in the last attempt.

The hop logic (:func:`post_hops`, :func:`consumer_hop`) is pure and unit-tested; :class:`Canary`
does the I/O.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backends.actions import CheckResult, Step
from backends.resilience import RetryPolicy, call_read
from backends.safetext import LINE, safe_text
from backends.secrets import Secret, redact_known, redact_url
from backends.writepath.config import VerifySettings

if TYPE_CHECKING:
    import httpx

HOPS: tuple[tuple[str, str], ...] = (
    ("nginx", "nginx accepted"),
    ("api", "API handled"),
    ("postgres", "PostgreSQL committed"),
    ("kafka", "Kafka acknowledged"),
    ("consumer", "consumer received"),
)
LABELS = dict(HOPS)
NAMES = tuple(name for name, _ in HOPS)
# nginx answers these itself when no upstream member could (refused, timed out, all down).
NGINX_OWN_ERRORS = (502, 503, 504)
# The API must answer before sfops stops waiting: it waits for Kafka at most this much less.
API_MARGIN_SECONDS = 1.0
CONSUMER_POLL_SECONDS = 0.2
READ_TIMEOUT_SECONDS = 2.0
KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class HopStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not part of this write path (the API publishes no events)
    NOT_REACHED = "not reached"  # an earlier hop failed


@dataclass(frozen=True)
class Hop:
    name: str  # one of NAMES
    status: HopStatus
    ms: float | None = None
    detail: str = ""  # why it failed or was skipped; outside text, redacted

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def passed(self) -> bool:
        return self.status in (HopStatus.OK, HopStatus.SKIPPED)

    def describe(self) -> str:
        """``nginx accepted 4.2 ms``, ``consumer received: failed — not recorded …``."""
        if self.status is HopStatus.OK:
            return f"{self.label} {_ms(self.ms)}"
        text = f"{self.label}: {self.status.value}"
        return f"{text} — {self.detail}" if self.detail else text

    def check(self) -> CheckResult:
        """The hop as a verify check (the audit record's ``verify`` list)."""
        if self.status is HopStatus.OK:
            return CheckResult.passed(self.label, _ms(self.ms))
        if self.status is HopStatus.FAILED:
            return CheckResult.failed(self.label, self.detail)
        detail = self.status.value + (f": {self.detail}" if self.detail else "")
        return CheckResult.warned(self.label, detail)

    def to_json(self) -> dict[str, Any]:
        return {"hop": self.name, "label": self.label, "status": self.status.value,
                "ms": None if self.ms is None else round(self.ms, 1), "detail": self.detail}


def _ms(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


@dataclass(frozen=True)
class WritePathReport:
    url: str  # redacted
    key: str
    hops: tuple[Hop, ...]
    attempts: int = 0
    duration_s: float = 0.0
    served_by: str | None = None  # the API worker that handled the last attempt
    error: str | None = None  # the canary could not run at all (a bug, a bad URL)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"))

    @property
    def ok(self) -> bool:
        return self.error is None and all(h.passed for h in self.hops)

    @property
    def failed_hop(self) -> Hop | None:
        return next((h for h in self.hops if h.status is HopStatus.FAILED), None)

    def problem(self) -> str | None:
        """Why users cannot write: ``consumer received: not recorded within 5.0 s``."""
        if self.error is not None:
            return self.error
        hop = self.failed_hop
        if hop is None:
            return None if self.ok else "incomplete"
        return f"{hop.label}: {hop.detail}" if hop.detail else hop.label

    def summary(self) -> str:
        if self.ok:
            timed = ", ".join(h.describe() for h in self.hops if h.status is HopStatus.OK)
            return f"write path ok: {timed}"
        return f"users cannot write: {self.problem()}"

    def checks(self) -> list[CheckResult]:
        if self.error is not None:
            return [CheckResult.failed("write path", self.error)]
        return [hop.check() for hop in self.hops]

    def to_json(self) -> dict[str, Any]:
        failed = self.failed_hop
        return {
            "ok": self.ok, "at": self.at, "url": self.url, "key": self.key,
            "attempts": self.attempts, "duration_s": round(self.duration_s, 3),
            "served_by": self.served_by, "failed_hop": failed.name if failed else None,
            "error": None if self.ok else self.problem(),
            "hops": [h.to_json() for h in self.hops],
        }


# --------------------------------------------------------------------------- pure hop logic


@dataclass(frozen=True)
class Answer:
    """What one POST got: an HTTP answer, or a transport error (``connected``: whether nginx
    had accepted the connection when it failed)."""

    status: int | None = None
    served_by: str | None = None  # X-Served-By: an API worker answered (also its 5xx)
    body: Any = None  # the parsed JSON, None when not JSON
    elapsed_ms: float | None = None
    error: str | None = None
    connected: bool = False


@dataclass(frozen=True)
class PostResult:
    hops: tuple[Hop, ...]  # nginx, api, postgres, kafka
    token: str | None = None  # the write's token, when the API answered a report
    served_by: str | None = None
    permanent: bool = False  # sending it again cannot help (no canary endpoint, bad key)

    @property
    def failed(self) -> Hop | None:
        return next((h for h in self.hops if h.status is HopStatus.FAILED), None)


def _rest(after: str) -> list[Hop]:
    """The hops after ``after``, not reached."""
    index = NAMES.index(after) + 1
    return [Hop(name, HopStatus.NOT_REACHED) for name in NAMES[index:NAMES.index("consumer")]]


def _text(value: Any) -> str:
    """Text the server sent, one line, bounded (kept raw otherwise: JSON output escapes it
    and every printer passes it through safe_text)."""
    return safe_text(value, LINE) if value is not None else ""


def post_hops(answer: Answer) -> PostResult:
    """The hops nginx → API → PostgreSQL → Kafka from the POST's answer, the first failure
    named with the server's reason."""
    if answer.status is None:
        error = answer.error or "no answer"
        if not answer.connected:
            return PostResult((Hop("nginx", HopStatus.FAILED, detail=error), *_rest("nginx")))
        return PostResult((Hop("nginx", HopStatus.OK, answer.elapsed_ms),
                           Hop("api", HopStatus.FAILED, detail=error), *_rest("api")))
    nginx = Hop("nginx", HopStatus.OK, answer.elapsed_ms)
    body = answer.body if isinstance(answer.body, Mapping) else {}
    if answer.served_by is None:
        if answer.status in NGINX_OWN_ERRORS:
            detail = f"nginx answered {answer.status} itself: no API worker answered"
        else:
            detail = (f"nginx answered {answer.status} without an API worker (does "
                      "/canary reach the API upstream?)")
        return PostResult((nginx, Hop("api", HopStatus.FAILED, detail=detail), *_rest("api")),
                          permanent=answer.status not in NGINX_OWN_ERRORS)
    served_by = _text(answer.served_by)
    reason = _text(body.get("error")) if body else ""

    def api_failed(detail: str, *, permanent: bool) -> PostResult:
        return PostResult((nginx, Hop("api", HopStatus.FAILED, detail=f"{served_by}: {detail}"),
                           *_rest("api")), served_by=served_by, permanent=permanent)

    if answer.status == 404:
        return api_failed("no canary endpoint (404): the API predates sfops verify "
                          "(deploy/api/canary.py)", permanent=True)
    if answer.status == 429:
        return api_failed("too many canaries at once (429)", permanent=False)
    if answer.status != 200:
        detail = f"HTTP {answer.status}" + (f": {reason}" if reason else "")
        return api_failed(detail, permanent=400 <= answer.status < 500)
    hops_sent = body.get("hops") if body else None
    if not isinstance(hops_sent, list) or not isinstance(body.get("token"), str):
        return api_failed("the answer is not a canary report", permanent=True)
    api = Hop("api", HopStatus.OK, _number(body.get("api_ms")))
    found = {h.get("hop"): h for h in hops_sent if isinstance(h, Mapping)}
    hops = [nginx, api]
    for name in ("postgres", "kafka"):
        if hops[-1].status in (HopStatus.FAILED, HopStatus.NOT_REACHED):
            hops.append(Hop(name, HopStatus.NOT_REACHED))
            continue
        sent = found.get(name)
        if sent is None:
            hops.append(Hop(name, HopStatus.FAILED, detail=f"{served_by}: the report has no "
                            f"{name} hop"))
            continue
        try:
            status = HopStatus(str(sent.get("status")))
        except ValueError:
            status = HopStatus.FAILED
        detail = _text(sent.get("error"))
        if status is HopStatus.FAILED:
            detail = f"{served_by}: {detail or 'failed'}"
        hops.append(Hop(name, status, _number(sent.get("ms")), detail))
    return PostResult(tuple(hops), token=body["token"], served_by=served_by)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def consumer_hop(row: Any, token: str) -> Hop | None:
    """The consumer hop from ``GET /canary/<key>``'s answer, or None while no consumer has
    recorded this write (its token) yet."""
    if not isinstance(row, Mapping) or row.get("token") != token or not row.get("consumed_at"):
        return None
    detail = _text(row.get("consumed_by"))
    return Hop("consumer", HopStatus.OK, _number(row.get("consumer_ms")),
               f"by {detail}" if detail else "")


def new_key(host: str | None = None, now: float | None = None) -> str:
    """A canary key: who and when, plus randomness (two runs never share one)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    host = KEY_UNSAFE.sub("-", host or socket.gethostname())[:40]
    return f"sfops-{host}-{stamp}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- I/O


class _AttemptFailed(Exception):
    """One POST did not get every hop through; retried (by key, idempotent) unless
    ``permanent``."""

    def __init__(self, result: PostResult) -> None:
        super().__init__(result.failed.describe() if result.failed else "failed")
        self.result = result
        self.permanent = result.permanent


StepSink = Callable[[Step], object]


class Canary:
    """One canary run per :meth:`run` (a new key each time unless given)."""

    def __init__(self, settings: VerifySettings, *, secrets: Iterable[Secret | str] = (),
                 timeout: float | None = None, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 poll_interval: float = CONSUMER_POLL_SECONDS) -> None:
        self.settings = settings
        self.timeout = timeout if timeout is not None else settings.timeout
        self.secrets = list(secrets)
        self.url = settings.url.rstrip("/")
        self.shown_url = redact_url(self.url)
        self._client = client
        self._clock = clock
        self._poll_interval = poll_interval

    def _redact(self, text: str) -> str:
        return redact_known(text, self.secrets)

    async def run(self, key: str | None = None, on_step: StepSink | None = None,
                  ) -> WritePathReport:
        """Send the canary and follow it to the consumer, within the timeout. Never raises
        (but for cancellation): a canary that cannot run is a report with ``error``."""
        key = key or new_key()
        started = self._clock()
        deadline = started + self.timeout
        import httpx  # here, not at the top: ~85 ms of every start-up, and most never verify

        client = self._client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
        attempts = 0
        # The failed attempt that got furthest along the path. A later attempt can fail
        # earlier only because less time was left: a database that refuses writes makes the
        # API's pool reconnect, and the last attempt's short budget then ends at "API: no
        # answer", hiding the hop that stopped the write. Every attempt is still shown.
        furthest: PostResult | None = None

        async def show(message: str) -> None:
            if on_step is None:
                return
            fraction = min(1.0, (self._clock() - started) / self.timeout)
            shown = on_step(Step(self._redact(message), fraction))
            if inspect.isawaitable(shown):
                await shown

        async def attempt() -> PostResult:
            nonlocal attempts
            attempts += 1
            nonlocal furthest
            answer = await self._post(client, key, deadline)
            result = post_hops(answer)
            if result.failed is not None:
                await show(f"attempt {attempts}: {result.failed.describe()}")
                if furthest is None or furthest.failed is None or (
                        NAMES.index(result.failed.name) >= NAMES.index(furthest.failed.name)):
                    furthest = result
                raise _AttemptFailed(result)  # its own permanence decides whether to retry
            await show(" · ".join(h.describe() for h in result.hops
                                  if h.status is not HopStatus.NOT_REACHED))
            return result

        def report(hops: Iterable[Hop], served_by: str | None = None,
                   error: str | None = None) -> WritePathReport:
            # Server text is redacted where it enters, by the value of every known secret.
            redacted = tuple(replace(h, detail=self._redact(h.detail)) for h in hops)
            return WritePathReport(self.shown_url, key, redacted, attempts,
                                   self._clock() - started, served_by, error)

        try:
            await show(f"canary {key} → {self.shown_url}")
            # Bounded by the deadline (no attempt starts after it), not by a count.
            policy = RetryPolicy(attempts=10_000, initial_backoff=0.25, max_backoff=2.0,
                                 jitter=0.1, deadline=self.timeout, retry_on=(_AttemptFailed,))
            try:
                result = await call_read(attempt, policy, what=f"POST canary {key}")
            except _AttemptFailed as exc:
                stopped = furthest or exc.result
                return report([*stopped.hops, Hop("consumer", HopStatus.NOT_REACHED)],
                              stopped.served_by)
            consumer = await self._consumer(client, key, result, deadline, show)
            return report([*result.hops, consumer], result.served_by)
        except Exception as exc:  # a bug or a URL httpx refuses: named, never raised
            return report((), error=self._redact(f"the canary could not run: "
                                                 f"{type(exc).__name__}: {exc}"))
        finally:
            if self._client is None:
                await client.aclose()

    async def _post(self, client: httpx.AsyncClient, key: str, deadline: float) -> Answer:
        import httpx

        remaining = max(0.1, deadline - self._clock())
        wait = min(30.0, max(0.1, remaining - API_MARGIN_SECONDS))
        started = self._clock()
        try:
            response = await client.post(
                f"{self.url}/canary/{key}", params={"wait": f"{wait:.1f}"},
                headers={"User-Agent": "sfops-verify"},
                timeout=httpx.Timeout(remaining, connect=min(remaining, 3.0)))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.UnsupportedProtocol) as exc:
            return Answer(error=self._why(exc, remaining), connected=False)
        except httpx.TransportError as exc:  # connected, then no (complete) answer
            return Answer(error=self._why(exc, remaining), connected=True,
                          elapsed_ms=(self._clock() - started) * 1000)
        try:
            body = response.json()
        except ValueError:
            body = None
        return Answer(response.status_code, response.headers.get("x-served-by"), body,
                      (self._clock() - started) * 1000)

    def _why(self, exc: BaseException, seconds: float) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            what = "connect" if isinstance(exc, httpx.ConnectTimeout) else "answer"
            return f"no {what} from {self.shown_url} within {seconds:.1f} s"
        text = str(exc) or type(exc).__name__
        return self._redact(f"{self.shown_url}: {text}")

    async def _consumer(self, client: httpx.AsyncClient, key: str, result: PostResult,
                        deadline: float, show: Callable[[str], Any]) -> Hop:
        import httpx

        kafka = result.hops[-1]
        if kafka.status is HopStatus.SKIPPED:
            return Hop("consumer", HopStatus.SKIPPED, detail="no Kafka on this write path")
        if not self.settings.consumer:
            return Hop("consumer", HopStatus.SKIPPED, detail="[verify] consumer = false")
        assert result.token is not None
        await show("waiting for a consumer to record the canary…")
        waited_from = self._clock()
        last_error = ""
        while True:
            remaining = deadline - self._clock()
            try:
                response = await client.get(f"{self.url}/canary/{key}",
                                            timeout=max(0.1, min(remaining,
                                                                 READ_TIMEOUT_SECONDS)))
                row = response.json() if response.status_code == 200 else None
                last_error = "" if row is not None else f"GET answered {response.status_code}"
            except (httpx.TransportError, ValueError) as exc:
                row, last_error = None, self._redact(f"GET: {type(exc).__name__}")
            hop = consumer_hop(row, result.token)
            if hop is not None:
                await show(hop.describe())
                return hop
            if self._clock() + self._poll_interval >= deadline:
                waited = self._clock() - waited_from
                detail = f"no consumer recorded it within {waited:.1f} s"
                if last_error:
                    detail += f" (last read: {last_error})"
                return Hop("consumer", HopStatus.FAILED, detail=detail)
            await asyncio.sleep(self._poll_interval)


__all__ = ["HOPS", "Answer", "Canary", "Hop", "HopStatus", "WritePathReport", "consumer_hop",
           "new_key", "post_hops"]
