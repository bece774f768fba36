"""How sfops reaches a secured Kafka: the ``[kafka]`` security keys (TLS and SASL), parsed
and checked once, and handed in the dialect of each client that connects —

* librdkafka (confluent-kafka's AdminClient, in the admin worker): :meth:`librdkafka`;
* kafka-python (the partition reassignment requests, in the admin worker): :meth:`kafka_python`;
* the liveness probe's own TLS socket (ApiVersions, in the sfops process): :meth:`ssl_context`.

Every connection sfops makes goes through one :class:`KafkaSecurity`, so a cluster that needs
SASL_SSL is reached the same way by the polls, the probes and every action.

A refused handshake or login is turned into an error that names the configuration key to look
at (:func:`explain`): "[kafka] sasl_password: authentication failed (SCRAM-SHA-512, user
sfops) …", "[kafka] ssl_ca_location: the broker's certificate is not signed by the CA in …".
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.secrets import Secret

if TYPE_CHECKING:
    from backends.config import Reader

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENDPOINT_IDENTIFICATION = ("https", "none")
SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file",
             "sasl_password_env")
SSL_KEYS = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
            "ssl_key_password", "ssl_key_password_file", "ssl_key_password_env",
            "ssl_endpoint_identification")


@dataclass(frozen=True)
class KafkaSecurity:
    """librdkafka's security settings under the ``[kafka]`` keys of the same meaning."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: Path | None = None  # None: the system's trusted CAs
    ssl_certificate_location: Path | None = None  # a client certificate (mutual TLS)
    ssl_key_location: Path | None = None
    ssl_key_password: Secret | None = None
    ssl_endpoint_identification: str = "https"  # "https": the name must match; "none"

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka properties (confluent-kafka's configuration dict)."""
        settings: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.uses_sasl:
            assert self.sasl_password is not None  # parse() refuses SASL without one
            settings.update({"sasl.mechanism": self.sasl_mechanism,
                             "sasl.username": self.sasl_username,
                             "sasl.password": self.sasl_password.reveal()})
        if self.uses_tls:
            settings["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
            for key, path in (("ssl.ca.location", self.ssl_ca_location),
                              ("ssl.certificate.location", self.ssl_certificate_location),
                              ("ssl.key.location", self.ssl_key_location)):
                if path is not None:
                    settings[key] = str(path)
            if self.ssl_key_password is not None:
                settings["ssl.key.password"] = self.ssl_key_password.reveal()
        return settings

    def kafka_python(self) -> dict[str, Any]:
        """The same settings as kafka-python's client keywords."""
        settings: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            assert self.sasl_password is not None
            settings.update({"sasl_mechanism": self.sasl_mechanism,
                             "sasl_plain_username": self.sasl_username,
                             "sasl_plain_password": self.sasl_password.reveal()})
        if self.uses_tls:
            # Our own context: the same verification as the probe's (kafka-python would build
            # one from ssl_cafile & co. with the same meaning).
            settings["ssl_context"] = self.ssl_context()
            settings["ssl_check_hostname"] = self.ssl_endpoint_identification == "https"
        return settings

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the configured CA (else the system's), the client
        certificate if any, host name checking unless ``ssl_endpoint_identification =
        "none"``. Raises :class:`KafkaSecurityError` naming the key that cannot be used."""
        from backends.kafka.model import KafkaSecurityError

        try:
            context = ssl.create_default_context(
                cafile=str(self.ssl_ca_location) if self.ssl_ca_location else None)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"[kafka] ssl_ca_location: cannot load {self.ssl_ca_location} as PEM "
                f"certificates: {exc}") from None
        if self.ssl_endpoint_identification == "none":
            context.check_hostname = False
        if self.ssl_certificate_location is not None:
            password = self.ssl_key_password.reveal() if self.ssl_key_password else None
            try:
                context.load_cert_chain(str(self.ssl_certificate_location),
                                        str(self.ssl_key_location), password=password)
            except (OSError, ssl.SSLError) as exc:
                key = "ssl_key_password" if self.ssl_key_password else "ssl_key_location"
                raise KafkaSecurityError(
                    f"[kafka] {key}: cannot load the client certificate "
                    f"{self.ssl_certificate_location} with key {self.ssl_key_location}: "
                    f"{getattr(exc, 'reason', None) or exc}") from None
        return context

    def describe(self) -> str:
        """For messages: how sfops connects, never a secret."""
        if self.uses_sasl:
            return f"{self.protocol} ({self.sasl_mechanism}, user {self.sasl_username})"
        return self.protocol


PLAINTEXT = KafkaSecurity()


def parse_security(table: Reader) -> KafkaSecurity:
    """The security keys of ``[kafka]``; problems are recorded on ``table``, naming the key."""
    raw_protocol = table.string("security_protocol", "PLAINTEXT")
    protocol = raw_protocol.upper() if isinstance(raw_protocol, str) else "PLAINTEXT"
    if protocol not in PROTOCOLS:
        table.fail("security_protocol",
                   f'expected one of {", ".join(PROTOCOLS)}, got "{raw_protocol}"')
        table.seen.update(k for k in (*SASL_KEYS, *SSL_KEYS) if k in table.data)
        return PLAINTEXT
    security = KafkaSecurity(protocol=protocol)
    sasl = security.uses_sasl
    tls = security.uses_tls
    for name in SASL_KEYS if not sasl else ():
        if name in table.data:
            table.seen.add(name)
            table.fail(name, f"only used with security_protocol SASL_PLAINTEXT or SASL_SSL "
                            f"(it is {protocol})")
    for name in SSL_KEYS if not tls else ():
        if name in table.data:
            table.seen.add(name)
            table.fail(name, f"only used with security_protocol SSL or SASL_SSL (it is "
                            f"{protocol})")
    mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    if sasl:
        mechanism = table.string("sasl_mechanism", None)
        if mechanism is None:
            table.fail("sasl_mechanism", f"required with security_protocol {protocol} "
                                         f'(one of {", ".join(MECHANISMS)})')
        elif isinstance(mechanism, str) and mechanism.upper() not in MECHANISMS:
            table.fail("sasl_mechanism",
                       f'expected one of {", ".join(MECHANISMS)}, got "{mechanism}"')
        elif isinstance(mechanism, str):
            mechanism = mechanism.upper()
        username = table.string("sasl_username", None)
        if username is None:
            table.fail("sasl_username", f"required with security_protocol {protocol}")
        password = table.secret("sasl_password")
        if password is None and not any(k in table.data for k in SASL_KEYS[2:]):
            table.fail("sasl_password", f"required with security_protocol {protocol} "
                                        "(sasl_password_file, sasl_password_env or inline)")
    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    key_password: Secret | None = None
    identification = "https"
    if tls:
        ca = _existing_file(table, "ssl_ca_location")
        certificate = _existing_file(table, "ssl_certificate_location")
        key = _existing_file(table, "ssl_key_location")
        if (certificate is None) != (key is None) and not _reported(table, (
                "ssl_certificate_location", "ssl_key_location")):
            missing = "ssl_key_location" if key is None else "ssl_certificate_location"
            present = "ssl_certificate_location" if key is None else "ssl_key_location"
            table.fail(missing, f"required with {present} (a client certificate needs its key)")
        key_password = table.secret("ssl_key_password")
        if key_password is not None and key is None and "ssl_key_location" not in table.data:
            table.fail("ssl_key_password", "only used with ssl_key_location")
        value = table.string("ssl_endpoint_identification", "https")
        if isinstance(value, str) and value.lower() in ENDPOINT_IDENTIFICATION:
            identification = value.lower()
        else:
            table.fail("ssl_endpoint_identification",
                       f'expected "https" (check the broker\'s name) or "none", got "{value}"')
    return KafkaSecurity(
        protocol=protocol, sasl_mechanism=mechanism, sasl_username=username,
        sasl_password=password, ssl_ca_location=ca, ssl_certificate_location=certificate,
        ssl_key_location=key, ssl_key_password=key_password,
        ssl_endpoint_identification=identification)


def _reported(table: Reader, keys: tuple[str, ...]) -> bool:
    return any(f"{table.key(k)}:" in p for p in table.problems for k in keys)


def _existing_file(table: Reader, name: str) -> Path | None:
    path: Path | None = table.path(name, None)
    if path is None:
        return None
    if not path.exists():
        table.fail(name, f"{path} does not exist")
    elif not path.is_file():
        table.fail(name, f"{path} is not a file")
    else:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            table.fail(name, f"cannot read {path}: {exc.strerror or exc}")
    return path


# --------------------------------------------------------------------------- errors


def explain(text: str, security: KafkaSecurity) -> str | None:
    """The configuration key a client's connection error points at, as a message that
    names it, or None when ``text`` is no TLS/SASL failure (a broker down, a timeout).

    Matches what librdkafka, kafka-python and Python's ssl module say (lower-cased)."""
    low = text.lower()
    if "mismatch" in low and ("hostname" in low or "ip address" in low or "host name" in low):
        return ("[kafka] ssl_endpoint_identification: the broker's certificate does not name "
                "the address sfops connected to (bootstrap_servers and the brokers' "
                f"advertised listeners must be names in it, or set \"none\"): {text}")
    if "certificate verify failed" in low or "certificate could not be verified" in low:
        where = (f"the CA in {security.ssl_ca_location}" if security.ssl_ca_location
                 else "the system's trusted CAs (set ssl_ca_location)")
        return (f"[kafka] ssl_ca_location: the broker's certificate is not signed by "
                f"{where}: {text}")
    # After the TLS checks: librdkafka names every connection "sasl_ssl://…", whatever failed.
    if security.uses_sasl and "authentication" in low and (
            "fail" in low or "invalid" in low):
        return (f"[kafka] sasl_password: authentication failed ({security.sasl_mechanism}, "
                f"user {security.sasl_username}); check sasl_username and sasl_password: "
                f"{text}")
    if "unknown ca" in low or "certificate required" in low or "bad certificate" in low:
        return ("[kafka] ssl_certificate_location: the broker refused sfops's client "
                f"certificate: {text}")
    if ("wrong version number" in low or "incorrect security.protocol" in low
            or "packet length too long" in low or "record layer failure" in low
            or ("ssl handshake failed" in low and not security.uses_tls)):
        return (f"[kafka] security_protocol: the broker does not speak {security.protocol} on "
                f"this listener: {text}")
    if security.uses_tls and ("ssl handshake failed" in low or "ssl:" in low):
        return f"[kafka] security_protocol: TLS handshake failed ({security.protocol}): {text}"
    return None
