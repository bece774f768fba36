"""The lab's certificates, made with the openssl CLI (EC P-256, ten years: a throw-away lab).

Two certificate authorities, each in its own directory: the Kubernetes control plane's
(``<lab>/k8s/pki``, see k8s_pki.py) and the services' (``<lab>/tls``): the CA that PostgreSQL's
and Kafka's server certificates chain to and that sfops verifies them against — the lab runs
secured, so every test goes through the verified paths. Idempotent: a certificate that exists
is kept.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path

from deploy.lab.core import Lab, run

EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
DAYS = "3650"
SERVICE_CA_NAME = "sfops-lab-service-ca"
LOCAL_SANS = ("IP:127.0.0.1", "DNS:localhost")


def _openssl(*args: str) -> None:
    run(["openssl", *args], what=f"openssl {args[0]}")


def ensure_ca(directory: Path, common_name: str) -> Path:
    """``directory``/ca.crt (and ca.key), made when missing; returns the certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / "ca.crt", directory / "ca.key"
    if not crt.exists():
        _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(crt), "-days", DAYS,
                 "-subj", f"/CN={common_name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        key.chmod(0o600)
    return crt


def issue(directory: Path, stem: str, subject: str, sans: Sequence[str] | None = None,
          *, owner: str | None = None) -> tuple[Path, Path]:
    """``directory``/``stem``.crt and .key signed by the CA in ``directory`` (a server and
    client certificate with ``sans``, a client-only one without). The key is 0600 and, with
    ``owner``, owned by that OS user (PostgreSQL refuses a key it does not own)."""
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    if not crt.exists():
        csr, ext = directory / f"{stem}.csr", directory / f"{stem}.ext"
        usage = "serverAuth,clientAuth" if sans else "clientAuth"
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", *EC, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.crt"),
                 "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-out", str(crt),
                 "-days", DAYS, "-extfile", str(ext))
        csr.unlink()
    key.chmod(0o600)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(key, entry.pw_uid, entry.pw_gid)
        os.chown(crt, entry.pw_uid, entry.pw_gid)
    return crt, key


def service_dir(lab: Lab) -> Path:
    return lab.path("tls")


def service_ca(lab: Lab) -> Path:
    """The services' CA certificate (what sfops's ``sslrootcert`` / ``ssl.ca.location`` name)."""
    return ensure_ca(service_dir(lab), SERVICE_CA_NAME)


def server_certificate(lab: Lab, stem: str, *, owner: str | None = None,
                       sans: Sequence[str] = LOCAL_SANS) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1/localhost signed by the services' CA."""
    service_ca(lab)
    return issue(service_dir(lab), stem, f"/CN={stem}", sans, owner=owner)
