"""Lab Kafka: kafka-1..3, a three-node Apache Kafka cluster in KRaft combined mode, and
kafka-consumer, a consumer group that reads the application topic so consumer lag is real.

Each node is broker and controller (``process.roles=broker,controller``); the three are the
static quorum voters. The jars come from Maven Central through ``deploy/lab/install/kafka.sh``
(resolved once per machine into a versioned cache) and run as ``java -cp libs/* kafka.Kafka``.
Storage is formatted once per node with one cluster id kept in ``<lab>/kafka/cluster-id``.

Ports: ``lab.port(30..32)`` client (SASL_SSL), ``lab.port(35..37)`` controller, all on
127.0.0.1. Broker logs (log4j2) stay under ``<lab>/kafka/<node>/logs``; warnings and errors also
go to ``<lab>/logs/<node>.log``.

Secured by default, so every test goes through the paths a production cluster needs: the
client listener is SASL_SSL — TLS with a server certificate from the lab's service CA
(deploy/lab/tls.py, a PEM keystore) and SCRAM-SHA-512 logins. The brokers replicate over
that same listener as user ``broker``. Users and their random per-lab passwords
(``<lab>/secrets/kafka-<user>``, 0600): ``broker`` (replication, and the lab's own checks and
tests), ``sfops`` (the lab's sfops configuration), ``streamforge`` (the API's producer and
the lab consumer). The SCRAM credentials are written at storage format time
(``kafka-storage format --add-scram``), so they exist before any broker serves a request;
a node formatted with other credentials (an older, unsecured lab) is re-formatted — lab data
only. The controller listener stays PLAINTEXT on 127.0.0.1: only the three nodes use it (no
client, no sfops), it never leaves loopback, and KRaft controller SASL would add a second set
of JAAS settings for no path sfops exercises. No authorizer runs: every authenticated user may
do everything (ACLs are not part of what sfops manages).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.lab import tls
from deploy.lab.core import Component, Lab, LabError, port_in_use, run, write_atomic

# Pinned together with deploy/kafka/pom.xml and deploy/lab/install/kafka.sh.
KAFKA_VERSION = "4.4.0"

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "deploy" / "lab" / "install" / "kafka.sh"

GROUP = "kafka"
NODES = {"kafka-1": 1, "kafka-2": 2, "kafka-3": 3}  # name -> node.id
CLIENT_OFFSET = 29  # + node id -> 30, 31, 32
CONTROLLER_OFFSET = 34  # + node id -> 35, 36, 37

APP_TOPIC = "streamforge.events"
APP_TOPIC_PARTITIONS = 6
CONSUMER_GROUP = "streamforge-consumer"
READINESS_TOPIC = "sfops.lab.readiness"
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
REQUEST_TIMEOUT = 5.0
LAST_NODE_STOP_TIMEOUT = 5.0
QUORUM_GONE_STOP_TIMEOUT = 15.0

SECURITY_PROTOCOL = "SASL_SSL"
SASL_MECHANISM = "SCRAM-SHA-512"
USERS = ("broker", "sfops", "streamforge")  # password files <lab>/secrets/kafka-<user>
BROKER_USER = "broker"
SCRAM_MARKER = "scram-formatted"  # in each node's directory: a digest of the credentials

# Small heaps: the whole lab (PostgreSQL, Kafka, Kubernetes, API) shares 2 cores and 24 GiB.
HEAP_OPTS = ["-Xms128m", "-Xmx384m"]


# -- jars and java -----------------------------------------------------------------------------
@functools.cache
def libs_dir() -> Path:
    out = run(["bash", str(INSTALL_SCRIPT), "--print-dir"], what="kafka install (print dir)")
    return Path(out.strip())


def ensure_jars(lab: Lab) -> Path:
    """Resolve the jars when the cache is not complete (a cold run takes ~20 s with Maven)."""
    directory = libs_dir()
    if (directory / ".complete").exists():
        return directory
    lab.progress(f"kafka: resolving Apache Kafka {KAFKA_VERSION} jars into {directory}")
    proc = subprocess.Popen(
        ["bash", str(INSTALL_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lab.progress(line.rstrip())
    if proc.wait() != 0:
        raise LabError(f"kafka: {INSTALL_SCRIPT} failed (exit {proc.returncode})")
    return directory


def java_bin() -> str:
    """Kafka 4.x needs Java 17+: $SFOPS_JAVA, then $JAVA_HOME, then the Debian JDK 17, then PATH."""
    candidates = [
        os.environ.get("SFOPS_JAVA", ""),
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "",
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        shutil.which("java") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LabError("kafka: no java found (install openjdk-17-jre-headless or set SFOPS_JAVA)")


# -- layout --------------------------------------------------------------------------------------
def kafka_dir(lab: Lab) -> Path:
    return lab.path("kafka")


def client_port(lab: Lab, node_id: int) -> int:
    return lab.port(CLIENT_OFFSET + node_id)


def controller_port(lab: Lab, node_id: int) -> int:
    return lab.port(CONTROLLER_OFFSET + node_id)


def bootstrap_servers(lab: Lab) -> str:
    return ",".join(f"127.0.0.1:{client_port(lab, n)}" for n in NODES.values())


# -- credentials and TLS ---------------------------------------------------------------------
def secret_path(lab: Lab, user: str) -> Path:
    return lab.path("secrets", f"kafka-{user}")


def ensure_secrets(lab: Lab) -> None:
    """Random per-lab passwords, 0600 (as deploy/lab/postgres.py's); owned by the lab's
    operator user when it exists, so ``sfops`` run over SSH as that user reads its own."""
    for user in USERS:
        path = secret_path(lab, user)
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    try:
        owner: int | None = pwd.getpwnam("sfops-lab").pw_uid
    except KeyError:
        owner = None
    if owner is not None:
        os.chown(lab.path("secrets"), owner, -1)
        for user in USERS:
            os.chown(secret_path(lab, user), owner, -1)
    os.chmod(lab.path("secrets"), 0o700)


def password(lab: Lab, user: str) -> str:
    ensure_secrets(lab)
    return secret_path(lab, user).read_text().splitlines()[0]


def client_config(lab: Lab, user: str = BROKER_USER) -> dict[str, Any]:
    """librdkafka settings for a client of the lab's Kafka: bootstrap servers, SASL_SSL with
    SCRAM-SHA-512 as ``user``, the lab's service CA. Every confluent-kafka client of the lab
    (its checks, the consumer, the tests) starts from this."""
    return {
        "bootstrap.servers": bootstrap_servers(lab),
        "security.protocol": SECURITY_PROTOCOL.lower(),
        "sasl.mechanism": SASL_MECHANISM,
        "sasl.username": user,
        "sasl.password": password(lab, user),
        "ssl.ca.location": str(tls.service_ca(lab)),
    }


def cluster_id(lab: Lab) -> str:
    """One id for the whole cluster, made on first use (Kafka's form: URL-safe base64 of a
    random UUID without padding, never starting with '-', which its tools would read as a flag)."""
    path = kafka_dir(lab) / "cluster-id"
    if path.exists():
        return path.read_text().strip()
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            break
    write_atomic(path, value + "\n")
    return value


# -- admin helpers (every call bounded) ------------------------------------------------------
_QUIET = {"log_level": 0}  # probes run against starting brokers: refused connections are expected


def admin_client(lab: Lab, bootstrap: str | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> AdminClient:
    return AdminClient(
        {
            **client_config(lab),
            **({"bootstrap.servers": bootstrap} if bootstrap else {}),
            "socket.timeout.ms": int(timeout * 1000),
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            **_QUIET,
        }
    )


def live_node_ids(lab: Lab, bootstrap: str | None = None,
                  timeout: float = REQUEST_TIMEOUT) -> set[int]:
    """Node ids of the brokers ``describe_cluster`` reports (registered and not fenced)."""
    admin = admin_client(lab, bootstrap, timeout)
    description = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 1)
    return {node.id for node in description.nodes}


def ensure_topic(
    lab: Lab,
    topic: str,
    partitions: int,
    *,
    timeout: float = 15.0,
    config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` (RF 3) unless it exists; wait until every partition has a leader.

    Returns True when this call created it."""
    admin = admin_client(lab)
    created = False
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=REPLICATION_FACTOR,
        config={"min.insync.replicas": str(MIN_INSYNC_REPLICAS), **(config or {})},
    )
    futures = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[topic].result(timeout=timeout + 1)
        created = True
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(topic=topic, timeout=REQUEST_TIMEOUT)
        found = metadata.topics.get(topic)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return created
        if time.monotonic() > deadline:
            raise LabError(f"kafka: {topic}: a partition has no leader after {timeout}s")
        time.sleep(0.2)


