"""The Kubernetes Deployment's probes match the API service: the paths are its routes, the port
is the one the image's command listens on, and each probe asks the question it should (liveness:
the process only; readiness: dependencies and draining)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from deploy.api.app import Lifecycle, create_app
from deploy.api.db import DatabaseUnavailable
from deploy.api.events_out import NullPublisher
from deploy.api.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEPLOYMENT = DEPLOY / "k8s" / "deployment.yaml"


class DownDatabase:
    """A database that never answers: what a probe sees during a PostgreSQL outage."""

    async def ping(self, within_seconds: float) -> None:
        raise DatabaseUnavailable("connection refused")

    def snapshot(self) -> dict[str, Any]:
        return {}


class UpDatabase(DownDatabase):
    async def ping(self, within_seconds: float) -> None:
        return None


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    assert deployment["kind"] == "Deployment"
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (api,) = [c for c in containers if c["name"] == "api"]
    return api


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (named,) = [p for p in container["ports"] if p.get("name") == port]
    return int(named["containerPort"])


def image_listen_port() -> int:
    """The port of the Dockerfile's CMD (the Deployment runs the image's command)."""
    dockerfile = (DEPLOY / "Dockerfile.api").read_text()
    match = re.search(r'^CMD \[.*"--port", "(\d+)"\]', dockerfile, re.M)
    assert match, "Dockerfile.api CMD names no --port"
    return int(match.group(1))


def api(database: object, lifecycle: Lifecycle | None = None) -> TestClient:
    settings = Settings(worker_name="probe-test", database_url="host=db")
    app = create_app(
        settings,
        database=database,  # type: ignore[arg-type]
        publisher=NullPublisher(),
        lifecycle=lifecycle or Lifecycle(),
    )
    # No `with`: the lifespan (pool, producer) is not started; the probes must not need it.
    return TestClient(app)


def test_every_probe_is_an_http_get_on_the_api_port(container: dict[str, Any]) -> None:
    assert "command" not in container and "args" not in container, "the image's CMD is used"
    port = image_listen_port()
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container[kind]
        assert probe_port(container, probe) == port, kind
        assert probe["httpGet"].get("scheme", "HTTP") == "HTTP", kind


def test_probe_paths_are_routes_of_the_api(container: dict[str, Any]) -> None:
    app = api(UpDatabase()).app
    paths = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[kind]["httpGet"]["path"] in paths, kind


def test_liveness_ignores_dependencies_and_readiness_does_not(container: dict[str, Any]) -> None:
    """A database outage must take pods out of the Service, never restart them all."""
    client = api(DownDatabase())
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    assert client.get(live).status_code == 200
    assert client.get(ready).status_code == 503
    assert api(UpDatabase()).get(ready).status_code == 200


def test_readiness_fails_while_draining(container: dict[str, Any]) -> None:
    lifecycle = Lifecycle()
    client = api(UpDatabase(), lifecycle)
    lifecycle.begin_shutdown()
    assert client.get(container["readinessProbe"]["httpGet"]["path"]).status_code == 503
    assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200


def configmap_env() -> dict[str, str]:
    configmap = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    return {key: str(value) for key, value in configmap["data"].items()}


def test_termination_grace_covers_pre_stop_and_the_api_drain(container: dict[str, Any]) -> None:
    spec = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    defaults = Settings(worker_name="t", database_url="host=db")
    env = configmap_env()
    drain = float(env.get("SFAPI_DRAIN_DELAY", defaults.drain_delay)) + float(
        env.get("SFAPI_SHUTDOWN_GRACE", defaults.shutdown_grace)
    )
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain


def test_configmap_and_secret_configure_the_api(container: dict[str, Any]) -> None:
    env = configmap_env()
    assert "SFAPI_DATABASE_URL" in env, "the API cannot start without SFAPI_DATABASE_URL"
    settings = Settings.from_env({**env, "SFAPI_DATABASE_PASSWORD_FILE": ""})
    assert settings.database_url
    unknown = {key for key in env if not key.startswith("SFAPI_")}
    assert not unknown, f"keys the API never reads: {sorted(unknown)}"
    # The password arrives as a file: the Secret's key, mounted where the API looks for it.
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.template.yaml").read_text())
    password_file = Path(env["SFAPI_DATABASE_PASSWORD_FILE"])
    assert password_file.name in secret["stringData"]
    mounts = {m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
    assert str(password_file.parent) in mounts
