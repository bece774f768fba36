"""Support for the lab's Kubernetes: binaries, paths, the lab CA and kubeconfigs, kubectl.

The CA and every certificate are made with the openssl CLI at the first ``lab up`` under
``<lab>/k8s/pki`` (EC P-256, ten years: a throw-away lab). Kubeconfigs embed their credentials.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from deploy.lab import tls
from deploy.lab.core import Lab, LabError, run, write_atomic

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "deploy" / "lab" / "install" / "k8s.sh"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)

CONTEXT = "sfops-lab"
NAMESPACE = "streamforge"
OFF_APISERVER = 43
TOKEN_MINTER = "sfops-lab-token-minter"  # noqa: S105 - a user name (CN), not a secret


# -- binaries --------------------------------------------------------------------------------
@functools.cache
def bin_dir() -> Path:
    out = run(["bash", str(INSTALL_SCRIPT), "--print-dir"], what="k8s install (print dir)")
    return Path(out.strip())


def ensure_binaries(lab: Lab) -> Path:
    """Build missing binaries (a cold build takes a long while; a warm call returns at once)."""
    directory = bin_dir()
    if all((directory / n).exists() for n in BINARIES):
        return directory
    lab.progress(f"k8s: building control-plane binaries into {directory} (cold build, see README)")
    proc = subprocess.Popen(
        ["bash", str(INSTALL_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        lab.progress(line.rstrip())
    if proc.wait() != 0:
        raise LabError(f"k8s: {INSTALL_SCRIPT} failed (exit {proc.returncode})")
    return directory


def kubectl(
    lab: Lab,
    *args: str,
    kubeconfig: Path | None = None,
    input_text: str | None = None,
    timeout: float = 60.0,
) -> str:
    config = kubeconfig or admin_kubeconfig(lab)
    return run(
        [str(bin_dir() / "kubectl"), f"--kubeconfig={config}", *args],
        what=f"kubectl {' '.join(args[:3])}",
        input_text=input_text,
        timeout=timeout,
    )


# -- paths -----------------------------------------------------------------------------------
def k8s_dir(lab: Lab) -> Path:
    return lab.path("k8s")


def pki(lab: Lab, name: str) -> Path:
    return lab.path("k8s", "pki", name)


def admin_kubeconfig(lab: Lab) -> Path:
    return lab.path("k8s", "admin.kubeconfig")


def readonly_kubeconfig(lab: Lab) -> Path:
    return lab.path("k8s", "readonly.kubeconfig")


def operator_kubeconfig(lab: Lab) -> Path:
    return lab.path("k8s", "operator.kubeconfig")


def apiserver_url(lab: Lab) -> str:
    return f"https://127.0.0.1:{lab.port(OFF_APISERVER)}"


# -- PKI ---------------------------------------------------------------------------------------
# (file stem, subject, SANs or None for a client-only certificate)
def _certificates(lab: Lab) -> list[tuple[str, str, list[str] | None]]:
    api_sans = [
        "IP:127.0.0.1",
        "IP:10.96.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    return [
        ("etcd-server", "/CN=etcd-server", ["IP:127.0.0.1", "DNS:localhost"]),
        ("apiserver-etcd-client", "/CN=kube-apiserver-etcd-client", None),
        ("apiserver", "/CN=kube-apiserver", api_sans),
        ("admin", "/O=system:masters/CN=sfops-lab-admin", None),
        ("controller-manager", "/CN=system:kube-controller-manager", None),
        ("scheduler", "/CN=system:kube-scheduler", None),
        # kwok writes node and pod status, leases and events cluster-wide.
        ("kwok", "/O=system:masters/CN=kwok", None),
        # The lab's exec credential plugin: may only mint sfops's ServiceAccount tokens
        # (deploy/lab/k8s-credential-rbac.yaml).
        ("token-minter", f"/CN={TOKEN_MINTER}", None),
    ]


def ensure_pki(lab: Lab) -> None:
    """Lab CA, one certificate per client/server, and the service-account key (idempotent)."""
    directory = pki(lab, "x").parent
    tls.ensure_ca(directory, "sfops-lab-ca")
    if not pki(lab, "sa.key").exists():
        run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
             str(pki(lab, "sa.key"))], what="openssl ecparam")
        run(["openssl", "ec", "-in", str(pki(lab, "sa.key")), "-pubout", "-out",
             str(pki(lab, "sa.pub"))], what="openssl ec")
    for stem, subject, sans in _certificates(lab):
        tls.issue(directory, stem, subject, sans)
    for path in directory.glob("*.key"):
        path.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(lab: Lab, user: str, credentials: dict[str, Any]) -> str:
    # JSON is valid YAML; kubectl and the Python client both read it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": apiserver_url(lab),
                    "certificate-authority-data": _b64(pki(lab, "ca.crt")),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": NAMESPACE}}
        ],
        "current-context": CONTEXT,
    }
    return json.dumps(config, indent=2) + "\n"


def cert_kubeconfig(lab: Lab, stem: str) -> Path:
    path = lab.path("k8s", f"{stem}.kubeconfig")
    creds = {
        "client-certificate-data": _b64(pki(lab, f"{stem}.crt")),
        "client-key-data": _b64(pki(lab, f"{stem}.key")),
    }
    write_atomic(path, kubeconfig_text(lab, stem, creds), mode=0o600)
    return path


def https_ok(url: str, lab: Lab, *, verify: bool = True) -> bool:
    if verify:
        context = ssl.create_default_context(cafile=str(pki(lab, "ca.crt")))
        context.load_cert_chain(str(pki(lab, "admin.crt")), str(pki(lab, "admin.key")))
    else:  # controller-manager and scheduler serve a self-signed certificate of their own
        context = ssl._create_unverified_context()  # noqa: S323 - loopback health probe only
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
        return bool(response.status == 200 and response.read().strip() == b"ok")
