"""Hostile text from the cluster does not drive the operator's terminal.

Terminal control sequences (OSC 0 "set the window title", CSI 2J "clear the screen"), markup,
a bidi override and 300 more characters are planted where outside text comes from: a
Kubernetes Event in the API's namespace (its message reaches "What is wrong now", the pod's
probe column and the warnings under the Kubernetes table), a pod annotation, and a Kafka
consumer group id (the groups screen lists every group). sfops runs in tmux over the lab's
SSH server, as an operator would; the real terminal is read afterwards: the pane title is
not renamed, the screen is not cleared, markup and escapes read literally, the long text is
cut.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import tomli_w

from deploy.lab import k8s
from deploy.lab import kafka as labkafka
from deploy.lab.core import LabError
from tests.e2e.tmux import TmuxSession, ssh_sfops_command

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.k8s, pytest.mark.kafka]

if shutil.which("tmux") is None:
    pytest.skip("tmux is not installed (make install installs it)", allow_module_level=True)

MARK = uuid.uuid4().hex[:6]
HOSTILE = f"\x1b]0;PWNED{MARK}\x07\x1b[2J[red]x[/red]\u202e" + "y" * 300
GROUP = f"\x1b]0;PWNED{MARK}\x07\x1b[2J[red]g[/red]\u202e" + "g" * 300
SHOWN = f"\\x1b]0;PWNED{MARK}\\x07\\x1b[2J[red]x[/red]\\u202e"  # how safe_text shows it


@pytest.fixture(scope="module")
def stack(lab: Any) -> Any:
    return lab.ensure("sshd", "kafka", "k8s")


@pytest.fixture(scope="module")
def config(stack: Any) -> Any:
    """The lab's configuration reduced to Kafka (every consumer group listed) and Kubernetes
    (the lab's read-only identity: sfops only looks here), readable by the SSH user that runs
    sfops."""
    data = tomllib.loads(stack.config_path.read_text())
    operator = pwd.getpwnam("sfops-lab")
    kubeconfig = stack.dir / "sfops" / f"hostile-{MARK}.kubeconfig"
    shutil.copyfile(k8s.readonly_kubeconfig(stack.lab), kubeconfig)
    kafka = {k: v for k, v in data["kafka"].items() if k != "consumer_groups"}
    kubernetes = {"kubeconfig": str(kubeconfig), "namespaces": [k8s.NAMESPACE]}
    path = stack.dir / "sfops" / f"hostile-{MARK}.toml"
    path.write_text(tomli_w.dumps({"sfops": data["sfops"], "kafka": kafka,
                                   "kubernetes": kubernetes}))
    for item in (path, kubeconfig):
        os.chown(item, operator.pw_uid, operator.pw_gid)
        item.chmod(0o600)
    yield path
    path.unlink(missing_ok=True)
    kubeconfig.unlink(missing_ok=True)


def kubectl(stack: Any, *args: str, input_text: str | None = None) -> str:
    return k8s.kubectl(stack.lab, *args, input_text=input_text)


@pytest.fixture(scope="module")
def planted(stack: Any) -> Any:
    """The Event, the annotation and the consumer group; removed afterwards."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    pods = json.loads(kubectl(stack, "-n", k8s.NAMESPACE, "get", "pods", "-o", "json"))["items"]
    # Not one on its way out (an old ReplicaSet's pod while the lab's Deployment settles).
    pod = next(p for p in pods if not p["metadata"].get("deletionTimestamp"))["metadata"]["name"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = f"sfops-hostile-{MARK}"
    kubectl(stack, "-n", k8s.NAMESPACE, "create", "-f", "-", input_text=json.dumps({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event, "namespace": k8s.NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": k8s.NAMESPACE},
        "reason": "BackOff", "type": "Warning", "message": HOSTILE, "count": 5,
        "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet"},
    }))
    kubectl(stack, "-n", k8s.NAMESPACE, "annotate", "pod", pod, f"sfops-test/hostile={HOSTILE}")
    client = labkafka.client_config(stack.lab)
    consumer = Consumer({**client, "group.id": GROUP,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(labkafka.APP_TOPIC, 0, 0)], asynchronous=False)
    consumer.close()
    yield pod
    kubectl(stack, "-n", k8s.NAMESPACE, "delete", "event", event, "--ignore-not-found")
    try:
        kubectl(stack, "-n", k8s.NAMESPACE, "annotate", "pod", pod, "sfops-test/hostile-")
    except LabError as exc:  # the pod may have been replaced since: nothing left to remove
        if "NotFound" not in str(exc):
            raise
    admin = AdminClient(client)
    for future in admin.delete_consumer_groups([GROUP], request_timeout=10).values():
        future.result()


@pytest.fixture
def tmux(stack: Any, config: Any) -> Any:
    session = TmuxSession(ssh_sfops_command(stack.dir, stack.port(20), config=config),
                          width=160, height=48)
    yield session
    session.kill()


def pane(session: TmuxSession, what: str) -> str:
    done = subprocess.run(["tmux", "display-message", "-p", "-t", session.name, what],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# capture-pane -e writes each cell's attributes as SGR sequences (colours, bold): nothing else.
SGR = re.compile(r"\x1b\[[0-9;:]*m")


def assert_terminal_intact(session: TmuxSession, screen: str, shown: str) -> None:
    """The terminal did not act on the hostile text: the pane kept its title, and the text
    is on the screen in its escaped, visible form ``shown`` (had ESC reached the terminal,
    tmux would have acted on the sequence and its text would not be there). The pane's
    cells hold no raw bidi override, and with their attributes (``capture-pane -e``) no
    escape sequence but tmux's own SGR."""
    print(screen)  # what the operator saw (shown with -s, or on failure)
    assert f"PWNED{MARK}" not in pane(session, "#{pane_title}")
    assert f"PWNED{MARK}" not in pane(session, "#{window_name}")
    flat = "".join(line.strip() for line in screen.splitlines())  # a wrapped cell too
    assert shown in flat, f"{shown!r} not on the screen"
    assert "\u202e" not in screen
    styled = session.screen(escapes=True)
    assert SGR.search(styled), "capture-pane -e gave no attributes: the check below is void"
    rest = SGR.sub("", styled)
    assert "\x1b" not in rest and "\x9b" not in rest and "\u202e" not in rest, repr(
        [rest[i:i + 20] for i in range(len(rest)) if rest[i] in "\x1b\x9b\u202e"][:5])


def test_hostile_event_annotation_and_group_do_not_drive_the_terminal(
        stack: Any, planted: str, tmux: TmuxSession) -> None:
    # Overview: the event is the Kubernetes warning in "What is wrong now".
    tmux.wait_for("BackOff", timeout=90)
    time.sleep(3)  # another refresh or two
    screen = tmux.screen()
    assert_terminal_intact(tmux, screen, SHOWN)
    assert "Kafka" in screen and "Kubernetes" in screen  # the panels are still drawn
    assert "y" * 250 not in screen.replace("\n", "")  # cut, not 300 characters

    # The Kubernetes screen: the table stays, the message is in the warnings under it.
    tmux.send("2")
    screen = tmux.wait_for("Kubernetes — deployments", timeout=30)
    tmux.wait_for(planted, timeout=30)
    time.sleep(3)  # another refresh or two: a clear would show now
    screen = tmux.screen()
    assert_terminal_intact(tmux, screen, f"\\x1b]0;PWNED{MARK}\\x07\\x1b[2J[red]x[/red]")
    assert planted in screen and "nodes (" in screen, screen  # the table was not cleared
    assert "[red]x[/red]" in screen and "…" in screen
    assert "y" * 250 not in "".join(line.strip() for line in screen.splitlines())
    assert "sfops-test/hostile" not in screen  # annotations are never shown

    # Kafka's consumer groups: the hostile group id, escaped and cut.
    tmux.send("Escape")
    tmux.wait_for("What is wrong now", timeout=30)
    tmux.send("1")
    tmux.wait_for("Kafka — brokers", timeout=30)
    tmux.send("g")
    tmux.wait_for("streamforge-consumer", timeout=60)
    time.sleep(3)
    screen = tmux.screen()
    assert_terminal_intact(tmux, screen, f"\\x1b]0;PWNED{MARK}\\x07")
    assert "[red]g[/red]" in screen
    assert "Kafka — consumer groups" in screen
    assert "streamforge-consumer" in screen  # the other rows are still there
    assert "g" * 200 not in screen
    tmux.send("q")
