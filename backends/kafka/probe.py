"""Does a broker *process requests* now? One ApiVersions (v0) request, on plain asyncio
sockets in the sfops process, each probe bounded by a timeout.

A TCP connect is not enough: the kernel completes the handshake for a SIGSTOPped or wedged JVM
from the listen backlog. ApiVersions is the first request every client sends, needs no
authorisation and no metadata — on a SASL listener it is allowed before the login — and is
answered by the broker's request threads. On a TLS listener (``security_protocol`` SSL or
SASL_SSL) the probe speaks TLS with the same verification as every other connection: a wrong
CA fails here first, with the ``[kafka]`` key to fix (:mod:`backends.kafka.security`).

Why not the AdminClient: it lives in the admin worker process and may be waiting on a slow
earlier call; the probe must answer within one refresh, whatever the worker does.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import struct
from collections.abc import Sequence

API_VERSIONS = 18
CLIENT_ID = b"sfops"
MAX_RESPONSE_BYTES = 1024 * 1024
_correlation = itertools.count(1)


def parse_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093"`` as ``[("h1", 9092), ("::1", 9093)]``."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in items:
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


class ProbeFailed(Exception):
    pass


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> bytes:
    writer.write(struct.pack(">i", len(request)) + request)
    await writer.drain()
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    if not 0 < size <= MAX_RESPONSE_BYTES:
        raise ProbeFailed(f"response size {size} out of range")
    return await reader.readexactly(size)


async def answers(host: str, port: int, *, timeout: float,  # noqa: ASYNC109
                  tls: ssl.SSLContext | None = None) -> str | None:
    """None when the broker answered an ApiVersions request within ``timeout``, else why
    not (with ``tls``, a TLS handshake that fails verification says so)."""
    correlation_id = next(_correlation)
    # Request header v1 (ApiVersions v0 is not "flexible"): key, version, correlation, client.
    request = (struct.pack(">hhih", API_VERSIONS, 0, correlation_id, len(CLIENT_ID))
               + CLIENT_ID)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls is not None else None)
            try:
                data = await _exchange(reader, writer, request)
            finally:
                writer.close()
    except TimeoutError:
        return f"no answer to ApiVersions within {timeout:g} s"
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: certificate verify failed: {exc.verify_message}"
    except (OSError, asyncio.IncompleteReadError, ProbeFailed) as exc:
        return str(exc) or type(exc).__name__
    if len(data) < 6:
        return "short ApiVersions response"
    got_id, error_code = struct.unpack(">ih", data[:6])
    if got_id != correlation_id:
        return f"ApiVersions answer for another request ({got_id} != {correlation_id})"
    if error_code != 0:
        return f"ApiVersions error {error_code}"
    return None
