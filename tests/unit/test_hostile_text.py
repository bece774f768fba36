"""Hostile text through every renderer and every CLI formatter (hypothesis).

Arbitrary strings — control characters, ESC/OSC sequences, C1 controls, bidi overrides,
markup such as ``[@click=app.quit]``, thousands of characters — are planted in every string
field of each backend's status (a generic walk over the status dataclasses), in alerts,
audit records, check results and step messages, the timeline's entries and sources, a
write-path report, an incident bundle's inputs. Whatever reaches the output must hold no
control or format character, keep the markup literal (no span runs an action or links) and
stay bounded in length; JSON (``ensure_ascii``) holds only ASCII, every other character
escaped by JSON itself."""

from __future__ import annotations

import dataclasses
import enum
import io
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.text import Text

from backends.actions import CheckResult, CheckStatus, Outcome, RunResult
from backends.safetext import CELL, LINE, TEXT, safe_text
from backends.service import Alert, BackendSummary, Severity
from backends.snapshot import Health

MARKUP = "[@click=app.quit]"
UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
# Assembled cells (a label plus outside text) and one line of a detail or CLI text: the
# per-use caps plus room for what sfops adds around them.
CELL_MAX = LINE + 60
LINE_MAX = TEXT + LINE + 100

NASTY = st.sampled_from([
    "\x1b]0;PWNED\x07", "\x1b[2J", "\x1b]52;c;SGVsbG8=\x07", "\x9b31m", "\x07", "\r\n",
    "\u202e", "\u2066", "\u200b", "\ufeff", "\u2028", "[bold]", "[/]", "[link=x]", "\t",
    "\x00", "\x7f", "\U000e0041",
])
HOSTILE = st.builds(
    lambda parts, repeat: MARKUP + "".join(parts) * repeat,
    st.lists(st.one_of(st.text(), NASTY), max_size=8),
    st.sampled_from([1, 1, 1, 40]),  # now and then very long
)
# Always tried as well: long enough that any uncapped output shows (hypothesis draws the
# long case now and then only).
LONG = MARKUP + "\x1b]0;PWNED\x07\u202e" * 300
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def unsafe_chars(text: str, *, newlines: bool) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch) in UNSAFE
            and not (newlines and ch == "\n")]


def check_cell(cell: Text, limit: int = CELL_MAX) -> None:
    assert isinstance(cell, Text)
    assert not unsafe_chars(cell.plain, newlines=False), repr(cell.plain)
    assert len(cell.plain) <= limit, len(cell.plain)
    check_spans(cell)


def check_spans(text: Text) -> None:
    for span in text.spans:
        style = span.style
        if isinstance(style, str):
            assert "@click" not in style and "link" not in style, style
        else:
            assert not style.meta and style.link is None, style


def check_block(text: str | Text) -> None:
    """Multi-line output: no unsafe character but "\n", every line bounded."""
    if isinstance(text, Text):
        check_spans(text)
        text = text.plain
    assert not unsafe_chars(text, newlines=True), repr(text)
    assert all(len(line) <= LINE_MAX for line in text.split("\n")), max(map(len, text.split("\n")))


def check_rows(rows: Iterable[Any]) -> None:
    for row in rows:
        cells = row.cells if hasattr(row, "cells") else row[1]
        for cell in cells:
            check_cell(cell)


# ----------------------------------------------------------------------------- planting


def plant(value: Any, hostile: str) -> Any:
    """Every str in a (nested, frozen) dataclass value replaced by ``hostile``: names,
    messages, errors, addresses — whatever the backend got from outside. Enums (their
    values are sfops's own words) and numbers are kept."""
    if isinstance(value, enum.Enum):
        return value
    if isinstance(value, str):
        return hostile
    if isinstance(value, tuple):
        return tuple(plant(v, hostile) for v in value)
    if isinstance(value, list):
        return [plant(v, hostile) for v in value]
    if isinstance(value, Mapping):
        planted = {k: plant(v, hostile) for k, v in value.items()}
        return MappingProxyType(planted) if isinstance(value, MappingProxyType) else planted
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: plant(getattr(value, f.name), hostile)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


# ----------------------------------------------------------------------------- statuses


def nginx_status() -> Any:
    from tests.unit.test_render_nginx import member, status

    return status(member(), member("api-2"), problems=("upstream file edited",))


def postgres_status() -> Any:
    from tests.unit.test_render_postgres import cluster

    return cluster()


def kafka_status() -> Any:
    from tests.unit.test_render_kafka import make_status

    return make_status()


def kubernetes_status() -> Any:
    from backends.kubernetes.objects import pod_from_json
    from tests.unit.test_k8s_objects import event, pod
    from tests.unit.test_render_kubernetes import _status

    return _status(
        pods=[pod_from_json(pod("api-abcde-0", ready=False)),
              pod_from_json(pod("api-abcde-1"))],
        events=[event("e", "api-abcde-0", "Readiness probe failed: HTTP 503")],
    )


