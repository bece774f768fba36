"""The PostgreSQL slice: replication status of every member (polled concurrently, each with
its own deadline and breaker), failover, switchover and rejoin with Patroni-style checks.

Declared in :mod:`.contract`; this package imports nothing (declaring must stay cheap)."""
