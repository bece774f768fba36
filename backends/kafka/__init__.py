"""The Kafka slice: cluster, broker and partition health, consumer lag (read side); preferred
leader election and broker drain/undrain (Cruise Control's demote) as actions."""

from backends.kafka.admin import ElectionOutcome, KafkaAdmin, KafkaUnreachable
from backends.kafka.model import (
    CONTROLLER_LABEL,
    BrokerState,
    GroupState,
    KafkaStatus,
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
    "KafkaAdmin",
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
