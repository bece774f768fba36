"""What one Kafka poll saw, as immutable values, and the pure derivations from it (partition
health counts, per-broker leadership, preferred-leader imbalance, the overview summary)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from backends.kafka.config import KafkaConfig
from backends.service import Alert, BackendSummary, BackendUnreachable, Figure, Severity
from backends.snapshot import Health

CONTROLLER_LABEL = "metadata controller (not the KRaft quorum leader)"
ALERT_SOURCE = "kafka"
MAX_NAMED_PARTITIONS = 5
ELECTION_NOT_NEEDED = 84  # Kafka protocol error code (KafkaError.ELECTION_NOT_NEEDED)


class KafkaUnreachable(BackendUnreachable):
    """No broker answered a metadata request in time."""


class KafkaSecurityError(KafkaUnreachable):
    """The brokers answer but refuse sfops's TLS handshake or SASL login: the message names
    the ``[kafka]`` key to fix (backends.kafka.security.explain). Retrying does not help."""

    permanent = True  # backends.resilience: not retried


@dataclass(frozen=True)
class PartitionResult:
    """One partition's answer to an AlterPartitionReassignments request."""

    topic: str
    partition: int
    error_code: int
    error_name: str = "NONE"
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code == 0

    def describe(self) -> str:
        detail = f": {self.error_message}" if self.error_message else ""
        return f"{self.topic}-{self.partition}: {self.error_name}{detail}"


@dataclass(frozen=True)
class OngoingReassignment:
    """A reassignment the controller has not finished (ListPartitionReassignments)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding: tuple[int, ...]
    removing: tuple[int, ...]


# What the admin worker process sends back (backends/kafka/worker.py): plain, picklable values;
# the sfops process itself never imports confluent_kafka.


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    controller_id: int | None
    racks: dict[int, str | None]
    nodes: dict[int, tuple[str, int]]


@dataclass(frozen=True)
class ElectionOutcome:
    topic: str
    partition: int
    error_code: int  # 0: elected
    error: str | None

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def elected(self) -> bool:
        return self.error_code == 0

    @property
    def not_needed(self) -> bool:
        """Already led by the preferred replica: not an error."""
        return self.error_code == ELECTION_NOT_NEEDED

    @property
    def failed(self) -> bool:
        return not (self.elected or self.not_needed)


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int  # -1: no leader (offline)
    replicas: tuple[int, ...]  # in preference order: replicas[0] is the preferred leader
    isr: tuple[int, ...]
    min_isr: int | None = None  # the topic's min.insync.replicas (None: not known yet)
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def under_min_isr(self) -> bool:
        return self.min_isr is not None and len(self.isr) < self.min_isr

    @property
    def at_min_isr(self) -> bool:
        return self.min_isr is not None and len(self.isr) == self.min_isr

    @property
    def preferred_leader(self) -> int | None:
        return self.replicas[0] if self.replicas else None

    @property
    def not_preferred(self) -> bool:
        """Led, but not by its first replica (what a preferred election would fix)."""
        return not self.offline and bool(self.replicas) and self.leader != self.replicas[0]

    @property
    def electable(self) -> bool:
        """Not on its preferred leader, and a preferred election would move it now: the
        preferred replica is in sync (the controller elects only from the ISR). One whose
        preferred replica is down or catching up waits for it; the broker-down and URP alerts
        already say why."""
        return self.not_preferred and self.preferred_leader in self.isr


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: tuple[PartitionState, ...]
    internal: bool = False
    min_isr: int | None = None
    error: str | None = None

    @property
    def replication_factor(self) -> int:
        return max((len(p.replicas) for p in self.partitions), default=0)

    @property
    def problems(self) -> int:
        return sum(p.offline or p.under_replicated or p.under_min_isr for p in self.partitions)


@dataclass(frozen=True)
class BrokerState:
    broker_id: int
    host: str | None
    port: int | None
    rack: str | None = None
    registered: bool = True  # in the cluster metadata (registered and not fenced)
    reachable: bool | None = None  # it answered an ApiVersions request (None: not probed)
    leaders: int = 0
    replicas: int = 0
    preferred: int = 0  # partitions whose first replica it is

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.host is not None else "?"

    @property
    def up(self) -> bool:
        return self.registered and self.reachable is not False


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has no committed offset here
    latest: int | None  # high watermark (None: could not be read)

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.latest is None:
            return None
        return max(self.latest - self.committed, 0)


@dataclass(frozen=True)
class GroupState:
    group_id: str
    state: str  # "STABLE", "EMPTY", "DEAD", ... (Kafka's, upper case)
    members: int
    partitions: tuple[PartitionLag, ...] = ()
    error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)


@dataclass(frozen=True)
class PartitionCounts:
    total: int = 0
    online: int = 0
    offline: int = 0
    under_replicated: int = 0
    under_min_isr: int = 0
    at_min_isr: int = 0
    not_preferred: int = 0
    electable: int = 0  # of not_preferred: a preferred election would move them now


@dataclass(frozen=True)
class KafkaStatus:
    bootstrap: str
    cluster_id: str | None
    controller_id: int | None  # CONTROLLER_LABEL: a live broker on KRaft, not the quorum leader
    brokers: tuple[BrokerState, ...]
    topics: tuple[TopicState, ...]
    groups: tuple[GroupState, ...] = ()
    counts: PartitionCounts = field(default_factory=PartitionCounts)
    problems: tuple[str, ...] = ()  # parts of the poll that failed (configs, groups)
    poll_seconds: float = 0.0

    def partitions(self) -> Iterable[PartitionState]:
        for topic in self.topics:
            yield from topic.partitions

    def broker(self, broker_id: int) -> BrokerState | None:
        return next((b for b in self.brokers if b.broker_id == broker_id), None)

    @property
    def brokers_up(self) -> int:
        return sum(b.up for b in self.brokers)

    @property
    def leader_skew(self) -> int:
        return _skew(b.leaders for b in self.brokers if b.up)

    @property
    def replica_skew(self) -> int:
        return _skew(b.replicas for b in self.brokers if b.up)

    @property
    def worst_group(self) -> GroupState | None:
        return max(self.groups, key=lambda g: g.total_lag, default=None)

    @property
    def total_lag(self) -> int:
        return sum(g.total_lag for g in self.groups)


@dataclass(frozen=True)
class ClusterView:
    """One metadata read: the registered brokers' addresses and every partition with its
    topic's ``min.insync.replicas``."""

    cluster_id: str | None
    controller_id: int | None
    brokers: dict[int, tuple[str, int]]
    topics: tuple[TopicState, ...]

    def partitions(self) -> list[PartitionState]:
        return [p for t in self.topics for p in t.partitions]


