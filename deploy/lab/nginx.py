"""Lab nginx: the deploy/nginx configuration with only hosts, ports and paths substituted."""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from deploy.lab import api
from deploy.lab.core import Component, Lab, write_atomic

SOURCE = Path(__file__).resolve().parent.parent / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPERATOR_USER = "sfops-lab"  # the lab's unprivileged operator (also the SSH test user)
PORT_OFFSET = 0
# Upstream member names in deploy/nginx (compose service names) -> lab worker names.
MEMBERS = {"api1": "api-1", "api2": "api-2", "api3": "api-3"}


def operator_user() -> str | None:
    try:
        pwd.getpwnam(OPERATOR_USER)
    except KeyError:
        return None
    return OPERATOR_USER


def render(text: str, lab: Lab, prefix: Path) -> str:
    """Substitute hosts, ports and paths; nothing else changes (one source of truth)."""
    text = text.replace("/var/log/nginx/", f"{prefix}/logs/")
    text = text.replace("/var/cache/nginx/", f"{prefix}/cache/")
    text = text.replace("/var/run/nginx.pid", f"{prefix}/nginx.pid")
    text = text.replace("/etc/nginx/conf.d/", f"{prefix}/conf.d/")
    text = re.sub(r"\blisten 80;", f"listen 127.0.0.1:{lab.port(PORT_OFFSET)};", text)
    for compose_name, worker in MEMBERS.items():
        text = text.replace(f"server {compose_name}:8000", f"server {worker_address(lab, worker)}")
    return text


def worker_address(lab: Lab, worker: str) -> str:
    return f"127.0.0.1:{lab.port(api.WORKERS[worker])}"


class Nginx(Component):
    name = "nginx"
    group = "nginx"
    ready_timeout = 20.0

    def __init__(self) -> None:
        self.user = operator_user()

    def prefix(self, lab: Lab) -> Path:
        return lab.path("nginx")

    def ports(self, lab: Lab) -> Sequence[int]:
        return (lab.port(PORT_OFFSET),)

    def prepare(self, lab: Lab) -> None:
        prefix = self.prefix(lab)
        for sub in ("logs", "cache"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        write_atomic(
            prefix / "nginx.conf", render((SOURCE / "nginx.conf").read_text(), lab, prefix)
        )
        for source in sorted((SOURCE / "conf.d").glob("*.conf")):
            target = prefix / "conf.d" / source.name
            # The upstream file carries drain state that sfops owns: never overwrite it.
            if source.name == "upstream.conf" and target.exists():
                continue
            write_atomic(target, render(source.read_text(), lab, prefix))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for root, dirs, files in os.walk(prefix):
                for item in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(item, entry.pw_uid, entry.pw_gid)

    def argv(self, lab: Lab) -> list[str]:
        prefix = self.prefix(lab)
        return [
            NGINX,
            "-p", str(prefix),
            "-c", str(prefix / "nginx.conf"),
            "-e", str(prefix / "logs" / "error.log"),
            "-g", "daemon off;",
        ]  # fmt: skip

    def cwd(self, lab: Lab) -> Path:
        return self.prefix(lab)

    def ready(self, lab: Lab) -> bool:
        response = httpx.get(f"http://127.0.0.1:{lab.port(PORT_OFFSET)}/nginx-health", timeout=2.0)
        return response.status_code == 200


COMPONENTS: list[Component] = [Nginx()]
VERIFY_TIMEOUT = 15.0


def sfops_config(lab: Lab) -> dict[str, Any]:
    prefix = lab.path("nginx")
    port = lab.port(PORT_OFFSET)
    return {
        "nginx": {
            "executor": "local",
            "nginx_binary": NGINX,
            "prefix": str(prefix),
            "config_file": str(prefix / "nginx.conf"),
            "pid_file": str(prefix / "nginx.pid"),
            "upstream_name": "api_backend",
            "upstream_file": str(prefix / "conf.d" / "upstream.conf"),
            "access_log": str(prefix / "logs" / "access.json"),
            "stub_status_url": f"http://127.0.0.1:{port}/nginx_status",
            "url": f"http://127.0.0.1:{port}",
            "members": {
                worker: {
                    "address": worker_address(lab, worker),
                    "health_url": f"http://{worker_address(lab, worker)}/health/ready",
                }
                for worker in MEMBERS.values()
            },
        },
        # The write-path canary (sfops verify, and after every action) enters where users'
        # writes do: nginx's listen.
        "verify": {"url": f"http://127.0.0.1:{port}", "timeout": VERIFY_TIMEOUT},
    }
