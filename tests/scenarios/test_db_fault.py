"""The server and its database failing: on MariaDB, connections killed (``KILL CONNECTION``) again and again
while users chat lose no message and duplicate none; a database that is down or hangs costs stanzas a
quick ``resource-constraint`` error, never the sessions, and the server recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pymysql
import pytest
from slixmpp.exceptions import IqError
from sqlalchemy import make_url

from backends import DatabaseFactory, database_factory  # noqa: F401  (fixture found by name)
from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.storage.migrate import upgrade
from mbeon_chat.storage.stores.archive import ArchivedMessage

PLUGINS = ["ping", "disco", "roster", "offline", "mam"]
MAM = "urn:xmpp:mam:2"


@pytest.fixture
def mariadb_url(database_factory: DatabaseFactory) -> str:  # noqa: F811
    database = database_factory.create("mariadb")
    asyncio.run(upgrade(database.url, lambda _line: None))
    return database.url


async def login(srv: RunningServer, user: str) -> Client:
    return await connect(srv, user, plugins=("xep_0313",), send_presence=False, get_roster=False)


def bodies_of(messages: list[ArchivedMessage]) -> Counter[str]:
    out: Counter[str] = Counter()
    for msg in messages:
        start = msg.stanza.find(b"<body>") + 6
        out[msg.stanza[start : msg.stanza.find(b"</body>")].decode()] += 1
    return out


# --- KILL CONNECTION while chatting ----------------------------------------------------------------
class Killer:
    """Kills every connection to one MariaDB database, except its own, every ``interval`` seconds."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = make_url(url)
        self.interval = interval
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn = pymysql.connect(
            host=self.url.host, port=self.url.port or 3306, user=self.url.username, autocommit=True
        )
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(self.interval):
                    cur.execute(
                        "SELECT ID FROM information_schema.PROCESSLIST"
                        " WHERE DB = %s AND ID <> CONNECTION_ID()",
                        (self.url.database,),
                    )
                    for (thread_id,) in cur.fetchall():
                        with contextlib.suppress(pymysql.MySQLError):  # already gone
                            cur.execute(f"KILL CONNECTION {int(thread_id)}")
                            self.killed += 1
        finally:
            conn.close()


async def test_killed_database_connections_lose_and_duplicate_no_message(
    tmp_path: Path, mariadb_url: str
) -> None:
    overrides = {"plugins": {"enabled": PLUGINS}}
    async with running_server(tmp_path, overrides, storage_url=mariadb_url) as srv:
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            sent = [f"note {i:03d}" for i in range(150)]
            errors: list[Any] = []
            with Killer(mariadb_url, interval=0.1) as killer:
                for i, body in enumerate(sent):
                    sender, receiver = (alice, bob) if i % 2 == 0 else (bob, alice)
                    sender.send_message(mto=str(receiver.boundjid), mbody=body, mtype="chat")
                    await asyncio.sleep(0.01)
                received: Counter[str] = Counter()
                deadline = time.monotonic() + 60
                while sum(received.values()) < len(sent) and time.monotonic() < deadline:
                    for client in (alice, bob):
                        with contextlib.suppress(TimeoutError):
                            msg = await client.next_message(timeout=0.2)
                            if msg["type"] == "error":
                                errors.append(msg)
                            else:
                                received[str(msg["body"])] += 1
            await asyncio.sleep(0.5)  # anything duplicated would arrive now
            for client in (alice, bob):
                while not client.messages.empty():
                    msg = client.messages.get_nowait()
                    if msg["body"] and msg["type"] != "error":
                        received[str(msg["body"])] += 1

            assert killer.killed > 10
            assert errors == []
            assert received == Counter(sent)  # every message delivered exactly once
            archive = srv.app.storage.archive
            assert bodies_of(await archive.export("alice")) == Counter(sent)  # both copies, once each
            assert bodies_of(await archive.export("bob")) == Counter(sent)
        finally:
            await disconnect(alice, bob)


# --- the database down, hanging, and back -----------------------------------------------------------
class Proxy:
    """A TCP proxy in front of the database: ``forward``, ``refuse`` (accept and close) or ``hang``."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.mode = "forward"
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    def set(self, mode: str) -> None:
        self.mode = mode
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.close()
            return
        self.writers.add(writer)
        if self.mode == "hang":
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        self.set("refuse")
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[Proxy, str]]:
    parsed = make_url(url)
    proxy = Proxy(parsed.port or 3306)
    await proxy.start()
    try:
        yield proxy, parsed.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        await proxy.close()


async def readyz(srv: RunningServer) -> int:
    url = f"http://127.0.0.1:{srv.http_port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status


async def error_for(sender: Client, to: str, body: str, within: float) -> str:
    started = time.monotonic()
    sender.send_message(mto=to, mbody=body, mtype="chat")
    msg = await sender.next_message(timeout=within + 5)
    assert msg["type"] == "error" and msg["body"] == body
    assert time.monotonic() - started < within, "the error took too long"
    return str(msg["error"]["condition"])


async def test_a_database_outage_costs_stanzas_an_error_never_the_session(
    tmp_path: Path, mariadb_url: str
) -> None:
    overrides = {"plugins": {"enabled": PLUGINS}}
    async with (
        proxied(mariadb_url) as (proxy, url),
        running_server(tmp_path, overrides, storage_url=url) as srv,
    ):
        srv.app.storage.database.timeout = 2.0
        alice, bob = await login(srv, "alice"), await login(srv, "bob")
        try:
            alice.send_message(mto=str(bob.boundjid), mbody="before", mtype="chat")
            assert (await bob.next_message())["body"] == "before"
            assert await readyz(srv) == 200

            proxy.set("refuse")  # the database is down: connections fail at once
            assert await error_for(alice, str(bob.boundjid), "while down", within=5) == "resource-constraint"
            with pytest.raises(IqError) as exc:
                await alice.plugin["xep_0313"].retrieve(timeout=10)
            assert exc.value.iq["error"]["condition"] == "resource-constraint"
            assert await readyz(srv) == 503
            await alice.plugin["xep_0199"].ping(srv.domain, timeout=5)  # the session is fine

            proxy.set("hang")  # the database accepts connections and never answers
            assert (
                await error_for(alice, str(bob.boundjid), "while hanging", within=6) == "resource-constraint"
            )
            assert await readyz(srv) == 503
            await alice.plugin["xep_0199"].ping(srv.domain, timeout=5)

            proxy.set("forward")  # back: no restart, no reconnect by the clients
            deadline = time.monotonic() + 15
            while await readyz(srv) != 200:
                assert time.monotonic() < deadline, "readyz did not recover"
                await asyncio.sleep(0.2)
            alice.send_message(mto=str(bob.boundjid), mbody="after", mtype="chat")
            assert (await bob.next_message())["body"] == "after"
            archived = [
                str(m["mam_result"]["forwarded"]["stanza"]["body"])
                async for m in bob.plugin["xep_0313"].iterate(rsm={"max": 10})
            ]
            assert archived == ["before", "after"]
        finally:
            await disconnect(alice, bob)