def summarize(backend: str, status: Any) -> BackendSummary:
    from importlib import import_module

    model = import_module(f"backends.{backend}.model")
    summary: BackendSummary = model.summarize_status(status)
    return summary


# ----------------------------------------------------------------------------- renderers


@SETTINGS
@given(HOSTILE)
def test_nginx_renderers(hostile: str) -> None:
    from tui.render import nginx

    status = plant(nginx_status(), hostile)
    check_rows(nginx.member_rows(status))
    check_block(nginx.header(status))
    summary = summarize("nginx", status)
    check_block(nginx.status_text(status, summary, {}))
    check_cli("nginx", status, summary)


@SETTINGS
@given(HOSTILE)
def test_postgres_renderers(hostile: str) -> None:
    from tui.render import postgres

    status = plant(postgres_status(), hostile)
    check_rows(postgres.member_rows(status))
    check_rows(postgres.warning_rows(status))
    for member in status.members:
        check_rows(postgres.standby_rows(member))
        check_rows(postgres.slot_rows(member))
    check_block(postgres.worst_warning(status))
    summary = summarize("postgres", status)
    check_block(postgres.status_text(status, summary, {}))
    check_cli("postgres", status, summary)


@SETTINGS
@given(HOSTILE)
def test_kafka_renderers(hostile: str) -> None:
    from tui.render import kafka

    status = plant(kafka_status(), hostile)
    check_rows(kafka.broker_rows(status))
    check_rows(kafka.topic_rows(status))
    check_rows(kafka.group_rows(status))
    for topic in status.topics:
        check_rows(kafka.partition_rows(topic))
    for group in status.groups:
        check_rows(kafka.group_lag_rows(group))
    check_block(kafka.cluster_text(status))
    summary = summarize("kafka", status)
    check_block(kafka.status_text(status, summary, {"partitions": True}))
    check_cli("kafka", status, summary)


@SETTINGS
@given(HOSTILE)
def test_kubernetes_renderers(hostile: str) -> None:
    from tests.unit.test_render_kubernetes import NOW
    from tui.render import kubernetes

    status = plant(kubernetes_status(), hostile)
    check_rows(kubernetes.cluster_rows(status, NOW))
    check_rows(kubernetes.cluster_rows(status, NOW, cache=kubernetes.RowCache(fixed=True)))
    check_block(kubernetes.detail_text(status, NOW))
    summary = summarize("kubernetes", status)
    check_block(kubernetes.status_text(status, summary, {}, now=NOW))
    check_cli("kubernetes", status, summary)


@SETTINGS
@given(HOSTILE)
def test_overview_and_modals(hostile: str) -> None:
    from tui.modals import checks_text
    from tui.render import overview

    now = datetime.now(UTC)
    summary = BackendSummary("nginx", hostile, Health.DEGRADED, error=hostile,
                             alerts=(Alert(hostile, hostile, Severity.WARNING, hostile),))
    summary = dataclasses.replace(summary, figures=plant(
        summarize("nginx", nginx_status()).figures, hostile))
    check_block(overview.panel_title(summary, data_age=3.0))
    check_block(overview.panel_body(summary))
    check_block(overview.panel_body(dataclasses.replace(summary, last_known=True),
                                    stale_for=12.0))
    check_rows((r.key, r.cells) for r in overview.alert_rows(
        [(summary.alerts[0], now)], now))
    record = {k: hostile for k in ("ts", "action", "target", "outcome", "user", "error")}
    check_rows(overview.recent_action_rows([record]))
    check_block(checks_text([CheckResult(hostile, CheckStatus.WARN, hostile)]))


# ----------------------------------------------------------------------------- CLI


def check_cli(backend: str, status: Any, summary: BackendSummary) -> None:
    """`sfops <backend> status` as a table and as YAML, and `sfops status`'s table."""
    from backends.registry import backend as find
    from tui.commands.backend import print_document, print_status, status_document
    from tui.commands.status import print_table

    declared = find(backend)
    assert declared is not None
    out = io.StringIO()
    print_status(declared, status, summary, {"partitions": True}, out)
    check_block(out.getvalue())
    document = status_document(declared, status, summary.error, summary, "now", 1)
    for output in ("yaml", "json"):
        out = io.StringIO()
        print_document(document, output, out)
        assert not unsafe_chars(out.getvalue(), newlines=True)
    out = io.StringIO()
    snapshot = _Snapshot(status)  # its status is the likely causes' evidence
    results = [(declared, _NoBreaker(), snapshot, summary)]
    print_table(results, out)  # type: ignore[arg-type]
    check_block(out.getvalue())
    check_status_json(results)  # type: ignore[arg-type]


