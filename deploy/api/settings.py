"""Configuration of the API service, read only from environment variables.

The lab, docker compose and Kubernetes all start the service the same way
(``python -m deploy.api --host H --port P`` plus these variables), so there is no config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg.conninfo

# Keys of a libpq conninfo that are safe to log (never the password).
_LOGGABLE_CONNINFO_KEYS = ("host", "port", "dbname", "user", "target_session_attrs")


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    worker_name: str
    database_url: str
    database_password: str | None = None
    kafka_bootstrap: str = ""
    kafka_topic: str = "streamforge.events"
    # librdkafka security properties (security.protocol, sasl.*, ssl.ca.location), from the
    # SFAPI_KAFKA_SECURITY_PROTOCOL / _SASL_* / _SSL_CA_LOCATION variables; the SASL password
    # only ever from a file.
    kafka_security: Mapping[str, str] = field(default_factory=dict, repr=False)
    shutdown_grace: float = 10.0
    # Seconds between SIGTERM and closing the listening socket, during which readiness is
    # already 503 but requests are still served, so load balancers that poll readiness
    # stop sending new work before connections are refused.
    drain_delay: float = 2.0
    pool_min: int = 1
    pool_max: int = 5
    pool_max_lifetime: float = 600.0
    pool_reconnect_timeout: float = 10.0
    db_timeout: float = 3.0  # waiting for a pooled connection, and per statement
    ready_timeout: float = 2.0
    breaker_failures: int = 5
    breaker_reset: float = 3.0
    kafka_delivery_timeout: float = 10.0
    # GET /slow (pg_sleep on a pooled connection) is a test hook for graceful-shutdown tests:
    # off unless enabled, and never more than slow_concurrency at once, fewer than pool_max,
    # so slow requests can never take every pooled connection.
    slow_enabled: bool = False
    slow_concurrency: int = 2
    # Request bodies above this are refused with 413 before they are parsed.
    max_body_bytes: int = 64 * 1024
    # POST /canary/{key} (sfops verify): canary rows older than this are deleted by the next
    # canary write; at most canary_concurrency canaries wait for Kafka at once (each holds
    # its request until the delivery report), the excess 429 at once.
    canary_ttl: float = 3600.0
    canary_concurrency: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = env.get("SFAPI_DATABASE_URL", "").strip()
        if not database_url:
            raise SettingsError("SFAPI_DATABASE_URL is not set (a libpq conninfo, no password)")
        try:
            parsed = psycopg.conninfo.conninfo_to_dict(database_url)
        except psycopg.ProgrammingError as exc:
            # The libpq message never echoes the conninfo, so it is safe to repeat.
            raise SettingsError(f"SFAPI_DATABASE_URL is not a valid conninfo: {exc}") from None
        if "password" in parsed:
            raise SettingsError(
                "SFAPI_DATABASE_URL must not contain a password; "
                "use SFAPI_DATABASE_PASSWORD_FILE or PGPASSWORD"
            )
        password = None
        if path := env.get("SFAPI_DATABASE_PASSWORD_FILE", "").strip():
            try:
                password = Path(path).read_text().rstrip("\r\n")
            except OSError as exc:
                raise SettingsError(
                    f"SFAPI_DATABASE_PASSWORD_FILE={path}: {exc.strerror}"
                ) from None
        settings = cls(
            worker_name=env.get("SFAPI_WORKER_NAME", "").strip() or os.uname().nodename,
            database_url=database_url,
            database_password=password,
            kafka_bootstrap=env.get("SFAPI_KAFKA_BOOTSTRAP", "").strip(),
            kafka_topic=env.get("SFAPI_KAFKA_TOPIC", "").strip() or "streamforge.events",
            kafka_security=_kafka_security(env),
            shutdown_grace=_number(env, "SFAPI_SHUTDOWN_GRACE", 10.0),
            drain_delay=_number(env, "SFAPI_DRAIN_DELAY", 2.0),
            pool_min=int(_number(env, "SFAPI_POOL_MIN", 1)),
            pool_max=int(_number(env, "SFAPI_POOL_MAX", 5)),
            db_timeout=_number(env, "SFAPI_DB_TIMEOUT", 3.0),
            breaker_failures=int(_number(env, "SFAPI_BREAKER_FAILURES", 5)),
            breaker_reset=_number(env, "SFAPI_BREAKER_RESET", 3.0),
            slow_enabled=_flag(env, "SFAPI_SLOW_ENABLED"),
            slow_concurrency=int(_number(env, "SFAPI_SLOW_CONCURRENCY", 2)),
            max_body_bytes=int(_number(env, "SFAPI_MAX_BODY_BYTES", 64 * 1024)),
            canary_ttl=_number(env, "SFAPI_CANARY_TTL", 3600.0),
            canary_concurrency=int(_number(env, "SFAPI_CANARY_CONCURRENCY", 4)),
        )
        if not 0 <= settings.pool_min <= settings.pool_max or settings.pool_max < 1:
            raise SettingsError(
                f"SFAPI_POOL_MIN={settings.pool_min} / SFAPI_POOL_MAX={settings.pool_max}: "
                "need 0 <= min <= max and max >= 1"
            )
        if settings.slow_enabled and not 1 <= settings.slow_concurrency < settings.pool_max:
            raise SettingsError(
                f"SFAPI_SLOW_CONCURRENCY={settings.slow_concurrency}: need 1 <= it < "
                f"SFAPI_POOL_MAX ({settings.pool_max}), so slow requests never hold every "
                "pooled connection"
            )
        if settings.canary_ttl < 60:
            raise SettingsError(f"SFAPI_CANARY_TTL={settings.canary_ttl:g}: must be >= 60 "
                                "(seconds a canary row is kept)")
        if settings.canary_concurrency < 1:
            raise SettingsError(f"SFAPI_CANARY_CONCURRENCY={settings.canary_concurrency}: "
                                "must be >= 1")
        if settings.max_body_bytes < 1:
            raise SettingsError(f"SFAPI_MAX_BODY_BYTES={settings.max_body_bytes}: must be >= 1")
        return settings

    def redacted_database(self) -> str:
        """The database target for logs and /health: no password, whatever was configured."""
        parsed = psycopg.conninfo.conninfo_to_dict(self.database_url)
        return " ".join(f"{k}={parsed[k]}" for k in _LOGGABLE_CONNINFO_KEYS if k in parsed)


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _kafka_security(env: Mapping[str, str]) -> dict[str, str]:
    """The producer's librdkafka security properties. A SASL password comes from
    SFAPI_KAFKA_SASL_PASSWORD_FILE only (a file, as the database's), never a variable."""
    protocol = env.get("SFAPI_KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in KAFKA_PROTOCOLS:
        raise SettingsError(f"SFAPI_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                            + ", ".join(KAFKA_PROTOCOLS))
    settings = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        mechanism = env.get("SFAPI_KAFKA_SASL_MECHANISM", "").strip()
        username = env.get("SFAPI_KAFKA_SASL_USERNAME", "").strip()
        path = env.get("SFAPI_KAFKA_SASL_PASSWORD_FILE", "").strip()
        for name, value in (("SFAPI_KAFKA_SASL_MECHANISM", mechanism),
                            ("SFAPI_KAFKA_SASL_USERNAME", username),
                            ("SFAPI_KAFKA_SASL_PASSWORD_FILE", path)):
            if not value:
                raise SettingsError(f"{name} is required with SFAPI_KAFKA_SECURITY_PROTOCOL="
                                    f"{protocol}")
        try:
            password = Path(path).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise SettingsError(f"SFAPI_KAFKA_SASL_PASSWORD_FILE={path}: "
                                f"{getattr(exc, 'strerror', None) or 'empty'}") from None
        settings.update({"sasl.mechanism": mechanism, "sasl.username": username,
                         "sasl.password": password})
    if ca := env.get("SFAPI_KAFKA_SSL_CA_LOCATION", "").strip():
        settings["ssl.ca.location"] = ca
    return settings


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must not be negative")
    return value
