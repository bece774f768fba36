"""sfops as a person uses it: in tmux, over a real SSH session to the lab's sshd, keys sent
with send-keys, the screen read with capture-pane."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import pytest

from tests.e2e.tmux import TmuxSession, ssh_sfops_command

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

if shutil.which("tmux") is None:
    pytest.skip("tmux is not installed (make install installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def stack(lab):
    return lab.ensure("pg", "api", "nginx", "sshd")


@pytest.fixture
def session(stack):
    sessions: list[TmuxSession] = []

    def open_session(*args: str) -> TmuxSession:
        stack.ensure("pg", "api", "nginx", "sshd")  # also hands <lab>/sfops to the SSH user
        tmux = TmuxSession(ssh_sfops_command(stack.dir, stack.port(20), *args))
        sessions.append(tmux)
        return tmux

    yield open_session
    for tmux in sessions:
        tmux.kill()


def audit_records(stack) -> list[dict]:
    path = stack.dir / "sfops" / "audit.jsonl"
    if not path.exists():
        return []
    # The final records: each action also writes a 'started' intent record before its first
    # change (its final record refers to it).
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") != "started"]


def test_overview_over_ssh_shows_nginx_then_a_failing_member(stack, session):
    tmux = session()
    tmux.wait_for("Load balancer", timeout=40)
    tmux.wait_for("3/3", timeout=30)  # all upstream members up
    try:
        stack.stop("api-2")
        screen = tmux.wait_for("api-2", timeout=30)  # the alert names the failing member
        assert "FAILED" in screen or "DEGRADED" in screen
        tmux.send("1")
        tmux.wait_for("failing", timeout=20)
    finally:
        stack.start("api-2")
    tmux.send("q")


def test_dropped_ssh_mid_drain_runs_on_headless_and_is_audited(stack, session):
    before = len(audit_records(stack))
    url = f"http://127.0.0.1:{stack.port(0)}"
    # Requests in flight keep nginx's old workers (and so the drain) busy for a while. nginx
    # never routes the API's /slow, so these are slow clients instead: each trickles its
    # body over ~6 s, and nginx holds the request in the worker that accepted it.
    def trickled_post() -> None:
        def body():
            yield b'{"pad": "'
            for _ in range(12):
                time.sleep(0.5)
                yield b"x" * 16
            yield b'"}'

        httpx.post(f"{url}/events", content=body(), timeout=30)

    slow = [threading.Thread(target=trickled_post) for _ in range(6)]
    tmux = session()
    tmux.wait_for("Load balancer", timeout=40)
    tmux.send("1")
    tmux.wait_for("api-3", timeout=20)
    time.sleep(1)  # let the table take the focus before moving its cursor
    tmux.send("Down", "Down")
    time.sleep(0.5)
    for thread in slow:
        thread.start()
    tmux.send("d")
    tmux.wait_for("to confirm", timeout=40)
    tmux.send("BTab")  # from Cancel (focused) back to the name field
    time.sleep(0.5)  # at a person's pace: each key lands before the next
    tmux.type("api-3")
    time.sleep(0.5)
    tmux.send("Enter")
    tmux.wait_for("Running", timeout=20)
    tmux.kill()  # the SSH client dies: sshd hangs up on sfops (SIGHUP)
    deadline = time.monotonic() + 90
    records: list[dict] = []
    while time.monotonic() < deadline:
        # The final record, not the 'started' intent record written before the change.
        records = [r for r in audit_records(stack)[before:] if r.get("event") != "started"]
        if records:
            break
        time.sleep(0.5)
    for thread in slow:
        thread.join()
    try:
        assert records, "no audit record after the SSH session dropped mid-drain"
        record = records[-1]
        assert (record["action"], record["target"]) == ("nginx.drain", "api-3")
        assert record["outcome"] == "succeeded", record
        upstream = (stack.dir / "nginx" / "conf.d" / "upstream.conf").read_text()
        api3 = f"127.0.0.1:{stack.port(3)}"
        line = next(line for line in upstream.splitlines() if api3 in line)
        assert " down" in line, line
        # nginx kept serving throughout
        assert httpx.get(f"{url}/nginx-health", timeout=5).status_code == 200
        # and the sfops process is gone (it exits once the action finished)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = subprocess.run(["pgrep", "-u", "sfops-lab", "-f", "sfops --config"],
                                  capture_output=True, text=True, check=False)
            if left.stdout.strip() == "":
                break
            time.sleep(0.5)
        assert left.stdout.strip() == "", "sfops did not exit after its headless action"
    finally:
        done = stack.sfops("nginx", "undrain", "api-3", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr


def test_kafka_drain_and_undrain_by_keyboard_over_ssh(stack, session):
    stack.ensure("kafka")
    elect = stack.sfops("kafka", "elect-leaders", "--yes", timeout=120)
    assert elect.returncode == 0, elect.stdout + elect.stderr
    before = len(audit_records(stack))
    tmux = session()
    tmux.wait_for("Kafka", timeout=60)
    tmux.send("3")  # panels: nginx, PostgreSQL, Kafka, Kubernetes
    tmux.wait_for("Broker", timeout=30)
    time.sleep(1)
    tmux.send("Down")  # broker 2
    time.sleep(0.5)
    for key, label in (("d", "drain"), ("u", "undrain")):
        tmux.send(key)
        screen = tmux.wait_for("Preflight checks", timeout=60)
        time.sleep(0.5)
        if "to confirm" in screen:  # destructive: type the target
            tmux.send("BTab")
            time.sleep(0.5)
            tmux.type("2")
            time.sleep(0.5)
            tmux.send("Enter")
        else:
            tmux.send("Tab")  # Cancel has the focus; move to Confirm
            time.sleep(0.5)
            tmux.send("Enter")
        tmux.wait_for("[Enter] close", timeout=180)
        screen = tmux.screen()
        assert "succeeded" in screen, f"{label} did not succeed:\n{screen}"
        tmux.send("Enter")
        time.sleep(1)
    tmux.send("q")
    records = audit_records(stack)[before:]
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("kafka.drain", "2", "succeeded"),
        ("kafka.undrain", "2", "succeeded"),
    ], records



def _pg_over_ssh_config(stack):
    """A copy of the lab's sfops.toml whose PostgreSQL members' host steps go over SSH as
    their OS user (`lab-ssh-postgres`), as on real DB hosts: sfops runs as sfops-lab here and
    cannot touch postgres's 0700 data directories through the local executor."""
    import os
    import pwd
    import tomllib

    import tomli_w

    config = tomllib.loads(stack.config_path.read_text())
    assert "lab-ssh-postgres" in config["executors"], "lab sshd config predates the pg executor"
    for member in config["postgres"]["members"].values():
        member["executor"] = "lab-ssh-postgres"
    path = stack.dir / "sfops" / "sfops-pg-over-ssh.toml"
    path.write_text(tomli_w.dumps(config))
    entry = pwd.getpwnam("sfops-lab")
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o644)
    return path, config