def check_status_json(results: list[Any]) -> None:
    """`sfops status -o json|yaml`: :func:`tui.commands.status.to_json` printed."""
    import tempfile
    from pathlib import Path

    from backends.config import SfopsConfig, SfopsSettings
    from tui.commands.backend import print_document
    from tui.commands.status import to_json

    with tempfile.TemporaryDirectory() as directory:
        config = SfopsConfig(path=Path(directory) / "sfops.toml", executors={},
                             sfops=SfopsSettings(audit_log=Path(directory) / "audit.jsonl",
                                                 state_dir=Path(directory)))
        document = to_json(results, 1, config)
    for output in ("json", "yaml"):
        out = io.StringIO()
        print_document(document, output, out)
        assert not unsafe_chars(out.getvalue(), newlines=True), output
        if output == "json":
            assert out.getvalue().isascii()  # ensure_ascii: every escape is JSON's


class _NoBreaker:
    breaker = None


class _Snapshot:
    ok = True

    def __init__(self, value: Any) -> None:
        self.value = value
        self.taken_at = datetime.now(UTC)


@SETTINGS
@given(HOSTILE)
def test_action_printers(hostile: str) -> None:
    from tui.commands import _action
    from tui.commands.audit import _row

    check = CheckResult(hostile, CheckStatus.FAIL, hostile)
    check_block(_action.check_line(check))
    result = RunResult(action=hostile, target=hostile, outcome=Outcome.FAILED,
                       preflight=[check], verify=[check], steps=1, error=hostile,
                       duration_s=1.0, started_at="now", forced=False)
    out, err = io.StringIO(), io.StringIO()
    _action._report(result, False, out, err)
    check_block(out.getvalue() + err.getvalue())
    out = io.StringIO()
    _action._report(result, True, out, err)
    assert not unsafe_chars(out.getvalue(), newlines=True)  # JSON escapes them
    for cell in _row({k: hostile for k in ("ts", "user", "action", "target", "outcome",
                                           "error")}):
        assert not unsafe_chars(cell, newlines=False) and len(cell) <= LINE


# ----------------------------------------------------------------------------- timeline


def hostile_timeline(hostile: str) -> Any:
    from backends.timeline.model import CRITICAL
    from backends.timeline.view import Entry, Gap, SourceAge, Timeline

    now = datetime.now(UTC).timestamp()
    entries = [
        Entry(now - 60, hostile, hostile, hostile, CRITICAL, hostile, "k1",
              {"detail": hostile}),
        Entry(now - 30, hostile, hostile, hostile, hostile, hostile, "k2"),  # unknown level
        Entry(now - 86400 * 2, "sfops", hostile, hostile, CRITICAL, hostile, "k3"),  # dated
    ]
    ages = [SourceAge(hostile, hostile, False, now - 48, hostile),
            SourceAge(hostile, hostile, True, now - 2, None),
            SourceAge(hostile, hostile, False, None, hostile)]
    return Timeline(entries, ages, [Gap(now - 600, now - 300)], now - 3600, now,
                    (hostile, hostile))


@SETTINGS
@given(HOSTILE)
@example(LONG)
def test_timeline_renderers(hostile: str) -> None:
    """The timeline screen's rows and data line, `sfops timeline`'s table and its JSON/YAML."""
    from backends.timeline.view import document
    from tui.commands.backend import print_document
    from tui.render import timeline as render

    timeline = hostile_timeline(hostile)
    check_rows(render.timeline_rows(timeline.entries, timeline.until))
    check_cell(render.ages_text(timeline.ages, timeline.until))
    check_block(render.timeline_text(timeline.entries, timeline.ages, timeline.until))
    check_block(render.timeline_text([], timeline.ages, timeline.until))
    doc = document(timeline.entries, timeline.ages, timeline.gaps, since=timeline.since,
                   until=timeline.until, env="default", store=hostile, error=hostile,
                   problems=timeline.problems)
    for output in ("json", "yaml"):
        out = io.StringIO()
        print_document(doc, output, out)
        assert not unsafe_chars(out.getvalue(), newlines=True), output