@dataclass(frozen=True)
class ClusterRead:
    """Everything one poll reads through the AdminClient (the service adds the listener
    probes and the derived counts); ``problems`` are the parts that failed."""

    view: ClusterView
    cluster: ClusterInfo | None
    groups: tuple[GroupState, ...]
    problems: tuple[str, ...] = ()


def _skew(values: Iterable[int]) -> int:
    values = list(values)
    return max(values) - min(values) if values else 0


_SHAPE = attrgetter("leader", "replicas", "isr", "min_isr")
_LEADER = attrgetter("leader")
_REPLICAS = attrgetter("replicas")


Shape = tuple[int, tuple[int, ...], tuple[int, ...], int | None]


def _of_shape(shape: Shape) -> PartitionState:
    """A stand-in for every partition of this shape (the health properties read only it)."""
    leader, replicas, isr, min_isr = shape
    return PartitionState("", 0, leader, replicas, isr, min_isr)


def _of_shapes(partitions: list[PartitionState], shapes: set[Shape]) -> list[PartitionState]:
    """The partitions of these shapes, in order (no pass at all when there is none)."""
    return [p for p in partitions if _SHAPE(p) in shapes] if shapes else []


def count_partitions(partitions: Iterable[PartitionState]) -> PartitionCounts:
    """The health counts. Every count depends only on a partition's leader, replicas, ISR and
    ``min.insync.replicas``, and thousands of partitions share a few such shapes: the
    partitions are grouped by shape at C speed (``Counter`` over ``attrgetter``) and the
    properties are asked once per shape rather than once per partition — the same answers
    (tests/unit/test_kafka_model.py compares with a partition-by-partition count), in a
    quarter of the time on 3,000 partitions."""
    total = offline = urp = under_min = at_min = not_preferred = electable = 0
    for shape, n in Counter(map(_SHAPE, partitions)).items():
        p = _of_shape(shape)
        total += n
        offline += n * p.offline
        urp += n * p.under_replicated
        under_min += n * p.under_min_isr
        at_min += n * p.at_min_isr
        not_preferred += n * p.not_preferred
        electable += n * p.electable
    return PartitionCounts(total, total - offline, offline, urp, under_min, at_min, not_preferred,
                           electable)