def _pg_row(screen: str, member: str) -> str:
    return next((line for line in screen.splitlines() if line.strip().startswith(member)), "")


def test_pg_failover_by_keyboard_over_ssh(stack):
    import shlex
    from pathlib import Path

    from tests.integration.test_pg import reset_pg, sql

    reset_pg(stack)
    stack.ensure("pg", "api", "nginx", "sshd")  # also hands <lab>/sfops to the SSH user
    path, config = _pg_over_ssh_config(stack)
    command = ssh_sfops_command(stack.dir, stack.port(20))
    command[-1] = shlex.join([shlex.split(command[-1])[0], "--config", str(path)])
    tmux = TmuxSession(command)
    try:
        tmux.wait_for("PostgreSQL", timeout=60)
        tmux.send("2")  # panels: nginx, PostgreSQL, Kafka, Kubernetes
        tmux.wait_for("PostgreSQL — members", timeout=30)

        def wait_row(member: str, shown: bool, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ("primary" in _pg_row(tmux.screen(), member)) is shown:
                    return
                time.sleep(0.2)
            raise AssertionError(f"{member} primary={shown} not shown:\n{tmux.screen()}")

        wait_row("pg-1", True)
        stack.stop("pg-1", kill=True)
        wait_row("pg-1", False)  # the screen has seen the primary go
        time.sleep(0.5)
        tmux.send("Down")  # pg-2
        time.sleep(0.5)
        tmux.send("f")
        screen = tmux.wait_for("to confirm", timeout=90)
        assert "Preflight checks" in screen, screen
        time.sleep(0.5)
        tmux.send("BTab")  # from Cancel (focused) back to the name field
        time.sleep(0.5)
        tmux.type("pg-2")
        time.sleep(0.5)
        tmux.send("Enter")
        screen = tmux.wait_for("[Enter] close", timeout=180)
        assert "succeeded" in screen, f"failover did not succeed:\n{screen}"
        tmux.send("Enter")
        wait_row("pg-2", True)
        tmux.send("q")

        assert sql(stack, "pg-2", "SELECT pg_is_in_recovery()")[0][0] is False
        record = audit_records(stack)[-1]
        assert (record["action"], record["target"], record["outcome"]) == (
            "pg.failover", "pg-2", "succeeded"), record
        # Fenced over SSH as postgres: a restart of pg-1 comes up as a standby.
        data_dir = Path(config["postgres"]["members"]["pg-1"]["data_dir"])
        assert (data_dir / "standby.signal").exists(), "pg-1 not fenced by configuration"
    finally:
        tmux.kill()
        reset_pg(stack)


def _k8s_over_ssh_config(stack):
    """A copy of the lab's sfops.toml for the operator user: the Kubernetes identity is the
    lab's `sfops-operator` ServiceAccount (only the verbs sfops's actions need), in a
    kubeconfig the SSH user can read."""
    import os
    import pwd
    import shutil as _shutil
    import tomllib

    import tomli_w

    config = tomllib.loads(stack.config_path.read_text())
    entry = pwd.getpwnam("sfops-lab")
    kubeconfig = stack.dir / "sfops" / "operator.kubeconfig"
    _shutil.copyfile(config["kubernetes"]["operator_kubeconfig"], kubeconfig)
    os.chown(kubeconfig, entry.pw_uid, entry.pw_gid)
    kubeconfig.chmod(0o600)
    config["kubernetes"]["kubeconfig"] = str(kubeconfig)
    path = stack.dir / "sfops" / "sfops-k8s-over-ssh.toml"
    path.write_text(tomli_w.dumps(config))
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o644)
    return path


