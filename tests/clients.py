"""Real XMPP clients for tests: slixmpp wrapped so a test reads like a conversation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import slixmpp

from harness import RunningServer


class Client(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A slixmpp client that records what it receives in queues."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self.session_started = asyncio.get_event_loop().create_future()
        self.closed = asyncio.Event()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", self._failed)
        self.add_event_handler("disconnected", lambda _: self.closed.set())
        for plugin in ("xep_0030", "xep_0199", "xep_0092"):
            self.register_plugin(plugin)

    def _started(self, _: Any) -> None:
        if not self.session_started.done():
            self.session_started.set_result(True)

    def _failed(self, _: Any) -> None:
        if not self.session_started.done():
            self.session_started.set_result(False)

    async def next_message(self, timeout: float = 10.0, with_body: bool = True) -> Any:
        while True:
            msg = await asyncio.wait_for(self.messages.get(), timeout)
            if not with_body or msg["body"]:
                return msg

    async def next_presence(self, timeout: float = 10.0, type_: str | None = None, from_: str | None = None) -> Any:
        while True:
            pres = await asyncio.wait_for(self.presences.get(), timeout)
            if type_ is not None and pres["type"] != type_:
                continue
            if from_ is not None and str(pres["from"]) != from_ and str(pres["from"].bare) != from_:
                continue
            return pres


async def connect(
    srv: RunningServer,
    user: str,
    resource: str = "test",
    *,
    password: str | None = None,
    direct_tls: bool = False,
    send_presence: bool = True,
    get_roster: bool = True,
    plugins: tuple[str, ...] = (),
    timeout: float = 15.0,
) -> Client:
    client = Client(f"{srv.jid(user)}/{resource}", password or srv.users[user])
    for plugin in plugins:
        client.register_plugin(plugin)
    client.ssl_context = srv.client_ssl()
    client.enable_plaintext = False
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    client.connect(host="127.0.0.1", port=srv.direct_tls_port if direct_tls else srv.starttls_port)
    ok = await asyncio.wait_for(client.session_started, timeout)
    if not ok:
        client.disconnect()
        raise PermissionError(f"login failed for {user}")
    if get_roster:
        await client.get_roster()
    if send_presence:
        client.send_presence()
    return client


async def disconnect(*clients: Client) -> None:
    for c in clients:
        c.disconnect()
    for c in clients:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(c.closed.wait(), 5)


@contextlib.asynccontextmanager
async def online(srv: RunningServer, *users: str, **kw: Any) -> AsyncIterator[list[Client]]:
    clients = [await connect(srv, u, **kw) for u in users]
    try:
        yield clients
    finally:
        await disconnect(*clients)