@SETTINGS
@given(HOSTILE)
@example(LONG)
def test_incident_export(hostile: str) -> None:
    """`sfops incident export`: incident.md (safe, bounded lines) and incident.json (every
    character escaped by JSON itself), from a hostile timeline, audit record, status
    snapshots and alerts."""
    import json
    import tempfile
    from pathlib import Path

    from backends.audit import FINISHED, STARTED
    from backends.secrets import redact_known
    from backends.timeline.export import bundle, write
    from backends.timeline.store import StoredSnapshot

    timeline = hostile_timeline(hostile)
    ts = datetime.fromtimestamp(timeline.until - 120, UTC).isoformat()
    check = {"name": hostile, "status": hostile, "detail": hostile}
    started = {"event": STARTED, "id": "a1", "ts": ts, "action": hostile, "target": hostile,
               "user": hostile, "host": hostile, "outcome": "started", "env": "default"}
    final = {**started, "event": FINISHED, "id": "a2", "started_id": "a1", "outcome": hostile,
             "error": hostile, "duration_s": 3.0, "forced": True, "preflight": [check, hostile],
             "verify": [check]}
    summary = {"health": hostile, "figures": [{"label": hostile, "value": hostile}],
               "alerts": [{"severity": hostile, "message": hostile}]}
    snapshots = [StoredSnapshot(1, timeline.until - 119, "a1", hostile, hostile, phase,
                                hostile, timeline.until - 119, ok, hostile,
                                summary if ok else {}, {"x": hostile})
                 for phase, ok in (("before", True), ("after", False))]
    alerts = [{"source": hostile, "key": hostile, "severity": hostile, "unreachable": True,
               "message": hostile}]
    data = bundle(timeline, [started, final], snapshots, alerts, env="default",
                  store=hostile, generated=timeline.until, store_error=hostile)
    assert data["actions"], "the hostile action is in the bundle"
    with tempfile.TemporaryDirectory() as directory:
        md_path, json_path = write(data, Path(directory) / "bundle")
        text, raw = md_path.read_text(), json_path.read_text()
    check_block(text)
    assert raw.isascii() and not unsafe_chars(raw, newlines=True)
    # Kept as it was (but for redaction), only escaped by JSON.
    assert json.loads(raw)["actions"][0]["record"]["error"] == redact_known(hostile)


# ----------------------------------------------------------------------------- CLI reports


@SETTINGS
@given(HOSTILE)
@example(LONG)
def test_verify_report(hostile: str) -> None:
    """`sfops verify`'s table of hops and its last line."""
    from backends.writepath.canary import NAMES, Hop, HopStatus, WritePathReport
    from tui.commands.verify import print_report

    hops = tuple(Hop(name, status, 1.5, hostile) for name, status in zip(
        [*NAMES, hostile], [*HopStatus, HopStatus.FAILED] * 3, strict=False))
    report = WritePathReport(hostile, hostile, hops, attempts=2, served_by=hostile,
                             error=hostile)
    result = RunResult(action=hostile, target=hostile, outcome=Outcome.FAILED, preflight=[],
                       verify=[], steps=0, error=hostile, duration_s=1.0, forced=False,
                       write_path=report)
    out = io.StringIO()
    print_report(result, out)
    check_block(out.getvalue())


@SETTINGS
@given(HOSTILE)
@example(LONG)
def test_audit_unfinished_listing(hostile: str) -> None:
    """`sfops audit`'s lines under its table: actions without an outcome."""
    from contextlib import redirect_stdout

    from backends.audit import INTERRUPTED, RUNNING, UNFINISHED, Unfinished
    from tui.commands.audit import _print_unfinished

    record = {k: hostile for k in ("id", "ts", "action", "target", "user", "host", "env",
                                   "pid")}
    items = [Unfinished(record, state) for state in (RUNNING, INTERRUPTED, UNFINISHED)]
    items.append(Unfinished({**record, "action": "pg.failover"}, INTERRUPTED))
    out = io.StringIO()
    with redirect_stdout(out):
        _print_unfinished(items)
    assert out.getvalue().count("\n") == len(items) + 1  # a blank line, then one each
    check_block(out.getvalue())


@SETTINGS
@given(st.text())
def test_safe_text_is_safe_bounded_and_idempotent(text: str) -> None:
    for limit in (1, 5, CELL, None):
        once = safe_text(text, limit)
        assert not unsafe_chars(once, newlines=False)
        assert limit is None or len(once) <= limit
        assert safe_text(once, limit) == once
        multi = safe_text(text, limit, lines=True)
        assert not unsafe_chars(multi, newlines=True)
    assert safe_text(text, None, lines=True).count("\n") <= text.count("\n") + text.count("\r")


def test_the_escapes_read_as_documented() -> None:
    assert safe_text("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe_text("\u202eevil") == "\\u202eevil"
    assert safe_text("\x9b31m") == "\\x9b31m"
    assert safe_text("tab\there") == "tab here"
    assert safe_text("first\nsecond") == "first…"
    assert safe_text("first\n\n") == "first"
    assert safe_text("first\r\nsecond", lines=True) == "first\nsecond"
    assert safe_text("x" * 300) == "x" * (LINE - 1) + "…"
    assert safe_text("[bold]x[/bold]") == "[bold]x[/bold]"  # markup is the caller's concern
    assert safe_text(None) == ""

