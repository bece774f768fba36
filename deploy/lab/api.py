"""Lab API workers: api-1..3, the reference service (deploy/api) on their own ports."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import httpx

from deploy.lab import postgres
from deploy.lab.core import Component, Lab

WORKERS = {"api-1": 1, "api-2": 2, "api-3": 3}  # name -> port offset
SHUTDOWN_GRACE_SECONDS = 10
SLOW_CONCURRENCY = 2  # of a pool of 5 (the service's default SFAPI_POOL_MAX)


class ApiWorker(Component):
    group = "api"
    # drain delay (2 s) + grace + producer flush and pool close (5 s each), with margin
    stop_timeout = SHUTDOWN_GRACE_SECONDS + 2 + 15.0
    ready_timeout = 60.0

    def __init__(self, name: str) -> None:
        self.name = name

    def port_number(self, lab: Lab) -> int:
        return lab.port(WORKERS[self.name])

    def ports(self, lab: Lab) -> Sequence[int]:
        return (self.port_number(lab),)

    def argv(self, lab: Lab) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deploy.api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port_number(lab)),
        ]

    def env(self, lab: Lab) -> dict[str, str]:
        env = {
            "SFAPI_WORKER_NAME": self.name,
            "SFAPI_DATABASE_URL": postgres.conninfo_for_app(lab),
            "SFAPI_DATABASE_PASSWORD_FILE": str(postgres.secret_path(lab, "streamforge")),
            "SFAPI_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_SECONDS),
            # The graceful-shutdown and load tests call /slow on the workers directly (nginx
            # never routes it); at most SLOW_CONCURRENCY at once per worker, below the pool.
            "SFAPI_SLOW_ENABLED": "1",
            "SFAPI_SLOW_CONCURRENCY": str(SLOW_CONCURRENCY),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(_kafka_environment(lab))
        return env

    def ready(self, lab: Lab) -> bool:
        response = httpx.get(f"http://127.0.0.1:{self.port_number(lab)}/health/ready", timeout=2.0)
        return response.status_code == 200


def _kafka_environment(lab: Lab) -> dict[str, str]:
    """The Kafka settings (bootstrap list, SASL_SSL) when the lab runs Kafka (the workers then
    publish events); none otherwise."""
    from deploy.lab import registry

    module = registry.group_module("kafka")
    if module is None or not any(c.running(lab) for c in module.COMPONENTS):
        return {}
    environment: dict[str, str] = module.app_environment(lab)
    return environment


def without_kafka(lab: Lab) -> list[ApiWorker]:
    """Running workers that publish nothing although the lab now runs Kafka: they were started
    before it (their environment has no bootstrap list). A worker that does not answer is
    left alone (it may be a test's hung worker)."""
    if not _kafka_environment(lab):
        return []
    found = []
    for worker in COMPONENTS:
        if not worker.running(lab):
            continue
        try:
            health = httpx.get(f"http://127.0.0.1:{worker.port_number(lab)}/health", timeout=2.0)
            state = health.json()["kafka"]["state"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
        if state == "disabled":
            found.append(worker)
    return found


COMPONENTS: list[ApiWorker] = [ApiWorker(name) for name in WORKERS]
# Each worker drains on its own for up to SHUTDOWN_GRACE_SECONDS: no reason to queue them.
STOP_WAVES = [list(WORKERS)]


def sfops_config(lab: Lab) -> dict[str, Any]:
    return {}