@dataclass(frozen=True)
class LeaderBalanceLimits:
    """When leadership counts as unbalanced: ``[kafka] max_not_preferred_leaders`` and
    ``max_leader_skew`` (README, Configuration). Both default to 0: with
    ``auto.leader.rebalance.enable=false`` (the lab's setting, and common where elections are
    run by hand) leadership moved by a restart never comes back by itself, so any partition an
    election would move is worth a warning. Clusters that rebalance on their own (Kafka's
    default tolerates 10% per broker, checked every 5 minutes) may raise them."""

    max_not_preferred_leaders: int = 0
    max_leader_skew: int = 0

    @classmethod
    def of(cls, config: KafkaConfig) -> LeaderBalanceLimits:
        return cls(config.max_not_preferred_leaders, config.max_leader_skew)


@dataclass(frozen=True)
class LeaderBalance:
    """Leadership as it is and as a preferred election would leave it, over the brokers that
    are up (a down broker leads nothing and can be elected nowhere)."""

    electable: tuple[PartitionState, ...]  # off their preferred leader; an election moves them
    waiting: int  # off their preferred leader, whose preferred replica is down or not in sync
    leaders: dict[int, int]  # broker id -> partitions it leads now
    leaders_after_election: dict[int, int]

    @property
    def skew(self) -> int:
        return _skew(self.leaders.values())

    @property
    def skew_after_election(self) -> int:
        return _skew(self.leaders_after_election.values())


def leader_balance(status: KafkaStatus) -> LeaderBalance:
    up = [b.broker_id for b in status.brokers if b.up]
    leaders = dict.fromkeys(up, 0)
    after = dict.fromkeys(up, 0)
    movable_shapes: set[Shape] = set()
    waiting = 0
    partitions = list(status.partitions())
    # Per shape (see count_partitions), n partitions at a time.
    for shape, n in Counter(map(_SHAPE, partitions)).items():
        p = _of_shape(shape)
        if p.offline:
            continue
        if p.leader in leaders:
            leaders[p.leader] += n
        # The ISR lags a broker's death by up to the session timeout: trust it only for a
        # broker that is up.
        movable = p.electable and p.preferred_leader in leaders
        if movable:
            movable_shapes.add(shape)
        elif p.not_preferred:
            waiting += n
        new_leader = p.preferred_leader if movable else p.leader
        if new_leader in after:
            after[new_leader] += n
    return LeaderBalance(tuple(_of_shapes(partitions, movable_shapes)), waiting, leaders, after)


def imbalance_alert(status: KafkaStatus, limits: LeaderBalanceLimits) -> Alert | None:
    """A warning when a preferred election would fix leadership that is off by more than the
    limits allow. Skew that an election would not reduce is left alone: it comes from the
    replica assignment (a drained broker is last everywhere on purpose), and partitions whose
    preferred replica is down are the broker-down alert's business, not a second warning."""
    balance = leader_balance(status)
    too_many = len(balance.electable) > limits.max_not_preferred_leaders
    skewed = (balance.skew > limits.max_leader_skew
              and balance.skew_after_election < balance.skew)
    if not (too_many or skewed):
        return None
    per_broker = " ".join(f"{b}:{n}" for b, n in sorted(balance.leaders.items()))
    message = (
        f"{len(balance.electable)} partition(s) not on their preferred leader, leader skew "
        f"{balance.skew} ({balance.skew_after_election} after a preferred election): run "
        f"`sfops kafka elect-leaders` — leaders per broker {per_broker}; limits "
        f"{limits.max_not_preferred_leaders} not preferred, skew {limits.max_leader_skew}")
    if balance.waiting:
        message += f"; {balance.waiting} more wait for their preferred replica to be in sync"
    if balance.electable:
        message += f"; {_names(list(balance.electable))}"
    return Alert(ALERT_SOURCE, "leader-imbalance", Severity.WARNING, message)


def tally_brokers(
    brokers: Sequence[BrokerState], partitions: Iterable[PartitionState]
) -> tuple[BrokerState, ...]:
    """The brokers with their leader/replica/preferred counts filled in; a broker that appears
    only in replica lists (never seen in metadata) is added as unregistered."""
    # Counted per distinct leader and replica list (few, however many partitions), at C speed.
    partitions = list(partitions)
    leaders = Counter(map(_LEADER, partitions))
    replicas: Counter[int] = Counter()
    preferred: Counter[int] = Counter()
    for replica_list, n in Counter(map(_REPLICAS, partitions)).items():
        for r in replica_list:
            replicas[r] += n
        if replica_list:
            preferred[replica_list[0]] += n
    by_id = {b.broker_id: b for b in brokers}
    for broker_id in replicas:
        by_id.setdefault(broker_id, BrokerState(broker_id, None, None, registered=False))
    return tuple(
        BrokerState(b.broker_id, b.host, b.port, b.rack, b.registered, b.reachable,
                    leaders.get(b.broker_id, 0), replicas.get(b.broker_id, 0),
                    preferred.get(b.broker_id, 0))
        for b in sorted(by_id.values(), key=lambda b: b.broker_id)
    )


