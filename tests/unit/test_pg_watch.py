"""The PostgreSQL watch: an idle connection per member whose loss calls ``on_lost`` at once.

Against a fake server speaking just enough of the v3 protocol for libpq to connect (it
answers the start-up and then only reads): closing its side is a killed server.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from backends.postgres.config import PostgresConfig, PostgresMember
from backends.postgres.connection import WATCH_APPLICATION_NAME, MemberConnection
from backends.postgres.model import MemberStatus
from backends.postgres.service import PostgresService


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class FakeServer:
    """Accepts sessions, records each start-up's parameters, keeps them open until told."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, str]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.ended = 0  # sessions whose client closed its side
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def kill(self) -> None:
        """As SIGKILL: every socket closed, nothing said."""
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: no
                    writer.write(b"N")
                    continue
                break
            fields = body[4:].split(b"\0")
            self.sessions.append({fields[i].decode(): fields[i + 1].decode()
                                  for i in range(0, len(fields) - 1, 2) if fields[i]})
            reply = _message(b"R", struct.pack("!i", 0))
            for key, value in (("server_version", "16.4"), ("client_encoding", "UTF8"),
                               ("standard_conforming_strings", "on")):
                reply += _message(b"S", key.encode() + b"\0" + value.encode() + b"\0")
            reply += _message(b"K", struct.pack("!ii", 4242, 1))
            reply += _message(b"Z", b"I")
            writer.write(reply)
            self.writers.append(writer)
            while await reader.read(4096):
                pass  # the watch sends nothing; a Terminate or EOF ends the session
            self.ended += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _config(port: int) -> PostgresConfig:
    member = PostgresMember("pg-1", "127.0.0.1", port)
    return PostgresConfig(dbname="app", user="sfops", members={"pg-1": member},
                          connect_timeout=2.0)


def _reachable(name: str = "pg-1", reachable: bool = True) -> MemberStatus:
    return MemberStatus(name=name, host="127.0.0.1", port=0, reachable=reachable)


async def _until(condition: Any, what: str) -> None:
    # A bound on waiting, not a timed assertion: a failure means it never happened.
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def _watched(port: int) -> tuple[PostgresService, list[str]]:
    """A service whose poll reached pg-1 with someone listening: pg-1's watch open; the
    members reported lost are appended to the list."""
    service = PostgresService(_config(port))
    lost: list[str] = []
    service.on_lost = lost.append
    service._update_watches([_reachable()])
    await _until(lambda: service.watching("pg-1"), "watch open")
    return service, lost


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_watch_returns_when_the_server_goes_away() -> None:
    async with FakeServer() as server:
        conn = MemberConnection(_config(server.port), _config(server.port).members["pg-1"])
        opened = asyncio.Event()
        task = asyncio.create_task(conn.watch(opened.set))
        await asyncio.wait_for(opened.wait(), 10)
        # The poll's read-only identity and session, told apart by its application_name.
        session = server.sessions[-1]
        assert session["application_name"] == WATCH_APPLICATION_NAME
        assert session["user"] == "sfops"
        assert "default_transaction_read_only=on" in session.get("options", "")
        assert not task.done()  # nothing to read: it waits
        server.kill()
        why = await asyncio.wait_for(task, 10)
        assert why  # libpq's reason, e.g. "server closed the connection unexpectedly"


async def test_service_calls_on_lost_and_reopens_only_at_a_later_poll() -> None:
    async with FakeServer() as server:
        service = PostgresService(_config(server.port))
        lost: list[str] = []
        service._update_watches([_reachable()])
        assert not service._watches  # nobody listens (the CLI): no watch connection
        service.on_lost = lost.append
        service._update_watches([_reachable()])
        await _until(lambda: service.watching("pg-1"), "watch open")
        assert len(server.sessions) == 1
        server.kill()
        await _until(lambda: lost, "on_lost called")
        assert lost == ["pg-1"] and not service.watching("pg-1")
        await asyncio.sleep(0.1)
        assert len(server.sessions) == 1  # no reconnect by itself
        service._update_watches([_reachable(reachable=False)])  # the woken poll: down
        assert len(server.sessions) == 1 and not _other_tasks()
        await service.close()


async def test_close_ends_every_watch_task_and_connection() -> None:
    async with FakeServer() as server:
        service, lost = await _watched(server.port)
        await service.close()
        assert not _other_tasks()
        await _until(lambda: server.ended == 1, "the server saw the session end")
        assert not service.watching("pg-1") and lost == []  # closing is not a loss


async def test_a_member_the_poll_cannot_reach_loses_its_watch() -> None:
    async with FakeServer() as server:
        service, lost = await _watched(server.port)
        service._update_watches([_reachable(reachable=False)])  # e.g. hung: the poll timed out
        await _until(lambda: server.ended == 1, "the watch's session ended")
        await _until(lambda: not _other_tasks(), "the watch task ended")
        assert lost == []
        await service.close()
