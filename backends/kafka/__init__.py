"""The Kafka slice: cluster, broker and partition health, consumer lag (read side); preferred
leader election and broker drain/undrain (Cruise Control's demote) as actions.

Declared in :mod:`.contract`; this package imports nothing (declaring must stay cheap), and
librdkafka (confluent_kafka) is loaded only in admin worker processes (:mod:`.worker`)."""
