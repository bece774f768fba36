"""A marker secret planted in every place a secret can come from appears nowhere sfops writes.

Against the lab's real PostgreSQL pair: the ``sfops`` role's real password is the marker
(given through ``password_env``), pg-2's real ``primary_conninfo`` carries ``password=`` the
marker (ALTER SYSTEM + reload, as a standby made by ``pg_basebackup -R`` with a password
would), nginx's status and probe URLs carry it as userinfo, a kubeconfig carries it as the
token, and a hostile HTTP server echoes the credentials it receives back in its error bodies.
Then every output is searched: CLI text and JSON, forced errors (wrong password, a refusing
URL), TUI screens and notifications, the audit log and state directory, and the environment
and command line of every process on the machine, the postmaster that `sfops pg rejoin`
started through ``pg_ctl`` included. Everything is put back at the end.

Not covered because sfops has no such setting: an SSH key passphrase (the SSH executor takes
unencrypted keys or an agent). Not planted here: the Kafka SASL password (the lab's Kafka
section is left out); tests/integration/test_kafka_security.py checks that a wrong one shows
nowhere in `sfops kafka status` / drain output, and it reaches the admin worker over its
socket pair, never the environment or command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w
from psycopg import sql as pgsql

from deploy.lab import postgres as lab_postgres
from deploy.lab.core import LabError
from tests.integration.test_pg import member, reset_pg, sql, streams_from, wait_for

pytestmark = pytest.mark.integration

MARKER = "SFOPS-MARKER-SECRET-7f3a"
PW_ENV = "SFOPS_TEST_MARKER_PG_PASSWORD"
REPO = Path(__file__).resolve().parents[2]


class _Echo(BaseHTTPRequestHandler):
    """A hostile server: refuses everything and quotes the credentials it was sent."""

    def do_GET(self) -> None:
        body = json.dumps({"kind": "Status", "reason": "Unauthorized",
                           "message": f"credentials {self.headers.get('Authorization')} "
                                      f"refused for {self.path}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _write_config(lab: Any, directory: Path, echo: str) -> Path:
    data = tomllib.loads(lab.config_path.read_text())
    state = directory / "state"
    data["sfops"].update(audit_log=str(state / "audit.jsonl"), state_dir=str(state))
    data["postgres"].pop("password_file")
    data["postgres"]["password_env"] = PW_ENV
    # One identity (``user``, its password from the environment: the marker) for the polls
    # and the actions alike, so every PostgreSQL connection sfops makes carries the marker.
    for key in ("readonly_user", "readonly_password_file", "operator_user",
                "operator_password_file"):
        data["postgres"].pop(key, None)
    data.pop("kafka", None)
    data["nginx"] = {
        "executor": "local",
        "config_file": str(directory / "nginx.conf"),
        "upstream_name": "api",
        "upstream_file": str(directory / "upstream.conf"),
        "stub_status_url": f"http://admin:{MARKER}-url@{echo}/nginx_status",
        "members": {"api-1": {"address": "127.0.0.1:1",
                              "health_url": f"http://probe:{MARKER}-probe@{echo}/health"}},
    }
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "echo",
        "clusters": [{"name": "echo", "cluster": {"server": f"http://{echo}"}}],
        "users": [{"name": "u", "user": {"token": f"{MARKER}-token"}}],
        "contexts": [{"name": "echo", "context": {"cluster": "echo", "user": "u"}}],
    }))
    data["kubernetes"] = {"kubeconfig": str(kubeconfig), "namespaces": ["default"]}
    path = directory / "sfops.toml"
    path.write_text(tomli_w.dumps(data))
    return path


class Planted:
    def __init__(self, lab: Any, config: Path, directory: Path) -> None:
        self.lab, self.config, self.directory = lab, config, directory
        self.env = {**os.environ, PW_ENV: f"{MARKER}-env"}

    def sfops(self, *args: str, password: str | None = None,
              timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = self.env if password is None else {**self.env, PW_ENV: password}
        return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(self.config),
                               *args], capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, env=env, check=False)


def _set_role_password(lab: Any, password: str) -> None:
    sql(lab, "pg-1", pgsql.SQL("ALTER ROLE sfops PASSWORD {}").format(pgsql.Literal(password)))


def _set_conninfo(lab: Any, conninfo: str) -> None:
    sql(lab, "pg-2", pgsql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
        pgsql.Literal(conninfo)))
    sql(lab, "pg-2", "SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def pg_pair(lab: Any) -> Iterator[Any]:
    try:
        lab.ensure("pg")
    except LabError:
        for name in ("pg-1", "pg-2"):  # pg-1 is not the primary (an earlier run)
            if not lab.running(name):
                lab.start(name)
    reset_pg(lab)
    yield lab
    reset_pg(lab)


@pytest.fixture(scope="module")
def planted(pg_pair: Any, echo_server: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Planted]:
    lab = pg_pair
    directory = tmp_path_factory.mktemp("marker")
    real_password = lab_postgres.secret_path(lab.lab, "sfops").read_text().strip()
    original_conninfo = sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]
    assert MARKER not in original_conninfo
    try:
        _set_role_password(lab, f"{MARKER}-env")
        _set_conninfo(lab, f"{original_conninfo} password={MARKER}-conninfo")
        assert MARKER in sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]
        yield Planted(lab, _write_config(lab, directory, echo_server), directory)
    finally:
        _set_role_password(lab, real_password)
        if lab.running("pg-2"):
            try:
                if MARKER in sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]:
                    _set_conninfo(lab, original_conninfo)
            except psycopg.Error:
                pass


def _no_marker(what: str, text: str) -> None:
    assert MARKER not in text, f"{what} shows the marker:\n{text}"


def test_cli_outputs_and_forced_errors_show_no_secret(planted: Planted) -> None:
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for args in (("pg", "status", "--json"), ("pg", "status"), ("pg", "status", "-o", "yaml"),
                 ("status", "-o", "json"), ("status",), ("nginx", "status", "--json"),
                 ("k8s", "status", "--json", "--timeout", "10"),
                 ("pg", "rejoin", "pg-2", "--dry-run"),
                 ("pg", "rejoin", "pg-2", "--dry-run", "--json")):
        done = planted.sfops(*args)
        outputs[" ".join(args)] = done
        _no_marker(f"sfops {' '.join(args)}", done.stdout + done.stderr)

    # The marker really is what sfops read: pg-2's conninfo with its password redacted...
    data = json.loads(outputs["pg status --json"].stdout)
    assert data["reachable"] is True, data
    conninfo = member(data["status"], "pg-2")["primary_conninfo"]
    assert "password=***" in conninfo and "user=replicator" in conninfo, conninfo
    # ...the refusing server's error, its URL redacted...
    nginx = json.loads(outputs["nginx status --json"].stdout)
    assert nginx["reachable"] is False and "admin:***@" in nginx["error"], nginx
    # ...and the Kubernetes API server's refusal (it echoed the token back).
    k8s = outputs["k8s status --json --timeout 10"]
    assert "401" in k8s.stdout + k8s.stderr or "Unauthorized" in k8s.stdout + k8s.stderr, (
        k8s.stdout + k8s.stderr)

    # Forced error: a wrong password (itself a marker) is named nowhere either.
    for args in (("pg", "status", "--json"), ("pg", "status")):
        done = planted.sfops(*args, password=f"{MARKER}-wrong")
        output = done.stdout + done.stderr
        assert done.returncode == 5 and "password authentication failed" in output, output
        _no_marker(f"wrong password: sfops {' '.join(args)}", output)


async def test_tui_screens_and_notifications_show_no_secret(
        planted: Planted, monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.config import load
    from backends.services import build_services
    from tests.ui.helpers import screen_text
    from tests.ui.helpers import wait_for as ui_wait
    from tui.app import SfopsApp

    monkeypatch.setenv(PW_ENV, f"{MARKER}-env")
    config = load(planted.config)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    app = SfopsApp(config, build_services(config), runner=runner, config_path=planted.config)
    captures: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await ui_wait(pilot, lambda: app.last_snapshot("postgres") is not None
                      and app.last_snapshot("nginx") is not None, timeout=30,
                      what="a poll of postgres and nginx")
        captures += [screen_text(pilot), app.export_screenshot()]
        for name in ("postgres", "nginx", "kubernetes"):
            app.open_backend(name)
            await pilot.pause(1.0)
            captures += [screen_text(pilot), app.export_screenshot()]
            app.pop_screen()
        # A notification quoting a server's answer verbatim is redacted as it is shown.
        app.notify(f"server said {MARKER}-env", markup=False)
        await pilot.pause(0.2)
        captures += [screen_text(pilot), app.export_screenshot()]
        notes = [f"{n.title} {n.message}" for n in app._notifications]
    for index, text in enumerate([*captures, *notes]):
        _no_marker(f"TUI capture {index}", text)


def _proc_texts() -> Iterator[tuple[int, str, str]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for kind in ("environ", "cmdline"):
            try:
                raw = (entry / kind).read_bytes()
            except OSError:
                continue
            yield int(entry.name), kind, raw.replace(b"\0", b" ").decode("utf-8", "replace")


def test_a_rejoin_starts_a_postmaster_without_the_secret_and_writes_none(
        planted: Planted) -> None:
    lab = planted.lab
    lab.stop("pg-2")
    done = planted.sfops("pg", "rejoin", "pg-2", "--yes", "--json")
    _no_marker("sfops pg rejoin", done.stdout + done.stderr)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["outcome"] == "succeeded", (done.stdout, done.stderr)

    data_dir = Path(lab.config().postgres.members["pg-2"].data_dir)
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    environ = Path(f"/proc/{postmaster}/environ").read_bytes().decode("utf-8", "replace")
    assert environ, "the postmaster's environment is empty or unreadable"
    _no_marker("the postmaster's environment", environ)
    assert PW_ENV not in environ
    # Every process on this host: environment and command line.
    for pid, kind, text in _proc_texts():
        _no_marker(f"/proc/{pid}/{kind}", text)
    # The rejoined standby streams again: its new conninfo took no password from the old.
    conninfo = sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]
    assert "password" not in conninfo, conninfo

    # The audit log and everything else sfops keeps.
    state = planted.directory / "state"
    audit = (state / "audit.jsonl").read_text()
    assert "pg.rejoin" in audit
    for path in [p for p in state.rglob("*") if p.is_file()]:
        _no_marker(str(path), path.read_text(errors="replace"))
    done = planted.sfops("audit", "--json")
    _no_marker("sfops audit --json", done.stdout + done.stderr)
    wait_for(lambda: streams_from(_status(planted), "pg-2", "pg-1"), 60,
             "pg-2 streaming from pg-1 after the rejoin")


def _status(planted: Planted) -> dict[str, Any]:
    done = planted.sfops("pg", "status", "--json")
    _no_marker("sfops pg status --json", done.stdout + done.stderr)
    result: dict[str, Any] = json.loads(done.stdout)["status"]
    return result