def _names(partitions: Sequence[PartitionState]) -> str:
    shown = ", ".join(p.name for p in partitions[:MAX_NAMED_PARTITIONS])
    more = len(partitions) - MAX_NAMED_PARTITIONS
    return shown + (f" and {more} more" if more > 0 else "")


def health_and_alerts(status: KafkaStatus, limits: LeaderBalanceLimits = LeaderBalanceLimits()
                      ) -> tuple[Health, list[Alert]]:
    alerts: list[Alert] = []
    healths = [Health.OK]

    def alert(key: str, severity: Severity, message: str, *, unreachable: bool = False) -> None:
        alerts.append(Alert(ALERT_SOURCE, key, severity, message, unreachable=unreachable))
        healths.append(Health.FAILED if severity is Severity.CRITICAL else Health.DEGRADED)

    for broker in status.brokers:
        if not broker.registered:
            alert(f"broker-down:{broker.broker_id}", Severity.WARNING,
                  f"broker {broker.broker_id} ({broker.address}) is not in the cluster metadata "
                  "(down or fenced)", unreachable=broker.reachable is not True)
        elif broker.reachable is False:
            alert(f"broker-down:{broker.broker_id}", Severity.WARNING,
                  f"broker {broker.broker_id} ({broker.address}) does not answer requests",
                  unreachable=True)
    if status.brokers and status.brokers_up == 0:
        alert("no-broker-up", Severity.CRITICAL, "no broker is up")
    partitions = list(status.partitions())
    shapes = [_of_shape(shape) for shape in set(map(_SHAPE, partitions))]
    offline = _of_shapes(partitions, {_SHAPE(p) for p in shapes if p.offline})
    if offline:
        alert("partitions-offline", Severity.CRITICAL,
              f"{len(offline)} partition(s) offline (no leader): {_names(offline)}")
    under_min = _of_shapes(partitions, {_SHAPE(p) for p in shapes
                                        if p.under_min_isr and not p.offline})
    if under_min:
        alert("partitions-under-min-isr", Severity.CRITICAL,
              f"{len(under_min)} partition(s) under min.insync.replicas (acks=all writes "
              f"fail): {_names(under_min)}")
    urp = _of_shapes(partitions, {_SHAPE(p) for p in shapes
                                  if p.under_replicated and not p.offline})
    if urp:
        alert("partitions-under-replicated", Severity.WARNING,
              f"{len(urp)} partition(s) under-replicated: {_names(urp)}")
    if (imbalance := imbalance_alert(status, limits)) is not None:
        alerts.append(imbalance)
        healths.append(Health.DEGRADED)
    for group in status.groups:
        if group.error:
            alert(f"group-error:{group.group_id}", Severity.WARNING,
                  f"consumer group {group.group_id}: {group.error}")
        elif group.members == 0 and group.total_lag > 0:
            alert(f"group-idle:{group.group_id}", Severity.WARNING,
                  f"consumer group {group.group_id} has no active member and lag "
                  f"{group.total_lag}")
    for problem in status.problems:
        alerts.append(Alert(ALERT_SOURCE, f"poll-problem:{problem.split(':', 1)[0]}",
                            Severity.INFO, problem))
    return Health.worst(healths), alerts


def summarize_status(status: KafkaStatus, title: str = "Kafka",
                     limits: LeaderBalanceLimits = LeaderBalanceLimits()) -> BackendSummary:
    """The overview's summary of one good status (a failed refresh: backends.service)."""
    health, alerts = health_and_alerts(status, limits)
    counts = status.counts
    worst = status.worst_group
    figures = [
        Figure("brokers up", f"{status.brokers_up}/{len(status.brokers)}",
               Health.OK if status.brokers_up == len(status.brokers) else Health.DEGRADED),
        Figure("offline", str(counts.offline),
               Health.FAILED if counts.offline else Health.OK),
        Figure("URP", str(counts.under_replicated),
               Health.DEGRADED if counts.under_replicated else Health.OK),
    ]
    if worst is not None:
        figures.append(Figure("worst lag", f"{worst.total_lag} ({worst.group_id})"))
    return BackendSummary(
        name="kafka",
        title=title,
        health=health,
        figures=tuple(figures),
        alerts=tuple(alerts),
        spark_label="consumer lag",
        spark_value=float(status.total_lag),
    )
