"""`sfops timeline` and `sfops incident export` without a lab (``--no-refresh``: only what is
recorded): the JSON shape, filters, hostile text in every output, the export's content, and
a planted secret that appears nowhere in the bundle."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from backends.timeline.model import CRITICAL, Change
from backends.timeline.store import TimelineStore
from backends.timeline.view import iso
from tui.cli import main

SECRET = "PLANTED-s3cret-9f3a"
PATTERN_SECRET = "hunter2-only-by-pattern"
HOSTILE = "\x1b]0;pwned\x07[@click=app.quit]x\u202eevil\x1b[2J"
NOW = time.time()  # set again by each test's seed: the CLI's window ends at its own "now"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "sfops.toml"
    config.write_text(f"""
[sfops]
audit_log = "{tmp_path}/audit.jsonl"
state_dir = "{tmp_path}/state"

[nginx]
config_file = "{tmp_path}/nginx.conf"
upstream_file = "{tmp_path}/upstream.conf"
upstream_name = "api"
stub_status_url = "http://monitor:{SECRET}@127.0.0.1:9/status"

[nginx.members.api-2]
address = "127.0.0.1:9002"
""")
    return config


def seed(tmp_path: Path) -> None:
    """A store and an audit log as an earlier sfops left them: the secret was not known
    when these were written, so it is really in them (the export must redact it).

    Times are relative to this moment, not to the import: a test that runs many minutes after
    collection (a loaded machine, the whole suite) must still find its entries in the
    default window."""
    global NOW
    NOW = time.time()
    store = TimelineStore(tmp_path / "state" / "timeline.sqlite3").open()
    store.start_span("s1", "alice@h pid 1 (tui)", NOW - 600.0)
    store.stop_span("s1", NOW - 60.0)
    store.add([Change("nginx", "member-state", "api-2", "api-2 up → failing: refused",
                      CRITICAL, data={"url": f"http://monitor:{SECRET}@x/"})], NOW - 300.0,
              "alice@h pid 1 (tui)")
    store.add([Change("kubernetes", "warning-event", "Pod/x", f"BackOff pod/x: {HOSTILE}",
                      at=NOW - 200.0, key="k8s-event:ns/x:1")], NOW - 190.0, "alice")
    store.add([Change("postgres", "role", "pg-1",
                      f"pg-1 primary → down: password={PATTERN_SECRET} rejected")],
              NOW - 100.0, "alice")
    store.add_snapshot(ts=NOW - 251.0, action_id="s-1", action="nginx.drain", target="api-2",
                       phase="before", backend="nginx", taken_at=NOW - 252.0, ok=True,
                       error=None, summary={"health": "ok", "figures": [
                           {"label": "up", "value": "2/2", "health": "ok"}], "alerts": []},
                       status={"stub": f"http://monitor:{SECRET}@x/"})
    store.add_snapshot(ts=NOW - 240.0, action_id="s-1", action="nginx.drain", target="api-2",
                       phase="after", backend="nginx", taken_at=NOW - 241.0, ok=True,
                       error=None, summary={"health": "degraded", "figures": [], "alerts": [
                           {"key": "member-drained:api-2", "severity": "info",
                            "message": "api-2 drained"}]}, status={"members": 2})
    store.close()
    start = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 250.0))
    records = [
        {"ts": start, "id": "s-1", "event": "started", "env": "default", "user": "alice",
         "host": "h", "action": "nginx.drain", "target": "api-2",
         "params": {"token": SECRET}, "pid": -1},
        {"ts": start, "id": "f-1", "event": "finished", "env": "default", "user": "alice",
         "host": "h", "action": "nginx.drain", "target": "api-2", "outcome": "succeeded",
         "duration_s": 8.5, "started_id": "s-1", "forced": False,
         "preflight": [{"name": "another healthy member", "status": "pass",
                        "detail": f"api-1 up ({SECRET})"}], "verify": [], "error": None},
    ]
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def configured(tmp_path):
    seed(tmp_path)
    assert SECRET.encode() in (tmp_path / "state" / "timeline.sqlite3").read_bytes()
    return write_config(tmp_path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_has_the_entries_in_order_the_sources_and_the_gaps(configured, capsys):
    code, out, _ = run(capsys, "--config", str(configured), "timeline", "--no-refresh",
                       "--since", "15m", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    kinds = [(e["source"], e["kind"]) for e in doc["entries"]]
    assert kinds == [("sfops", "gap"), ("nginx", "member-state"),
                     ("actions", "action-started"), ("actions", "action"),
                     ("kubernetes", "warning-event"), ("postgres", "role"),
                     ("sfops", "gap")], kinds
    # The first gap: the window before the observer's span; the last: since it stopped.
    first, last = doc["gaps"]
    assert first["to"] == iso(NOW - 600.0) and last["from"] == iso(NOW - 60.0)
    assert doc["entries"][3]["message"].startswith("nginx.drain api-2: succeeded in 8.5 s")
    assert doc["env"] == "default" and doc["store"].endswith("state/timeline.sqlite3")
    # JSON keeps outside text as sent, escaped by JSON itself.
    assert "\\u001b]0;pwned" in out and "\x1b" not in out


def test_source_and_text_filters(configured, capsys):
    _, out, _ = run(capsys, "--config", str(configured), "timeline", "--no-refresh",
                    "--since", "15m", "--source", "actions", "-o", "json")
    assert {e["source"] for e in json.loads(out)["entries"]} == {"actions"}
    _, out, _ = run(capsys, "--config", str(configured), "timeline", "--no-refresh",
                    "--since", "15m", "--source", "pg", "--grep", "PRIMARY", "-o", "json")
    assert [e["kind"] for e in json.loads(out)["entries"]] == ["role"]
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(configured), "timeline", "--source", "redis"])
    assert exited.value.code == 2
    assert "unknown source 'redis' (one of nginx, postgres, kafka, kubernetes, actions)" in \
        capsys.readouterr().err


def test_the_table_shows_hostile_text_inert_and_the_sources_age(configured, capsys):
    code, out, _ = run(capsys, "--config", str(configured), "timeline", "--no-refresh",
                       "--since", "15m")
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07[@click=app.quit]x\\u202eevil" in out
    assert out.startswith("data: ")
    assert "no observer from" in out


def test_export_writes_markdown_and_json_with_the_action_its_snapshots_and_no_secret(
        configured, tmp_path, capsys):
    out_dir = tmp_path / "bundle"
    code, out, err = run(capsys, "--config", str(configured), "incident", "export",
                         "--since", "1h", "--out", str(out_dir), "--no-refresh")
    assert code == 0, err
    assert out.split() == [str(out_dir / "incident.md"), str(out_dir / "incident.json")]
    markdown = (out_dir / "incident.md").read_text()
    data = json.loads((out_dir / "incident.json").read_text())
    for text in (markdown, (out_dir / "incident.json").read_text()):
        assert SECRET not in text and PATTERN_SECRET not in text
        assert "\x1b" not in text
    (action,) = data["actions"]
    assert action["record"]["action"] == "nginx.drain" and action["record"]["outcome"] == \
        "succeeded"
    assert [s["summary"]["health"] for s in action["snapshots"]["before"]] == ["ok"]
    assert [s["summary"]["health"] for s in action["snapshots"]["after"]] == ["degraded"]
    assert action["snapshots"]["before"][0]["status"] == {"stub": "http://monitor:***@x/"}
    assert data["alerts_at_export"] is None  # --no-refresh: not read
    assert "### nginx.drain api-2: succeeded" in markdown
    assert "- before: nginx ok — up 2/2" in markdown
    assert "- after: nginx degraded" in markdown and "api-2 drained" in markdown
    assert "api-2 up → failing: refused" in markdown
    # Outside text cannot become a link, HTML or a table cell of its own in Markdown.
    assert "\\[@click=app.quit\\]" in markdown
    assert "password=\\*\\*\\* rejected" in markdown  # *** as Markdown shows it
    assert any(e["message"] == "pg-1 primary → down: password=*** rejected"
               for e in data["timeline"])
    (out_dir / "incident.md").write_text("kept")
    code, _, err = run(capsys, "--config", str(configured), "incident", "export",
                       "--out", str(out_dir), "--no-refresh")
    assert code == 2 and "exists" in err
    assert (out_dir / "incident.md").read_text() == "kept"
    assert (out_dir / "incident.json").stat().st_mode & 0o777 == 0o600


def test_a_store_that_cannot_be_opened_is_named_with_its_key(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "state").write_text("a file where the directory should be")
    code, _, err = run(capsys, "--config", str(config), "timeline", "--no-refresh")
    assert code == 2
    assert "timeline.sqlite3 ([sfops] state_dir)" in err


def test_retention_keys_are_checked_and_named(tmp_path):
    from backends.config import ConfigError, parse

    config = parse("[sfops]\ntimeline_retention_hours = 24\ntimeline_max_events = 5000\n",
                   tmp_path / "sfops.toml")
    assert (config.sfops.timeline_retention_hours, config.sfops.timeline_max_events) == \
        (24.0, 5000)
    with pytest.raises(ConfigError) as error:
        parse("[sfops]\ntimeline_retention_hours = 0\ntimeline_max_events = 5\n",
              tmp_path / "sfops.toml")
    assert str(error.value) == (
        f"{tmp_path}/sfops.toml: sfops.timeline_retention_hours: must be > 0, got 0\n"
        f"{tmp_path}/sfops.toml: sfops.timeline_max_events: must be >= 100, got 5")
