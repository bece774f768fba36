"""The [kafka] security keys without a cluster: parsing and validation (each problem names its
key), the settings handed to librdkafka and kafka-python, the errors that name the key to fix,
and the liveness probe over TLS against a local TLS server (certificates from
deploy/lab/tls.py, so the real openssl-made chain)."""

from __future__ import annotations

import asyncio
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from backends.config import ConfigError, parse, redacted
from backends.kafka.config import KafkaConfig
from backends.kafka.model import KafkaSecurityError
from backends.kafka.probe import answers
from backends.kafka.security import KafkaSecurity, explain
from backends.kafka.service import KafkaService
from backends.secrets import redact_known
from deploy.lab import tls
from tests.unit.secured_example import loadable

BASE = '[kafka]\nbootstrap_servers = "127.0.0.1:9093"\n'


def kafka(text: str, tmp_path: Path) -> KafkaConfig:
    config = parse(BASE + text, tmp_path / "sfops.toml")
    assert isinstance(config.kafka, KafkaConfig)
    return config.kafka


def problems(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(BASE + text, tmp_path / "sfops.toml")
    return str(caught.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA with a server certificate for 127.0.0.1, and another CA that signed nothing."""
    lab_ca = tmp_path_factory.mktemp("ca")
    other = tmp_path_factory.mktemp("other")
    tls.ensure_ca(lab_ca, "test-ca")
    crt, key = tls.issue(lab_ca, "kafka-1", "/CN=kafka-1", tls.LOCAL_SANS)
    return {"ca": lab_ca / "ca.crt", "crt": crt, "key": key,
            "other_ca": tls.ensure_ca(other, "another-ca")}


def test_plaintext_is_the_default(tmp_path: Path) -> None:
    config = kafka("", tmp_path)
    assert config.security == KafkaSecurity()
    assert config.security.librdkafka() == {"security.protocol": "plaintext"}
    assert config.security.kafka_python() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_a_password_file(tmp_path: Path, pki: dict[str, Path]) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cret-value\n")
    config = kafka(f'security_protocol = "sasl_ssl"\nsasl_mechanism = "scram-sha-512"\n'
                   f'sasl_username = "sfops"\nsasl_password_file = "{secret}"\n'
                   f'ssl_ca_location = "{pki["ca"]}"\n', tmp_path)
    security = config.security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    settings = security.librdkafka()
    assert settings == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "sfops", "sasl.password": "s3cret-value",
        "ssl.ca.location": str(pki["ca"]), "ssl.endpoint.identification.algorithm": "https"}
    python = security.kafka_python()
    assert python["sasl_plain_password"] == "s3cret-value"
    assert python["ssl_check_hostname"] is True
    assert isinstance(python["ssl_context"], ssl.SSLContext)
    # A secret like any other: never shown, redacted by value wherever it might appear.
    assert "s3cret-value" not in str(redacted(config))
    assert redact_known("login s3cret-value failed") == "login *** failed"
    assert security.describe() == "SASL_SSL (SCRAM-SHA-512, user sfops)"


def test_inline_and_env_passwords_and_mutual_tls(tmp_path: Path, pki: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PW", "from-env")
    config = kafka('security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
                   'sasl_username = "u"\nsasl_password_env = "KAFKA_PW"\n', tmp_path)
    assert config.security.librdkafka()["sasl.password"] == "from-env"
    assert "ssl.ca.location" not in config.security.librdkafka()
    config = kafka(f'security_protocol = "SSL"\nssl_ca_location = "{pki["ca"]}"\n'
                   f'ssl_certificate_location = "{pki["crt"]}"\n'
                   f'ssl_key_location = "{pki["key"]}"\n'
                   f'ssl_endpoint_identification = "none"\n', tmp_path)
    settings = config.security.librdkafka()
    assert settings["ssl.certificate.location"] == str(pki["crt"])
    assert settings["ssl.endpoint.identification.algorithm"] == "none"
    assert "sasl.mechanism" not in settings
    context = config.security.ssl_context()
    assert context.check_hostname is False


@pytest.mark.parametrize(("text", "expected"), [
    ('security_protocol = "TLS"\n',
     'kafka.security_protocol: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, '
     'got "TLS"'),
    ('security_protocol = "SASL_SSL"\n',
     "kafka.sasl_mechanism: required with security_protocol SASL_SSL"),
    ('security_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n',
     "kafka.sasl_username: required with security_protocol SASL_SSL"),
    ('security_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "u"\n',
     "kafka.sasl_password: required with security_protocol SASL_SSL"),
    ('security_protocol = "SASL_SSL"\nsasl_mechanism = "GSSAPI"\nsasl_username = "u"\n'
     'sasl_password = "p"\n',
     'kafka.sasl_mechanism: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got "GSSAPI"'),
    ('sasl_username = "u"\n',
     "kafka.sasl_username: only used with security_protocol SASL_PLAINTEXT or SASL_SSL "
     "(it is PLAINTEXT)"),
    ('security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'
     'sasl_password = "p"\nssl_ca_location = "/etc/hosts"\n',
     "kafka.ssl_ca_location: only used with security_protocol SSL or SASL_SSL"),
    ('security_protocol = "SSL"\nssl_ca_location = "/no/such/ca.pem"\n',
     "kafka.ssl_ca_location: /no/such/ca.pem does not exist"),
    ('security_protocol = "SSL"\nssl_ca_location = "/"\n',
     "kafka.ssl_ca_location: / is not a file"),
    ('security_protocol = "SSL"\nssl_certificate_location = "/etc/hosts"\n',
     "kafka.ssl_key_location: required with ssl_certificate_location"),
    ('security_protocol = "SSL"\nssl_endpoint_identification = "maybe"\n',
     'kafka.ssl_endpoint_identification: expected "https" (check the broker\'s name) or '
     '"none", got "maybe"'),
    ('security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'
     'sasl_password_file = "/no/such/file"\n',
     "kafka.sasl_password_file: cannot read /no/such/file"),
    ('security_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_username = "u"\n'
     'sasl_password = "a"\nsasl_password_env = "B"\n',
     "kafka.sasl_password: conflicts with sasl_password_env"),
])
def test_problems_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(text, tmp_path)
    assert expected in found, found


def test_a_secret_value_never_appears_in_a_problem(tmp_path: Path) -> None:
    found = problems('security_protocol = "SASL_SSL"\nsasl_mechanism = "NOPE"\n'
                     'sasl_username = "u"\nsasl_password = "hunter2-value"\n', tmp_path)
    assert "hunter2-value" not in found


SCRAM = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="sfops", ssl_ca_location=Path("/lab/tls/ca.crt"))


@pytest.mark.parametrize(("text", "key"), [
    # librdkafka's words (error_cb / KafkaError.str())
    ("sasl_ssl://127.0.0.1:23430/bootstrap: SASL authentication error: Authentication failed "
     "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
     "[kafka] sasl_password: authentication failed (SCRAM-SHA-512, user sfops)"),
    ("ssl://127.0.0.1:23430/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
     "certificate verify failed: broker certificate could not be verified, verify that "
     "ssl.ca.location is correctly configured",
     "[kafka] ssl_ca_location: the broker's certificate is not signed by the CA in "
     "/lab/tls/ca.crt"),
    # Python's ssl module (the probe)
    ("TLS: certificate verify failed: IP address mismatch, certificate is not valid for "
     "'127.0.0.2'.", "[kafka] ssl_endpoint_identification:"),
    # kafka-python
    ("SaslAuthenticationFailedError: [SCRAM-SHA-512] Authentication failed",
     "[kafka] sasl_password: authentication failed"),
])
def test_refusals_name_the_key(text: str, key: str) -> None:
    explained = explain(text, SCRAM)
    assert explained is not None and explained.startswith(key), explained


def test_other_failures_are_not_blamed_on_the_configuration() -> None:
    for text in ("no answer to ApiVersions within 1.5 s", "[Errno 111] Connection refused",
                 "Local: Broker transport failure", "KafkaTimeoutError: timed out"):
        assert explain(text, SCRAM) is None


async def _tls_broker(context: ssl.SSLContext, host: str = "127.0.0.1",
                      ) -> tuple[asyncio.base_events.Server, int]:
    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            request = await reader.readexactly(size)
        except (OSError, asyncio.IncompleteReadError):
            return
        correlation_id = struct.unpack(">hhi", request[:8])[2]
        body = struct.pack(">ihi", correlation_id, 0, 0)
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broker, host, 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def _server_context(pki: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki["crt"]), str(pki["key"]))
    return context


def _service(port: int, ca: Path, identification: str = "https") -> KafkaService:
    security = KafkaSecurity(protocol="SSL", ssl_ca_location=ca,
                             ssl_endpoint_identification=identification)
    return KafkaService(KafkaConfig(f"127.0.0.1:{port}", security=security))


async def test_the_probe_speaks_tls_and_verifies_the_broker(pki: dict[str, Path]) -> None:
    server, port = await _tls_broker(_server_context(pki))
    async with server:
        good = _service(port, pki["ca"])
        assert await answers("127.0.0.1", port, timeout=3.0, tls=good.tls()) is None
        await good.contact()
        wrong = _service(port, pki["other_ca"])
        why = await answers("127.0.0.1", port, timeout=3.0, tls=wrong.tls())
        assert why is not None and "certificate verify failed" in why
        with pytest.raises(KafkaSecurityError, match=r"^\[kafka\] ssl_ca_location: the "
                           r"broker's certificate is not signed by the CA in "):
            await wrong.contact()
        # A plaintext probe of a TLS listener gets nothing it understands, and is no answer.
        assert await answers("127.0.0.1", port, timeout=1.0) is not None


async def test_the_probe_checks_the_name_unless_told_not_to(pki: dict[str, Path]) -> None:
    server, port = await _tls_broker(_server_context(pki), "127.0.0.2")
    async with server:
        # The certificate names 127.0.0.1 and localhost, not 127.0.0.2.
        strict = _service(port, pki["ca"])
        why = await answers("127.0.0.2", port, timeout=3.0, tls=strict.tls())
        assert why is not None and "mismatch" in why
        assert explain(why, strict.config.security) is not None
        relaxed = _service(port, pki["ca"], identification="none")
        assert await answers("127.0.0.2", port, timeout=3.0, tls=relaxed.tls()) is None


def test_an_unusable_ca_file_names_its_key(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    security: Any = KafkaSecurity(protocol="SSL", ssl_ca_location=bogus)
    with pytest.raises(KafkaSecurityError, match=r"^\[kafka\] ssl_ca_location: cannot load"):
        security.ssl_context()


def test_the_deploy_example_is_a_valid_kafka_section(tmp_path: Path, pki: dict[str, Path]) -> None:
    """deploy/examples/sfops-secured.toml, with its files present, parses as written."""
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "sfops-secured.toml"
    text = loadable(example.read_text(), tmp_path, {"/etc/sfops/kafka-ca.crt": pki["ca"]})
    config = parse(text, tmp_path / "sfops.toml")
    assert config.kafka is not None
    assert config.kafka.security.describe() == "SASL_SSL (SCRAM-SHA-512, user sfops)"
