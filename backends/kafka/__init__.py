"""The Kafka slice: cluster, broker and partition health, consumer lag (read side); preferred
leader election and broker drain/undrain (Cruise Control's demote) as actions.

librdkafka (confluent_kafka) is loaded only in admin worker processes (:mod:`.worker`); importing
this package does not load it."""

from backends.kafka.model import (
    CONTROLLER_LABEL,
    BrokerState,
    ElectionOutcome,
    GroupState,
    KafkaStatus,
    KafkaUnreachable,
    PartitionCounts,
    PartitionLag,
    PartitionState,
    TopicState,
    summarize_status,
)
from backends.kafka.service import KafkaService, build_service

__all__ = [
    "CONTROLLER_LABEL",
    "BrokerState",
    "ElectionOutcome",
    "GroupState",
    "KafkaService",
    "KafkaStatus",
    "KafkaUnreachable",
    "PartitionCounts",
    "PartitionLag",
    "PartitionState",
    "TopicState",
    "build_service",
    "summarize_status",
]
