"""`nginx -t` on the shipped deploy/nginx configuration with the compose service names resolvable.

nginx resolves upstream host names when it loads its configuration, through the system
resolver. The test copies deploy/nginx into a temporary prefix, rewrites only file paths (the
upstream keeps api1..3, unlike the lab's render), and runs `nginx -t` in a private mount
namespace where a temporary hosts file is bind-mounted over /etc/hosts: the machine's own
/etc/hosts is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UNSHARE = shutil.which("unshare")
SERVICE_NAMES = ("api1", "api2", "api3")

pytestmark = [
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed"),
    pytest.mark.skipif(
        UNSHARE is None or os.geteuid() != 0,
        reason="needs root and unshare(1) for a private mount namespace",
    ),
]


def render_paths(text: str, prefix: Path) -> str:
    """File locations only: hosts, ports and every directive stay as shipped."""
    for old, new in (
        ("/var/log/nginx/", f"{prefix}/logs/"),
        ("/var/cache/nginx/", f"{prefix}/cache/"),
        ("/var/run/nginx.pid", f"{prefix}/nginx.pid"),
        ("/etc/nginx/conf.d/", f"{prefix}/conf.d/"),
    ):
        text = text.replace(old, new)
    return text


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "nginx.conf").write_text(
        render_paths((SOURCE / "nginx.conf").read_text(), tmp_path)
    )
    for source in sorted((SOURCE / "conf.d").glob("*.conf")):
        (tmp_path / "conf.d" / source.name).write_text(render_paths(source.read_text(), tmp_path))
    return tmp_path


def nginx_test(prefix: Path, hosts: str) -> subprocess.CompletedProcess[str]:
    hosts_file = prefix / "hosts"
    hosts_file.write_text(hosts)
    script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
    argv = [
        UNSHARE or "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script, "sh", str(hosts_file),
        NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
        "-e", str(prefix / "logs" / "error.log"),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_rendering_changes_only_paths(prefix: Path) -> None:
    upstream = (prefix / "conf.d" / "upstream.conf").read_text()
    for name in SERVICE_NAMES:
        assert f"server {name}:8000" in upstream
    assert "listen 80;" in (prefix / "conf.d" / "streamforge.conf").read_text()
    assert "/var/" not in (prefix / "nginx.conf").read_text()


def test_shipped_configuration_passes_nginx_t(prefix: Path) -> None:
    hosts = "127.0.0.1 localhost\n" + "".join(
        f"10.88.0.{i} {name}\n" for i, name in enumerate(SERVICE_NAMES, start=11)
    )
    result = nginx_test(prefix, hosts)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_does_resolve_the_upstream_names(prefix: Path) -> None:
    """Without the mapping the same check fails on the names, so the pass above is meaningful
    (and the private /etc/hosts really is what nginx read)."""
    result = nginx_test(prefix, "127.0.0.1 localhost\n")
    assert result.returncode != 0
    assert 'host not found in upstream "api1:8000"' in result.stderr


def test_private_hosts_file_does_not_leak() -> None:
    before = Path("/etc/hosts").read_text()
    assert "10.88.0.11" not in before
