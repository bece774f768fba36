"""The lab's Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) with kwok simulating the nodes and the pods' lifecycle.

Everything speaks TLS signed by a lab CA made at the first ``lab up`` (``<lab>/k8s/pki``);
RBAC is on. ``<lab>/k8s/admin.kubeconfig`` is cluster-admin; ``readonly.kubeconfig`` is the
ServiceAccount ``streamforge/sfops`` (view-only ClusterRole from ``deploy/k8s/``), with a token
from the TokenRequest API; ``operator.kubeconfig`` is ``streamforge/sfops-operator``.

Binaries come from ``deploy/lab/install/k8s.sh`` (built once per machine into a versioned
cache). Ports: ``lab.port(40..49)``.

Test hooks (see ``set_pod_ready`` / ``record_unhealthy_event``): kwok's fast pod stage only
acts on Pending pods, so once a pod is Running its Ready condition is ours to patch through the
status subresource, and the Deployment controller and PDB react as they would to a kubelet.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.lab.core import Component, Lab, LabError, run, write_atomic

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "deploy" / "lab" / "install" / "k8s.sh"
MANIFESTS = REPO / "deploy" / "k8s"
KWOK_STAGES = REPO / "deploy" / "k8s-tools" / "kwok" / "stages.yaml"

CONTEXT = "sfops-lab"
NAMESPACE = "streamforge"
DEPLOYMENT = "streamforge-api"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

OFF_ETCD_CLIENT, OFF_ETCD_PEER, OFF_ETCD_METRICS = 40, 41, 42
OFF_APISERVER, OFF_CONTROLLER_MANAGER, OFF_SCHEDULER, OFF_KWOK = 43, 46, 47, 48


# -- binaries --------------------------------------------------------------------------------
@functools.cache
def bin_dir() -> Path:
    out = run(["bash", str(INSTALL_SCRIPT), "--print-dir"], what="k8s install (print dir)")
    return Path(out.strip())


def ensure_binaries(lab: Lab) -> Path:
    """Build missing binaries (a cold build takes a long while; a warm call returns at once)."""
    directory = bin_dir()
    names = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kwok",
    ]
    if all((directory / n).exists() for n in names):
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
    ]


def _openssl(*args: str) -> None:
    run(["openssl", *args], what=f"openssl {args[0]}")


def ensure_pki(lab: Lab) -> None:
    """Lab CA, one certificate per client/server, and the service-account key (idempotent)."""
    pki(lab, "x").parent.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not pki(lab, "ca.crt").exists():
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(pki(lab, "ca.key")),
            "-out",
            str(pki(lab, "ca.crt")),
            "-days",
            "3650",
            "-subj",
            "/CN=sfops-lab-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )
    if not pki(lab, "sa.key").exists():
        _openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki(lab, "sa.key"))
        )
        _openssl("ec", "-in", str(pki(lab, "sa.key")), "-pubout", "-out", str(pki(lab, "sa.pub")))
    for stem, subject, sans in _certificates(lab):
        crt, key, csr, ext = (pki(lab, f"{stem}.{s}") for s in ("crt", "key", "csr", "ext"))
        if crt.exists():
            continue
        usage = "serverAuth,clientAuth" if sans else "clientAuth"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(pki(lab, "ca.crt")),
            "-CAkey",
            str(pki(lab, "ca.key")),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "3650",
            "-extfile",
            str(ext),
        )
        csr.unlink()
    for path in pki(lab, "x").parent.glob("*.key"):
        path.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(lab: Lab, user: str, credentials: dict[str, str]) -> str:
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


def _https_ok(url: str, lab: Lab, *, verify: bool = True) -> bool:
    if verify:
        context = ssl.create_default_context(cafile=str(pki(lab, "ca.crt")))
        context.load_cert_chain(str(pki(lab, "admin.crt")), str(pki(lab, "admin.key")))
    else:  # controller-manager and scheduler serve a self-signed certificate of their own
        context = ssl._create_unverified_context()  # noqa: S323 - loopback health probe only
    with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
        return bool(response.status == 200 and response.read().strip() == b"ok")


# -- components --------------------------------------------------------------------------------
class Etcd(Component):
    name = "etcd"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_ETCD_CLIENT), lab.port(OFF_ETCD_PEER), lab.port(OFF_ETCD_METRICS)]

    def prepare(self, lab: Lab) -> None:
        ensure_binaries(lab)
        ensure_pki(lab)
        for stem in ("admin", "controller-manager", "scheduler", "kwok"):
            cert_kubeconfig(lab, stem)

    def argv(self, lab: Lab) -> list[str]:
        client = f"https://127.0.0.1:{lab.port(OFF_ETCD_CLIENT)}"
        peer = f"http://127.0.0.1:{lab.port(OFF_ETCD_PEER)}"
        return [
            str(bin_dir() / "etcd"),
            "--name=lab",
            f"--data-dir={lab.path('k8s', 'etcd')}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lab={peer}",
            f"--listen-metrics-urls=http://127.0.0.1:{lab.port(OFF_ETCD_METRICS)}",
            f"--cert-file={pki(lab, 'etcd-server.crt')}",
            f"--key-file={pki(lab, 'etcd-server.key')}",
            f"--trusted-ca-file={pki(lab, 'ca.crt')}",
            "--client-cert-auth",
            # A throw-away lab: no fsync keeps a 2-core machine's disk out of the hot path.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def ready(self, lab: Lab) -> bool:
        url = f"http://127.0.0.1:{lab.port(OFF_ETCD_METRICS)}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")


class KubeApiserver(Component):
    name = "kube-apiserver"
    group = "k8s"
    ready_timeout = 90.0

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_APISERVER)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-apiserver"),
            f"--etcd-servers=https://127.0.0.1:{lab.port(OFF_ETCD_CLIENT)}",
            f"--etcd-cafile={pki(lab, 'ca.crt')}",
            f"--etcd-certfile={pki(lab, 'apiserver-etcd-client.crt')}",
            f"--etcd-keyfile={pki(lab, 'apiserver-etcd-client.key')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_APISERVER)}",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback address for the kubernetes Service.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki(lab, 'apiserver.crt')}",
            f"--tls-private-key-file={pki(lab, 'apiserver.key')}",
            f"--client-ca-file={pki(lab, 'ca.crt')}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki(lab, 'sa.pub')}",
            f"--service-account-signing-key-file={pki(lab, 'sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return _https_ok(f"{apiserver_url(lab)}/readyz", lab)


class KubeControllerManager(Component):
    name = "kube-controller-manager"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_CONTROLLER_MANAGER)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={lab.path('k8s', 'controller-manager.kubeconfig')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_CONTROLLER_MANAGER)}",
            f"--cert-dir={lab.path('k8s', 'controller-manager-serving')}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki(lab, 'sa.key')}",
            f"--root-ca-file={pki(lab, 'ca.crt')}",
            f"--cluster-signing-cert-file={pki(lab, 'ca.crt')}",
            f"--cluster-signing-key-file={pki(lab, 'ca.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Scale mode creates thousands of pods; the default 20 qps would take minutes.
            "--kube-api-qps=300",
            "--kube-api-burst=500",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return _https_ok(
            f"https://127.0.0.1:{lab.port(OFF_CONTROLLER_MANAGER)}/healthz", lab, verify=False
        )


class KubeScheduler(Component):
    name = "kube-scheduler"
    group = "k8s"

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_SCHEDULER)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kube-scheduler"),
            f"--kubeconfig={lab.path('k8s', 'scheduler.kubeconfig')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={lab.port(OFF_SCHEDULER)}",
            f"--cert-dir={lab.path('k8s', 'scheduler-serving')}",
            "--leader-elect=false",
            "--kube-api-qps=300",
            "--kube-api-burst=500",
            "--v=1",
        ]

    def ready(self, lab: Lab) -> bool:
        return _https_ok(f"https://127.0.0.1:{lab.port(OFF_SCHEDULER)}/healthz", lab, verify=False)


class Kwok(Component):
    name = "kwok"
    group = "k8s"
    ready_timeout = 30.0

    def ports(self, lab: Lab) -> list[int]:
        return [lab.port(OFF_KWOK)]

    def argv(self, lab: Lab) -> list[str]:
        return [
            str(bin_dir() / "kwok"),
            f"--kubeconfig={lab.path('k8s', 'kwok.kubeconfig')}",
            f"--config={KWOK_STAGES}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=10.0.0.1",
            "--cidr=10.244.0.0/16",
            f"--server-address=127.0.0.1:{lab.port(OFF_KWOK)}",
        ]

    def ready(self, lab: Lab) -> bool:
        url = f"http://127.0.0.1:{lab.port(OFF_KWOK)}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    def after_ready(self, lab: Lab) -> None:
        started = time.monotonic()
        apply_nodes(lab)
        apply_stack(lab)
        if lab.settings.k8s_pods > 0:
            apply_scale(lab)
        write_role_kubeconfigs(lab)
        wait_available(lab, NAMESPACE, [DEPLOYMENT], timeout=180)
        if lab.settings.k8s_pods > 0:
            wait_scale(lab, timeout=max(300.0, lab.settings.k8s_pods / 10))
        lab.progress(
            f"k8s: nodes, manifests and Deployments ready in {time.monotonic() - started:.1f}s"
        )


COMPONENTS: list[Component] = [
    Etcd(),
    KubeApiserver(),
    KubeControllerManager(),
    KubeScheduler(),
    Kwok(),
]


# -- cluster contents ------------------------------------------------------------------------
def node_manifest(name: str, pods_capacity: int) -> dict[str, Any]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": str(pods_capacity)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def apply_nodes(lab: Lab) -> None:
    count = max(1, lab.settings.k8s_nodes)
    per_node = max(110, -(-(lab.settings.k8s_pods + 10 * count) // count) * 2)
    items = [node_manifest(f"kwok-node-{i}", per_node) for i in range(count)]
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--field-manager=sfops-lab",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=max(60.0, count / 5),
    )


def apply_stack(lab: Lab) -> None:
    """deploy/k8s/ as a user would apply it, plus the Secret the template describes."""
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=sfops-lab",
        "-k",
        str(MANIFESTS),
    )
    # Created once with a random password; never overwritten (pods may have read it).
    existing = run(
        [
            str(bin_dir() / "kubectl"),
            f"--kubeconfig={admin_kubeconfig(lab)}",
            "-n",
            NAMESPACE,
            "get",
            "secret",
            "streamforge-api-secrets",
            "--ignore-not-found",
            "-o",
            "name",
        ],
        what="kubectl get secret",
    )
    if not existing.strip():
        kubectl(
            lab,
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "streamforge-api-secrets",
            "--from-literal=DATABASE_USER=streamforge",
            f"--from-literal=DATABASE_PASSWORD={secrets.token_urlsafe(24)}",
        )


def scale_layout(total_pods: int) -> list[tuple[str, str, int]]:
    """(namespace, deployment, replicas) spreading ``total_pods`` over several of each."""
    namespaces = max(1, min(10, total_pods // 500))
    per_namespace = 5
    slots = [(f"scale-{n}", f"load-{d}") for n in range(namespaces) for d in range(per_namespace)]
    base, extra = divmod(total_pods, len(slots))
    return [(ns, name, base + (1 if i < extra else 0)) for i, (ns, name) in enumerate(slots)]


def apply_scale(lab: Lab) -> None:
    items: list[dict[str, Any]] = []
    layout = scale_layout(lab.settings.k8s_pods)
    for namespace in sorted({ns for ns, _, _ in layout}):
        items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for namespace, name, replicas in layout:
        labels = {"app.kubernetes.io/name": name}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": "registry.example/load:1.0",
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                },
            }
        )
    kubectl(
        lab,
        "apply",
        "--server-side",
        "--field-manager=sfops-lab",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )


def wait_available(lab: Lab, namespace: str, names: list[str], timeout: float) -> None:
    for name in names:
        kubectl(
            lab,
            "-n",
            namespace,
            "wait",
            "--for=condition=Available",
            f"deployment/{name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )


def wait_scale(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    want = lab.settings.k8s_pods
    while True:
        out = kubectl(
            lab,
            "get",
            "deployments",
            "-A",
            "-l",
            "app.kubernetes.io/name",
            "-o",
            "json",
            timeout=120,
        )
        ready = sum(
            int(d["status"].get("readyReplicas", 0))
            for d in json.loads(out)["items"]
            if d["metadata"]["namespace"].startswith("scale-")
        )
        lab.progress(f"k8s scale: {ready}/{want} pods ready")
        if ready >= want:
            return
        if time.monotonic() > deadline:
            raise LabError(f"k8s scale: only {ready}/{want} pods ready after {timeout:.0f}s")
        time.sleep(5)


def service_account_token(lab: Lab, account: str, namespace: str = NAMESPACE) -> str:
    """A bound token from the TokenRequest API (what `kubectl create token` calls)."""
    return kubectl(lab, "-n", namespace, "create", "token", account, "--duration=48h").strip()


def write_role_kubeconfigs(lab: Lab) -> None:
    for account, path in (
        ("sfops", readonly_kubeconfig(lab)),
        ("sfops-operator", operator_kubeconfig(lab)),
    ):
        token = service_account_token(lab, account)
        write_atomic(
            path, kubeconfig_text(lab, f"{NAMESPACE}-{account}", {"token": token}), mode=0o600
        )


# -- test hooks --------------------------------------------------------------------------------
def set_pod_ready(lab: Lab, pod: str, ready: bool, namespace: str = NAMESPACE) -> None:
    """Make a pod's readiness fail or recover, as a kubelet would after its probes.

    kwok only drives Pending pods, so it does not undo this. Conditions merge by ``type``.
    """
    status = "True" if ready else "False"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reason = (
        {}
        if ready
        else {
            "reason": "ReadinessProbeFailed",
            "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        }
    )
    patch = {
        "status": {
            "conditions": [
                {"type": t, "status": status, "lastTransitionTime": now, **reason}
                for t in ("Ready", "ContainersReady")
            ],
        }
    }
    kubectl(
        lab,
        "-n",
        namespace,
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(patch),
    )


def record_unhealthy_event(
    lab: Lab, pod: str, namespace: str = NAMESPACE, probe: str = "Readiness"
) -> None:
    """A Warning event with reason Unhealthy, shaped like the kubelet's probe events."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "kind": "Pod",
            "name": pod,
            "namespace": namespace,
            "apiVersion": "v1",
            "fieldPath": "spec.containers{api}",
        },
        "type": "Warning",
        "reason": "Unhealthy",
        "message": f"{probe} probe failed: HTTP probe failed with statuscode: 503",
        "source": {"component": "kubelet"},
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
    kubectl(lab, "create", "-f", "-", input_text=json.dumps(event))


# -- sfops configuration -----------------------------------------------------------------------
def sfops_config(lab: Lab) -> dict[str, Any]:
    namespaces = [NAMESPACE]
    if lab.settings.k8s_pods > 0:
        namespaces += sorted({ns for ns, _, _ in scale_layout(lab.settings.k8s_pods)})
    return {
        "kubernetes": {
            "kubeconfig": str(admin_kubeconfig(lab)),
            "readonly_kubeconfig": str(readonly_kubeconfig(lab)),
            "operator_kubeconfig": str(operator_kubeconfig(lab)),
            "context": CONTEXT,
            "namespaces": namespaces,
        }
    }
