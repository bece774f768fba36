"""Reading a kubeconfig into a :class:`~backends.kubernetes.client.Connection`.

The ``kubernetes`` package's loader reads contexts, clusters, inline certificates and static
tokens. Exec plugins and token files are taken out of the user before it sees them (it would
run the plugin at once, synchronously, with this process's whole environment, or read the file
once for good): their credentials come from :mod:`backends.kubernetes.credentials` at every
request. The cluster's ``proxy-url`` is honoured (http and https proxies).
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from backends.kubernetes.client import Connection, KubeError
from backends.kubernetes.credentials import (
    CredentialSourceType,
    exec_source,
    parse_exec,
    token_file_source,
)
from backends.secrets import redact_text, remember


def connection_from_kubeconfig(path: Path | None, context: str | None) -> Connection:
    """Resolve ``context`` (or the current one) of the kubeconfig at ``path`` (or the default
    ``$KUBECONFIG`` / ``~/.kube/config``). Raises :class:`KubeError` with a readable message."""
    from kubernetes import client as k8s_client
    from kubernetes.config import kube_config

    configuration = k8s_client.Configuration()
    where = f"kubeconfig {path}" if path is not None else "default kubeconfig"
    try:
        # The loader's own steps (load_kube_config), with exec and tokenFile taken out of
        # the user first: their credentials are ours to get, at every request.
        merger = kube_config.KubeConfigMerger(  # type: ignore[no-untyped-call]
            str(path) if path is not None else kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
        if merger.config is None:
            raise KubeError(f"{where}: no configuration found")
        loader = kube_config.KubeConfigLoader(  # type: ignore[no-untyped-call]
            config_dict=merger.config, active_context=context, config_base_path=None)
        auth = split_kubeconfig_auth(merger.config, loader.current_context, where)
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except KubeError:
        raise
    except Exception as exc:  # ConfigException, OSError, YAML errors: all "bad kubeconfig"
        # A YAML error quotes the line it stopped at, which may be a `token:` line.
        raise KubeError(redact_text(f"{where}: {exc}")) from exc
    proxy_url, proxy_authorization = _proxy(getattr(configuration, "proxy", None), where)
    token = configuration.api_key.get("BearerToken") or configuration.api_key.get(
        "authorization")
    if token and not str(token).lower().startswith("bearer "):
        token = f"Bearer {token}"
    if token:
        # A known secret from here on: redacted by value wherever text leaves sfops.
        remember(str(token).split(" ", 1)[-1])
    return Connection(
        host=str(configuration.host).rstrip("/"),
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        token=token,
        verify=bool(configuration.verify_ssl),
        tls_server_name=getattr(configuration, "tls_server_name", None),
        context=context,
        credentials=auth.source,
        proxy_url=proxy_url,
        proxy_authorization=proxy_authorization,
    )


PROXY_SCHEMES = ("http", "https")


def _proxy(url: str | None, where: str) -> tuple[str | None, str | None]:
    """The cluster's ``proxy-url`` for aiohttp: the URL without userinfo, and its
    Proxy-Authorization. SOCKS is refused by name (aiohttp speaks HTTP proxies only)."""
    if not url:
        return None, None
    from yarl import URL

    key = f"{where}: clusters[].cluster.proxy-url"
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise KubeError(f"{key}: not a URL: {exc}") from None
    if parsed.scheme not in PROXY_SCHEMES or not parsed.host:
        raise KubeError(f"{key}: {parsed.scheme or 'no'} scheme: sfops supports http:// and "
                        f"https:// proxies (not SOCKS)")
    authorization = None
    if parsed.user is not None:
        remember(parsed.password)
        authorization = aiohttp.encode_basic_auth(parsed.user, parsed.password or "")
    return str(parsed.with_user(None)), authorization


@dataclass(frozen=True)
class KubeconfigAuth:
    """What :func:`split_kubeconfig_auth` took out of the kubeconfig before the ``kubernetes``
    package's loader sees it."""

    source: CredentialSourceType | None = None


def _named(items: Any, name: str) -> tuple[dict[str, Any], str | None] | None:
    """The raw entry named ``name`` in a merged kubeconfig list, and the file it came from."""
    for item in items or ():
        raw = getattr(item, "value", item)  # the merger wraps entries in ConfigNodes
        if isinstance(raw, dict) and raw.get("name") == name:
            return raw, getattr(item, "path", None)
    return None


def cluster_info(cluster: Mapping[str, Any], directory: str | None) -> dict[str, Any]:
    """``spec.cluster`` for a plugin with provideClusterInfo, as client-go fills it (the CA
    always as data)."""
    info: dict[str, Any] = {}
    for key in ("server", "tls-server-name", "insecure-skip-tls-verify", "proxy-url",
                "disable-compression"):
        if key in cluster:
            info[key] = cluster[key]
    if cluster.get("certificate-authority-data"):
        info["certificate-authority-data"] = cluster["certificate-authority-data"]
    elif cluster.get("certificate-authority"):
        path = Path(str(cluster["certificate-authority"]))
        if directory and not path.is_absolute():
            path = Path(directory) / path
        with contextlib.suppress(OSError):
            info["certificate-authority-data"] = base64.b64encode(path.read_bytes()).decode()
    for extension in cluster.get("extensions") or ():
        if isinstance(extension, Mapping) and \
                extension.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = extension.get("extension")
    return info


def split_kubeconfig_auth(merged: Any, context: Mapping[str, Any], where: str
                          ) -> KubeconfigAuth:
    """Take ``exec`` and ``tokenFile`` out of the context's user (the loader would run the
    plugin at once, or read the file once for good) and make their credential source.

    As client-go: a static ``token`` wins over both (it is sent as is); ``tokenFile`` is read
    periodically; ``exec`` runs the plugin."""
    body = context.get("context") or {}
    user_name = body.get("user")
    if not user_name:
        return KubeconfigAuth()
    found = _named(merged.value.get("users"), user_name)
    if found is None:
        return KubeconfigAuth()
    entry, origin = found
    user = entry.get("user") or {}
    directory = os.path.dirname(os.path.abspath(origin)) if origin else None
    exec_raw = user.pop("exec", None)
    token_file = user.pop("tokenFile", None)
    if user.get("token"):
        return KubeconfigAuth()
    if token_file:
        path = Path(os.path.expanduser(str(token_file)))
        if directory and not path.is_absolute():
            path = Path(directory) / path
        return KubeconfigAuth(source=token_file_source(path, user_name))
    if exec_raw is not None:
        cluster_name = body.get("cluster")
        cluster = _named(merged.value.get("clusters"), cluster_name) if cluster_name else None
        info = cluster_info((cluster[0].get("cluster") or {}) if cluster else {}, directory)
        spec = parse_exec(exec_raw, user_name, where, directory, info)
        return KubeconfigAuth(source=exec_source(spec))
    return KubeconfigAuth()
