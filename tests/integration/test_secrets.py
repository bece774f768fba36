"""A marker secret planted in every place a secret can come from appears nowhere sfops writes.

Against the lab's real PostgreSQL pair, three configurations in turn, each giving the roles
sfops really connects as a marker as their real password (ALTER ROLE), through a different
source: ``password_env`` (one identity, ``sfops``, for the polls and the actions alike), an
inline ``password = "…"`` (the polls' role ``sfops_monitor``, as ``user``; the operator
``sfops`` from ``operator_password_file``), and ``password_file`` (the operator ``sfops``, as
``user``; the polls' ``sfops_monitor`` from an inline ``readonly_password``). Polls that answer
and a rejoin that succeeds prove each marker was the password used. In each, pg-2's real
``primary_conninfo`` carries ``password=`` a marker (ALTER SYSTEM + reload, as a standby made
by ``pg_basebackup -R`` with a password would), nginx's status and probe URLs carry one as
userinfo, a kubeconfig carries one as the token (the actions' Lease lock sends it too), the
Kafka section one as its SASL password (no broker answers: it reaches the admin worker, over
its socket pair), and a hostile HTTP server echoes the credentials it receives back in its
error bodies. Then every output is searched: CLI text and JSON, forced errors (wrong
passwords, a refusing URL), TUI screens and notifications, the audit log and state directory,
and the environment and command line of every process on the machine — sampled every few
tens of milliseconds while sfops runs (:class:`ProcSampler`: the short-lived children —
``pg_ctl``, ``pg_rewind``, the lock holder, the Kafka worker — included), and once more after
it exited, the postmaster that `sfops pg rejoin` started through ``pg_ctl`` included.
Everything is put back at the end.

The marker is new for every run (a second checkout running this test at the same time plants
its own). Not covered because sfops has no such setting: an SSH key passphrase (the SSH
executor takes unencrypted keys or an agent); the lab's members use the local executor, so no
``ssh`` child runs here. tests/integration/test_kafka_security.py checks against a real SASL
listener that a wrong Kafka password shows nowhere in `sfops kafka status` / drain output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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

MARKER = f"SFOPS-MARKER-SECRET-{uuid.uuid4().hex[:8]}"
PW_ENV = "SFOPS_TEST_MARKER_PG_PASSWORD"
REPO = Path(__file__).resolve().parents[2]
# The Kafka admin worker's command line (backends/kafka/worker.py): `python -c CODE FD`.
KAFKA_WORKER = "backends.kafka.worker"


class _Echo(BaseHTTPRequestHandler):
    """A hostile server: refuses everything and quotes the credentials it was sent."""

    def do_GET(self) -> None:
        body = json.dumps({"kind": "Status", "reason": "Unauthorized",
                           "message": f"credentials {self.headers.get('Authorization')} "
                                      f"refused for {self.path}"}).encode()
        try:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a timeout). Quietly: the server's traceback printing
            # (3.11's ast.parse of each line, in this thread) can race the main thread's
            # compile — "SystemError: AST constructor recursion depth mismatch".
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# --------------------------------------------------------------------------- processes


@dataclass
class ProcSampler:
    """A thread that reads every readable ``/proc/<pid>/environ`` and ``cmdline`` every
    ``interval`` seconds, remembering each process whose environment or command line held
    ``needle`` (with its command line), and every command line it saw (to show that it saw
    the short-lived children at all).

    ``exempt``: command lines (argv prefixes) of the processes the test itself starts with
    the secret in their environment — sfops, given ``password_env`` as an operator would. A
    process with such a command line is that sfops, or a fork of it not yet exec'd (its
    memory is still sfops's); one with any other command line is a child that got the
    secret. Only their environment is exempt: never their command line."""

    needle: str
    interval: float = 0.03
    exempt: list[list[str]] = field(default_factory=list)
    hits: dict[int, tuple[str, str]] = field(default_factory=dict)
    seen: dict[int, str] = field(default_factory=dict)
    scans: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self._own = os.getpid()

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        needle = self.needle.encode()
        while True:
            self.scan(needle)
            self.scans += 1
            if self._stop.wait(self.interval):
                self.scan(needle)  # once more: what ran until the very end
                return

    def scan(self, needle: bytes) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self._own:
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    raw_cmdline = file.read()
                with open(f"/proc/{pid}/environ", "rb") as file:
                    environ = file.read()
            except OSError:  # gone already, or not readable
                continue
            argv = [a.decode("utf-8", "replace") for a in raw_cmdline.split(b"\0")[:-1]]
            cmdline = " ".join(argv)
            if cmdline:
                self.seen.setdefault(pid, cmdline)
            if needle in raw_cmdline:
                self.hits[pid] = ("cmdline", cmdline)
            elif needle in environ and not any(argv[:len(p)] == p for p in self.exempt):
                self.hits[pid] = ("environ", cmdline)

    def saw(self, text: str) -> bool:
        return any(text in cmdline for cmdline in self.seen.values())

    def assert_clean(self) -> None:
        self.stop()
        assert self.scans > 0, "the sampler never scanned /proc"
        leaks = [f"pid {pid} ({kind}): {cmdline}" for pid, (kind, cmdline) in self.hits.items()]
        assert not leaks, "processes held the marker:\n" + "\n".join(leaks)


@pytest.fixture
def sampler(planted: Planted) -> Iterator[ProcSampler]:
    exempt = [planted.argv(), planted.argv(planted.wrong_config)]
    with ProcSampler(MARKER, exempt=exempt) as running:
        yield running
    # What it saw, shown with -s or on a failure: the children it proved clean.
    names = sorted({c.split(" ", 1)[0].rsplit("/", 1)[-1] for c in running.seen.values()})
    print(f"sampler: {running.scans} scans, {len(running.seen)} processes: {names}")


# --------------------------------------------------------------------------- planting


@dataclass(frozen=True)
class Variant:
    """Where the PostgreSQL passwords come from: the ``[postgres]`` keys (beyond the lab's
    members and TLS) and the real password each role gets (a marker) for the run."""

    name: str
    keys: dict[str, Any]
    roles: dict[str, str]  # role -> its password during the run
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> content


def _variant(name: str, directory: Path, wrong: bool = False) -> Variant:
    suffix = "-wrong" if wrong else ""
    if name == "env":
        # One identity (``user``, its password from the environment) for the polls and the
        # actions alike, so every PostgreSQL connection sfops makes carries the marker.
        return Variant(name, {"user": "sfops", "password_env": PW_ENV},
                       {"sfops": f"{MARKER}-env"}, env={PW_ENV: f"{MARKER}-env{suffix}"})
    if name == "inline":
        # The polls' role as ``user`` with an inline password; the operator from a file.
        return Variant(name, {
            "user": "sfops_monitor", "password": f"{MARKER}-inline{suffix}",
            "operator_user": "sfops",
            "operator_password_file": str(directory / f"operator{suffix}.password"),
        }, {"sfops_monitor": f"{MARKER}-inline", "sfops": f"{MARKER}-operator-file"},
            files={f"operator{suffix}.password": f"{MARKER}-operator-file{suffix}\n"})
    assert name == "file"
    # The lab's own shape: the operator as ``user`` from ``password_file``; the polls' role
    # with an inline ``readonly_password``.
    return Variant(name, {
        "user": "sfops", "password_file": str(directory / f"sfops{suffix}.password"),
        "readonly_user": "sfops_monitor", "readonly_password": f"{MARKER}-readonly{suffix}",
    }, {"sfops": f"{MARKER}-file", "sfops_monitor": f"{MARKER}-readonly"},
        files={f"sfops{suffix}.password": f"{MARKER}-file{suffix}\n"})


def _write_config(lab: Any, directory: Path, echo: str, variant: Variant,
                  name: str = "sfops.toml") -> Path:
    data = tomllib.loads(lab.config_path.read_text())
    state = directory / "state"
    data["sfops"].update(audit_log=str(state / "audit.jsonl"), state_dir=str(state))
    for key in ("user", "password_file", "readonly_user", "readonly_password_file",
                "operator_user", "operator_password_file"):
        data["postgres"].pop(key, None)
    data["postgres"].update(variant.keys)
    for file_name, content in variant.files.items():
        path = directory / file_name
        path.write_text(content)
        path.chmod(0o600)
    data["kafka"] = {  # no broker answers: the marker reaches the admin worker, no further
        "bootstrap_servers": "127.0.0.1:1", "request_timeout": 2.0,
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_username": "sfops", "sasl_password": f"{MARKER}-sasl",
    }
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
    path = directory / name
    path.write_text(tomli_w.dumps(data))
    return path


class Planted:
    def __init__(self, lab: Any, directory: Path, echo: str, variant: str) -> None:
        self.lab, self.directory, self.variant = lab, directory, variant
        self.right = _variant(variant, directory)
        self.wrong = _variant(variant, directory, wrong=True)
        self.config = _write_config(lab, directory, echo, self.right)
        self.wrong_config = _write_config(lab, directory, echo, self.wrong, "sfops-wrong.toml")

    def argv(self, config: Path | None = None) -> list[str]:
        """How the test starts sfops (the sampler exempts its own environment)."""
        return [sys.executable, "-m", "tui.cli", "--config", str(config or self.config)]

    def sfops(self, *args: str, wrong: bool = False,
              timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """`sfops ARGS` as an operator runs it; ``wrong``: every PostgreSQL password wrong
        (itself a marker), from the same sources."""
        variant, config = (self.wrong, self.wrong_config) if wrong else (self.right,
                                                                         self.config)
        return subprocess.run(self.argv(config) + list(args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env={**os.environ, **variant.env},
                              check=False)


def _set_role_password(lab: Any, role: str, password: str) -> None:
    sql(lab, "pg-1", pgsql.SQL("ALTER ROLE {} PASSWORD {}").format(
        pgsql.Identifier(role), pgsql.Literal(password)))


def _set_conninfo(lab: Any, conninfo: str) -> None:
    sql(lab, "pg-2", pgsql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
        pgsql.Literal(conninfo)))
    sql(lab, "pg-2", "SELECT pg_reload_conf()")


def _real_password(lab: Any, role: str) -> str:
    return lab_postgres.secret_path(lab.lab, role).read_text().strip()


@pytest.fixture(scope="module")
def pg_pair(lab: Any) -> Iterator[Any]:
    try:
        lab.ensure("pg")
    except LabError:
        for name in ("pg-1", "pg-2"):  # pg-1 is not the primary (an earlier run)
            if not lab.running(name):
                lab.start(name)
    reset_pg(lab)
    try:
        yield lab
    finally:
        for role in ("sfops", "sfops_monitor"):  # whatever a variant left
            _set_role_password(lab, role, _real_password(lab, role))
        reset_pg(lab)


@pytest.fixture(scope="module", params=["env", "inline", "file"])
def planted(request: pytest.FixtureRequest, pg_pair: Any, echo_server: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planted]:
    lab = pg_pair
    directory = tmp_path_factory.mktemp(f"marker-{request.param}")
    if not streams_from(_lab_status(lab), "pg-2", "pg-1"):
        reset_pg(lab)  # an earlier variant's rejoin left it catching up
    original_conninfo = sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]
    assert MARKER not in original_conninfo
    planted = Planted(lab, directory, echo_server, request.param)
    try:
        for role, password in planted.right.roles.items():
            _set_role_password(lab, role, password)
        _set_conninfo(lab, f"{original_conninfo} password={MARKER}-conninfo")
        assert MARKER in sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]
        yield planted
    finally:
        # The lab's own passwords again (its status and actions use them), then its conninfo.
        for role in planted.right.roles:
            _set_role_password(lab, role, _real_password(lab, role))
        if lab.running("pg-2"):
            try:
                if MARKER in sql(lab, "pg-2", "SHOW primary_conninfo")[0][0]:
                    _set_conninfo(lab, original_conninfo)
            except psycopg.Error:
                pass


def _lab_status(lab: Any) -> dict[str, Any]:
    from tests.integration.test_pg import status

    return status(lab)


def _no_marker(what: str, text: str) -> None:
    assert MARKER not in text, f"{what} shows the marker:\n{text}"


def test_cli_outputs_and_forced_errors_show_no_secret(planted: Planted,
                                                     sampler: ProcSampler) -> None:
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for args in (("pg", "status", "--json"), ("pg", "status"), ("pg", "status", "-o", "yaml"),
                 ("status", "-o", "json"), ("status",), ("nginx", "status", "--json"),
                 ("k8s", "status", "--json", "--timeout", "10"), ("kafka", "status", "--json"),
                 ("pg", "rejoin", "pg-2", "--dry-run"),
                 ("pg", "rejoin", "pg-2", "--dry-run", "--json")):
        done = planted.sfops(*args)
        outputs[" ".join(args)] = done
        _no_marker(f"sfops {' '.join(args)}", done.stdout + done.stderr)

    # The marker really is what sfops read: the polls connected with it (it is the role's
    # password now), and pg-2's conninfo shows with its password redacted...
    data = json.loads(outputs["pg status --json"].stdout)
    assert data["reachable"] is True, data
    conninfo = member(data["status"], "pg-2")["primary_conninfo"]
    assert "password=***" in conninfo and "user=replicator" in conninfo, conninfo
    # ...the refusing server's error, its URL redacted...
    nginx = json.loads(outputs["nginx status --json"].stdout)
    assert nginx["reachable"] is False and "admin:***@" in nginx["error"], nginx
    # ...the Kubernetes API server's refusal (it echoed the token back)...
    k8s = outputs["k8s status --json --timeout 10"]
    assert "401" in k8s.stdout + k8s.stderr or "Unauthorized" in k8s.stdout + k8s.stderr, (
        k8s.stdout + k8s.stderr)
    # ...and Kafka, which no broker answers (its worker got the SASL password).
    kafka = json.loads(outputs["kafka status --json"].stdout)
    assert kafka["reachable"] is False, kafka

    # Forced error: wrong passwords (themselves markers) are named nowhere either.
    for args in (("pg", "status", "--json"), ("pg", "status")):
        done = planted.sfops(*args, wrong=True)
        output = done.stdout + done.stderr
        assert done.returncode == 5 and "password authentication failed" in output, output
        _no_marker(f"wrong password: sfops {' '.join(args)}", output)

    # No process held the marker while these ran: not the Kafka admin worker either.
    sampler.assert_clean()
    assert sampler.saw(KAFKA_WORKER), "the sampler never saw the Kafka admin worker"


async def test_tui_screens_and_notifications_show_no_secret(
        planted: Planted, sampler: ProcSampler, monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.actions import ActionRunner
    from backends.audit import AuditLog
    from backends.config import load
    from backends.services import build_services
    from tests.ui.helpers import screen_text
    from tests.ui.helpers import wait_for as ui_wait
    from tui.app import SfopsApp

    for name, value in planted.right.env.items():
        monkeypatch.setenv(name, value)
    config = load(planted.config)
    runner = ActionRunner(AuditLog(config.sfops.audit_log), secrets=config.secrets())
    app = SfopsApp(config, build_services(config), runner=runner, config_path=planted.config)
    captures: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await ui_wait(pilot, lambda: app.last_snapshot("postgres") is not None
                      and app.last_snapshot("nginx") is not None
                      and app.last_snapshot("kafka") is not None, timeout=30,
                      what="a poll of postgres, nginx and kafka")
        captures += [screen_text(pilot), app.export_screenshot()]
        for name in ("postgres", "nginx", "kubernetes", "kafka"):
            app.open_backend(name)
            await pilot.pause(1.0)
            captures += [screen_text(pilot), app.export_screenshot()]
            app.pop_screen()
        # A notification quoting a server's answer verbatim is redacted as it is shown.
        password = next(iter(planted.right.roles.values()))
        app.notify(f"server said {password}", markup=False)
        await pilot.pause(0.2)
        captures += [screen_text(pilot), app.export_screenshot()]
        notes = [f"{n.title} {n.message}" for n in app._notifications]
    for index, text in enumerate([*captures, *notes]):
        _no_marker(f"TUI capture {index}", text)
    sampler.assert_clean()  # the app's children (the Kafka worker) included


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
        planted: Planted, sampler: ProcSampler) -> None:
    lab = planted.lab
    lab.stop("pg-2")
    # pg_ctl (status, start), pg_controldata, pg_rewind (the operator identity's password in
    # a passfile) and the host lock's holder run while the sampler looks.
    done = planted.sfops("pg", "rejoin", "pg-2", "--yes", "--json")
    _no_marker("sfops pg rejoin", done.stdout + done.stderr)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["outcome"] == "succeeded", (done.stdout, done.stderr)
    sampler.assert_clean()
    assert sampler.saw("sfops-lock"), "the sampler never saw the lock holder"

    data_dir = Path(lab.config().postgres.members["pg-2"].data_dir)
    # pg_rewind's passfile (and any copied TLS file) beside the data directory is gone.
    left = sorted(p.name for p in data_dir.parent.glob(".pg-2.sfops-rewind*"))
    assert not left, f"pg_rewind's temporary files left beside {data_dir}: {left}"
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