def round_trip(lab: Lab, timeout: float = REQUEST_TIMEOUT) -> bool:
    """Produce one record with acks=all to the readiness topic and read it back."""
    ensure_topic(lab, READINESS_TOPIC, 1, config={"retention.ms": "3600000"})
    marker = uuid.uuid4().hex.encode()
    delivered: list[Any] = []
    producer = Producer(
        {
            **client_config(lab),
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
            **_QUIET,
        }
    )
    producer.produce(READINESS_TOPIC, value=marker, partition=0,
                     on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout)
    if not delivered or delivered[0][0] is not None:
        return False
    offset = delivered[0][1].offset()
    consumer = Consumer(
        {
            **client_config(lab),
            "group.id": "sfops-lab-readiness",  # never joined or committed: assign() only
            "enable.auto.commit": False,
            **_QUIET,
        }
    )
    try:
        consumer.assign([TopicPartition(READINESS_TOPIC, 0, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.value() == marker:
                return True
        return False
    finally:
        consumer.close()


# -- components ----------------------------------------------------------------------------------
class KafkaNode(Component):
    group = GROUP
    # SIGTERM is a controlled shutdown: leadership moves off the node before it exits.
    stop_timeout = 60.0
    # Above initial.broker.registration.timeout.ms (below): a node restarted while the
    # controller quorum is busy re-electing keeps trying to register instead of exiting.
    ready_timeout = 240.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.node_id = NODES[name]

    def node_dir(self, lab: Lab) -> Path:
        return kafka_dir(lab) / self.name

    def data_dir(self, lab: Lab) -> Path:
        return self.node_dir(lab) / "data"

    def ports(self, lab: Lab) -> Sequence[int]:
        return (client_port(lab, self.node_id), controller_port(lab, self.node_id))

    def cwd(self, lab: Lab) -> Path:
        return self.node_dir(lab)

    def keystore(self, lab: Lab) -> Path:
        return self.node_dir(lab) / "keystore.pem"

    def write_keystore(self, lab: Lab) -> None:
        """The node's PEM keystore: its private key (PKCS#8, unencrypted, so no
        ``ssl.key.password``) and its certificate, signed by the lab's service CA."""
        crt, key = tls.server_certificate(lab, self.name)
        write_atomic(self.keystore(lab), key.read_text() + crt.read_text(), mode=0o600)

    def server_properties(self, lab: Lab) -> str:
        voters = ",".join(f"{n}@127.0.0.1:{controller_port(lab, n)}" for n in NODES.values())
        client, controller = self.ports(lab)
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{BROKER_USER}" password="{password(lab, BROKER_USER)}";')
        settings = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"SASL_SSL://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{client}",
            "controller.listener.names": "CONTROLLER",
            # Replication goes through the secured listener too (as user broker); the
            # controller listener is loopback-only and PLAINTEXT (see the module's docstring).
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.keystore(lab),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": tls.service_ca(lab),
            "ssl.client.auth": "none",
            # The brokers check each other's names too (the certificates name 127.0.0.1).
            "ssl.endpoint.identification.algorithm": "https",
            "log.dirs": self.data_dir(lab),
            # Durability as in production: RF 3 everywhere, two in-sync copies for acks=all.
            "default.replication.factor": REPLICATION_FACTOR,
            "min.insync.replicas": MIN_INSYNC_REPLICAS,
            "offsets.topic.replication.factor": REPLICATION_FACTOR,
            "transaction.state.log.replication.factor": REPLICATION_FACTOR,
            "transaction.state.log.min.isr": MIN_INSYNC_REPLICAS,
            "share.coordinator.state.topic.replication.factor": REPLICATION_FACTOR,
            "share.coordinator.state.topic.min.isr": MIN_INSYNC_REPLICAS,
            "unclean.leader.election.enable": "false",
            "controlled.shutdown.enable": "true",
            # Topics are created by the lab, never by a typo in a client.
            "auto.create.topics.enable": "false",
            # Leaders return to a restarted broker only through sfops's own preferred-leader
            # election, so fault tests see a deterministic layout.
            "auto.leader.rebalance.enable": "false",
            # A killed broker is fenced (ISR shrinks, leaders move) within ~6 s, not 9-18 s.
            "broker.session.timeout.ms": 6000,
            "broker.heartbeat.interval.ms": 1000,
            "replica.lag.time.max.ms": 10000,
            # Default 60 s. On a loaded 2-core machine the combined-mode quorum can spend
            # longer than that re-electing after a node was SIGKILLed ("Exceptionally slow
            # controller event … 2175 ms", leader epochs flapping), and the restarted node then
            # exits with "unable to register with the controller quorum" (seen twice in the
            # fault matrix). Waiting longer loses nothing: the node is not ready until it is.
            "initial.broker.registration.timeout.ms": 180000,
            # Lab sizing: few partitions for internal topics, few threads, small segments.
            "offsets.topic.num.partitions": 6,
            "transaction.state.log.num.partitions": 6,
            "num.partitions": 1,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
            "num.replica.fetchers": 1,
            "num.recovery.threads.per.data.dir": 1,
            "log.segment.bytes": 64 * 1024 * 1024,
            "log.retention.hours": 24,
            "group.initial.rebalance.delay.ms": 0,
        }
        lines = ["# written by sfops lab; regenerated on every start (0600: it holds the "
                 "broker user's SCRAM password)"]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def scram_arguments(self, lab: Lab) -> list[str]:
        """``--add-scram`` for every lab user: the credentials exist from the first start."""
        arguments: list[str] = []
        for user in USERS:
            arguments += ["--add-scram",
                          f"{SASL_MECHANISM}=[name={user},password={password(lab, user)}]"]
        return arguments

    def scram_digest(self, lab: Lab) -> str:
        text = "\n".join(f"{user}:{password(lab, user)}" for user in USERS)
        return hashlib.sha256(f"{cluster_id(lab)}\n{text}".encode()).hexdigest()

    def log4j2_xml(self, lab: Lab) -> str:
        logs = self.node_dir(lab) / "logs"
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- written by sfops lab: INFO to a rolling server.log under the lab, WARN+ to stdout
     (the lab's logs/{self.name}.log), so broker logs never leave the lab directory. -->
<Configuration status="warn">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <ThresholdFilter level="WARN"/>
    </Console>
    <RollingFile name="server" fileName="{logs}/server.log"
                 filePattern="{logs}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="10 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <!-- "could not connect to node N" while a peer is down is expected in a fault lab -->
    <Logger name="org.apache.kafka.clients.NetworkClient" level="ERROR"/>
    <Root level="INFO">
      <AppenderRef ref="stdout"/>
      <AppenderRef ref="server"/>
    </Root>
  </Loggers>
</Configuration>
"""

    def prepare(self, lab: Lab) -> None:
        libs = ensure_jars(lab)
        (self.node_dir(lab) / "logs").mkdir(parents=True, exist_ok=True)
        ensure_secrets(lab)
        self.write_keystore(lab)
        write_atomic(self.node_dir(lab) / "server.properties", self.server_properties(lab),
                     mode=0o600)
        write_atomic(self.node_dir(lab) / "log4j2.xml", self.log4j2_xml(lab))
        marker = self.node_dir(lab) / SCRAM_MARKER
        digest = self.scram_digest(lab)
        formatted = (self.data_dir(lab) / "meta.properties").exists()
        if formatted and marker.exists() and marker.read_text().strip() == digest:
            return
        if formatted:
            # Formatted without these SCRAM credentials (an unsecured lab from before, or new
            # passwords): the brokers could not log in to each other. Lab data only.
            lab.progress(f"{self.name}: storage formatted without the lab's SCRAM "
                         "credentials; formatting it again")
            shutil.rmtree(self.data_dir(lab))
        lab.progress(f"{self.name}: formatting storage (cluster id {cluster_id(lab)})")
        run(
            [
                *self._java(lab, libs, heap=["-Xmx128m"]),
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self.node_dir(lab) / "server.properties"),
                "--cluster-id",
                cluster_id(lab),
                "--ignore-formatted",
                *self.scram_arguments(lab),
            ],
            what=f"{self.name}: kafka-storage format",
            cwd=self.node_dir(lab),
        )
        write_atomic(marker, digest + "\n", mode=0o600)

    def _java(self, lab: Lab, libs: Path, heap: list[str]) -> list[str]:
        return [
            java_bin(),
            *heap,
            "-XX:+UseSerialGC",  # fewest GC threads: 2 cores are shared by the whole lab
            # C1 only: a broker boots in about half the time on 2 cores; the lab never needs
            # peak throughput.
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",
            f"-XX:ErrorFile={self.node_dir(lab)}/hs_err_%p.log",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.node_dir(lab) / 'logs'}",
            f"-Dlog4j2.configurationFile={self.node_dir(lab) / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
        ]

    def argv(self, lab: Lab) -> list[str]:
        return [
            *self._java(lab, libs_dir(), HEAP_OPTS),
            "kafka.Kafka",
            str(self.node_dir(lab) / "server.properties"),
        ]

    def ready(self, lab: Lab) -> bool:
        client, controller = self.ports(lab)
        if not port_in_use(controller):
            return False
        running = [node for node in NODES_COMPONENTS if node.running(lab)]
        if len(running) < 2:
            # No quorum is possible yet (the first node of `lab up`): a listening controller is
            # all this node can show until a second voter starts.
            return True
        if not port_in_use(client):
            return False
        nodes = live_node_ids(lab, f"127.0.0.1:{client}")
        if self.node_id not in nodes:
            return False
        if len(running) < len(NODES):
            return True
        # The whole cluster is meant to be up: all three registered and data flows.
        return len(nodes) == len(NODES) and round_trip(lab)

    def after_ready(self, lab: Lab) -> None:
        if all(node.running(lab) for node in NODES_COMPONENTS):
            if ensure_topic(lab, APP_TOPIC, APP_TOPIC_PARTITIONS):
                lab.progress(
                    f"{self.name}: created topic {APP_TOPIC} "
                    f"({APP_TOPIC_PARTITIONS} partitions, RF {REPLICATION_FACTOR})"
                )

    def stop_grace(self, lab: Lab) -> tuple[float, str]:
        others = [n for n in NODES_COMPONENTS if n is not self and n.running(lab)]
        if others:
            return self.stop_timeout, ""
        # The last node: no controller quorum is left to grant its controlled shutdown, so
        # Kafka would wait for one forever. Give it a moment, then kill it; the page cache
        # survives a SIGKILL, so this costs a log recovery on the next start, never data.
        # (`lab down` avoids this by stopping the nodes together while the quorum stands.)
        return LAST_NODE_STOP_TIMEOUT, "last node, no quorum to grant a controlled shutdown"

    def stop_grace_cap(self, lab: Lab) -> tuple[float, str] | None:
        # Stopped together with the others (`lab down`), a node can be left alone mid-shutdown
        # when they finish first. The active controller's own clean exit then still takes
        # about 5 s (it gives up leadership with nobody to hand it to), so allow that, but
        # not the full minute.
        if any(n is not self and n.running(lab) for n in NODES_COMPONENTS):
            return None
        return QUORUM_GONE_STOP_TIMEOUT, "the other nodes stopped first, leaving no quorum"

    def status(self, lab: Lab) -> dict[str, Any]:
        return {
            **super().status(lab),
            "node_id": self.node_id,
            "controller_address": f"127.0.0.1:{controller_port(lab, self.node_id)}",
        }


class KafkaConsumerProcess(Component):
    """The application's consumer group, reading APP_TOPIC and committing offsets."""

    name = "kafka-consumer"
    group = GROUP
    stop_timeout = 20.0
    ready_timeout = 60.0

    def status_file(self, lab: Lab) -> Path:
        return kafka_dir(lab) / "consumer-status.json"

    def cwd(self, lab: Lab) -> Path:
        return REPO  # so ``-m deploy.lab.kafka_consumer`` resolves without an installed package

    def env(self, lab: Lab) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1"}

    def prepare(self, lab: Lab) -> None:
        self.status_file(lab).unlink(missing_ok=True)

    def argv(self, lab: Lab) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deploy.lab.kafka_consumer",
            "--bootstrap",
            bootstrap_servers(lab),
            "--group",
            CONSUMER_GROUP,
            "--topic",
            APP_TOPIC,
            "--status-file",
            str(self.status_file(lab)),
            # SASL_SSL as the application's user; the password by file, never in argv.
            "--security-protocol",
            SECURITY_PROTOCOL,
            "--sasl-mechanism",
            SASL_MECHANISM,
            "--sasl-username",
            "streamforge",
            "--sasl-password-file",
            str(secret_path(lab, "streamforge")),
            "--ssl-ca-location",
            str(tls.service_ca(lab)),
            *self.canary_args(lab),
        ]

    def canary_args(self, lab: Lab) -> list[str]:
        """Where the consumer marks write-path canaries as received (the API's database, as
        the API's user). Always given: the consumer connects (and reads the password file)
        only when a canary arrives, so PostgreSQL may start after it — a lab whose Kafka
        group started first (a test that needed only Kafka) still marks canaries later."""
        from deploy.lab import postgres

        return ["--database-url", postgres.conninfo_for_app(lab),
                "--database-password-file", str(postgres.secret_path(lab, "streamforge"))]

    def address(self, lab: Lab) -> str:
        return f"group {CONSUMER_GROUP} on {APP_TOPIC}"

    def ready(self, lab: Lab) -> bool:
        """Ready once the consumer reports partitions assigned by the group coordinator."""
        data = json.loads(self.status_file(lab).read_text())
        return data.get("pid") == self.pid(lab) and bool(data.get("assigned"))


NODES_COMPONENTS: list[KafkaNode] = [KafkaNode(name) for name in NODES]
COMPONENTS: list[Component] = [*NODES_COMPONENTS, KafkaConsumerProcess()]
# The nodes stop together: while they shut down the controller quorum still stands, so each
# gets its controlled shutdown granted (one by one, the last would have none and be killed).
STOP_WAVES = [["kafka-consumer"], list(NODES)]


def app_environment(lab: Lab) -> dict[str, str]:
    """The reference API's Kafka settings (deploy/api/settings.py): SASL_SSL as user
    streamforge, the password by file."""
    return {
        "SFAPI_KAFKA_BOOTSTRAP": bootstrap_servers(lab),
        "SFAPI_KAFKA_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
        "SFAPI_KAFKA_SASL_MECHANISM": SASL_MECHANISM,
        "SFAPI_KAFKA_SASL_USERNAME": "streamforge",
        "SFAPI_KAFKA_SASL_PASSWORD_FILE": str(secret_path(lab, "streamforge")),
        "SFAPI_KAFKA_SSL_CA_LOCATION": str(tls.service_ca(lab)),
    }


def sfops_config(lab: Lab) -> dict[str, Any]:
    ensure_secrets(lab)
    return {
        "kafka": {
            "bootstrap_servers": bootstrap_servers(lab),
            "consumer_groups": [CONSUMER_GROUP],
            "request_timeout": REQUEST_TIMEOUT,
            # Secured as a production cluster is: TLS verified against the lab's CA, a
            # SCRAM login of sfops's own.
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_username": "sfops",
            "sasl_password_file": str(secret_path(lab, "sfops")),
            "ssl_ca_location": str(tls.service_ca(lab)),
        }
    }
