"""The lab's Kubernetes exec credential plugin (client.authentication.k8s.io/v1 and v1beta1).

It hands out a real, bound service-account token (the TokenRequest API of the lab's API
server, called with the lab's token-minter client certificate, whose only right is `create
serviceaccounts/token` on sfops's ServiceAccounts) and declares a short expiry (``--declare``,
20 s) although the token lives an hour: sfops must run the plugin again once the declared
expiry has passed. The minted token is cached in the state directory (0600) and minted anew
only when near its real expiry, so a run costs a Python start and a file read.

Every run appends a line to ``<state>/<name>.calls`` (``<epoch> ok`` or ``<epoch> bad``). A
file ``<state>/<name>.bad-once`` makes the next run hand out a bad token, once: the API server
answers it with 401, and sfops must run the plugin again and repeat the request.

Usage (what the lab's kubeconfigs run; only the standard library, so ``-I -S`` is fine):
  python3 -I -S k8s-credential.py --state DIR --account SA [--namespace NS]
          [--declare SECONDS] [--name NAME]
The cluster (server, CA) comes from KUBERNETES_EXEC_INFO: the kubeconfig sets
``provideClusterInfo: true``.
"""

from __future__ import annotations

import json
import os
import sys
import time

LIFETIME = 3600  # the real token's (the TokenRequest minimum is 600)
REMINT_MARGIN = 600  # mint anew when the cached token has less than this left
BAD_TOKEN = "sfops-lab-bad-token"  # noqa: S105 - a deliberately invalid token
DEFAULTS = {"namespace": "streamforge", "declare": "20", "name": ""}


def fail(message: str) -> None:
    sys.stderr.write(f"k8s-credential: {message}\n")
    raise SystemExit(1)


def options(argv: list[str]) -> dict[str, str]:
    found = dict(DEFAULTS)
    pairs = iter(argv)
    for flag in pairs:
        if not flag.startswith("--") or flag[2:] not in (*DEFAULTS, "state", "account"):
            fail(f"unknown argument {flag!r}")
        found[flag[2:]] = next(pairs, "")
    for required in ("state", "account"):
        if not found.get(required):
            fail(f"--{required} is required")
    found["name"] = found["name"] or found["account"]
    return found


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def take_flag(path: str) -> bool:
    """True once per flag file (unlink succeeds for one run only)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def adopt(path: str) -> None:
    """Root (the tests) and the lab's operator (sfops over SSH) both run the plugin: what
    root creates is handed to the state directory's owner."""
    if os.geteuid() == 0:
        owner = os.stat(os.path.dirname(path))
        os.chown(path, owner.st_uid, owner.st_gid)


def write_private(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    adopt(tmp)
    os.replace(tmp, path)


def mint(opts: dict[str, str], cluster: dict[str, object], now: float) -> dict[str, object]:
    import base64
    import http.client
    import ssl
    from urllib.parse import urlsplit

    server = str(cluster.get("server") or "")
    ca = str(cluster.get("certificate-authority-data") or "")
    if not server or not ca:
        fail("no cluster in KUBERNETES_EXEC_INFO (the kubeconfig needs provideClusterInfo)")
    context = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
    state = opts["state"]
    context.load_cert_chain(os.path.join(state, "minter.crt"), os.path.join(state, "minter.key"))
    url = urlsplit(server)
    connection = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port or 443,
                                             context=context, timeout=10)
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": LIFETIME}})
    path = (f"/api/v1/namespaces/{opts['namespace']}/serviceaccounts/{opts['account']}"
            "/token")
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json",
                                                "Accept": "application/json"})
        response = connection.getresponse()
        answer = response.read()
    except OSError as exc:
        fail(f"TokenRequest for {opts['account']}: {exc}")
    if response.status != 201:
        fail(f"TokenRequest for {opts['account']}: HTTP {response.status}")
    token = json.loads(answer)["status"]["token"]
    return {"token": token, "expires": now + LIFETIME}


def real_token(opts: dict[str, str], cluster: dict[str, object], now: float) -> str:
    cache = os.path.join(opts["state"], f"{opts['account']}.token")
    try:
        with open(cache) as handle:
            cached = json.load(handle)
        if float(cached["expires"]) - now > REMINT_MARGIN:
            return str(cached["token"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    minted = mint(opts, cluster, now)
    write_private(cache, json.dumps(minted))
    return str(minted["token"])


def main(argv: list[str]) -> None:
    opts = options(argv)
    info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")
    api_version = info.get("apiVersion") or "client.authentication.k8s.io/v1"
    cluster = (info.get("spec") or {}).get("cluster") or {}
    now = time.time()
    state, name = opts["state"], opts["name"]
    bad = take_flag(os.path.join(state, f"{name}.bad-once"))
    token = BAD_TOKEN if bad else real_token(opts, cluster, now)
    counter = os.path.join(state, f"{name}.calls")
    with open(counter, "a") as calls:  # one short append: atomic
        calls.write(f"{now:.3f} {'bad' if bad else 'ok'}\n")
    adopt(counter)
    sys.stdout.write(json.dumps({
        "apiVersion": api_version, "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": iso(now + float(opts["declare"]))},
    }) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