def test_k8s_rollout_restart_by_keyboard_over_ssh(stack):
    import shlex

    stack.ensure("k8s", "sshd")
    path = _k8s_over_ssh_config(stack)
    before = len(audit_records(stack))
    command = ssh_sfops_command(stack.dir, stack.port(20))
    command[-1] = shlex.join([shlex.split(command[-1])[0], "--config", str(path)])
    tmux = TmuxSession(command)
    try:
        tmux.wait_for("Kubernetes", timeout=60)
        tmux.send("4")  # panels: nginx, PostgreSQL, Kafka, Kubernetes
        tmux.wait_for("streamforge-api", timeout=60)
        time.sleep(1)
        tmux.send("R")  # the first row is the Deployment
        screen = tmux.wait_for("Preflight checks", timeout=90)
        time.sleep(0.5)
        if "to confirm" in screen:  # destructive: type the target
            tmux.send("BTab")
            time.sleep(0.5)
            tmux.type("streamforge-api")
            time.sleep(0.5)
            tmux.send("Enter")
        else:
            tmux.send("Tab")
            time.sleep(0.5)
            tmux.send("Enter")
        screen = tmux.wait_for("[Enter] close", timeout=240)
        assert "succeeded" in screen, f"restart did not succeed:\n{screen}"
        tmux.send("Enter")
        time.sleep(0.5)
        tmux.send("q")
    finally:
        tmux.kill()
    records = audit_records(stack)[before:]
    assert records, "no audit record for the restart"
    record = records[-1]
    assert record["action"].startswith("k8s.") and "restart" in record["action"], record
    assert record["outcome"] == "succeeded", record
    assert record["user"] == "sfops-lab", record
