"""A hand-driven XMPP client for the conformance tests: raw XML in, parsed elements (and raw bytes) out.

The tests in this folder read like the specifications: "the client sends X, the server answers Y". They
speak to the real server over real sockets (STARTTLS, or direct TLS), with every default plugin loaded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from harness import RunningServer, running_server
from mbeon_chat.stream.events import ElementParsed, StreamFooter, StreamHeader
from mbeon_chat.stream.parser import StreamParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

STREAMS = f"{{{ns.STREAMS}}}"
SASL = f"{{{ns.SASL}}}"
TLS = f"{{{ns.TLS}}}"
BIND = f"{{{ns.BIND}}}"
CLIENT = f"{{{ns.CLIENT}}}"
STANZAS = f"{{{ns.STANZA_ERRORS}}}"
STREAM_ERRORS = f"{{{ns.STREAM_ERRORS}}}"
_resources = itertools.count(1)
_users = itertools.count(1)

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)


def header(**attrs: str) -> str:
    """An initial stream header with exactly these attributes (``xml_lang`` for ``xml:lang``)."""
    text = "".join(f" {k.replace('xml_', 'xml:')}='{v}'" for k, v in attrs.items())
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams'{text}>"
    )


@contextlib.asynccontextmanager
async def server(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[RunningServer]:
    """The real server with its default plugins; failed logins are not slowed down (tests fail on purpose)."""
    overrides: dict[str, Any] = {"auth": {"failure_delay": 0.0}}
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    async with running_server(tmp_path, overrides) as srv:
        yield srv


async def new_user(srv: RunningServer, prefix: str = "user") -> str:
    """A fresh account on the (shared) server: tests that count deliveries need recipients of their own."""
    name = f"{prefix}{next(_users)}"
    password = f"{name}-secret"
    await srv.app.ctx.accounts.create(name, password)
    srv.users[name] = password
    return name


class Closed(Exception):
    """The server ended the stream (closing tag or end of the connection)."""


class Client:
    def __init__(
        self, srv: RunningServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.srv = srv
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(max_stanza_size=16 * 1048576)
        self.raw = b""  # every byte received since the last restart
        self.pending: list[Element] = []
        self.headers: list[StreamHeader] = []
        self.footer = False
        self.eof = False
        self.jid = ""
        self.features = Element(STREAMS + "features")  # the last features the server offered

    # --- connecting -------------------------------------------------------------------------------
    @classmethod
    async def connect(cls, srv: RunningServer, *, direct_tls: bool = False) -> Client:
        if direct_tls:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.direct_tls_port, ssl=srv.client_ssl()
            )
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.starttls_port)
        return cls(srv, reader, writer)

    @classmethod
    async def secured(cls, srv: RunningServer) -> Client:
        """Connected, STARTTLS done, the stream opened again: ``features`` lists the SASL mechanisms."""
        client = await cls.connect(srv)
        await client.open()
        client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await client.next()).tag == TLS + "proceed"
        await client.writer.start_tls(srv.client_ssl())
        client.restart()
        client.features = await client.open()
        return client

    @classmethod
    async def authenticated(cls, srv: RunningServer, user: str = "alice") -> Client:
        client = await cls.secured(srv)
        assert (await client.auth_plain(user, srv.users[user])).tag == SASL + "success"
        client.restart()
        client.features = await client.open()
        return client

    @classmethod
    async def bound(cls, srv: RunningServer, user: str | None = None, resource: str | None = None) -> Client:
        """Logged in (as a fresh account unless ``user`` is given) with a resource of its own: tests share a
        server, so no two clients displace each other and no account reaches its resource limit."""
        user = user or await new_user(srv)
        resource = resource or f"conf{next(_resources)}"
        client = await cls.authenticated(srv, user)
        client.send(
            f"<iq type='set' id='bind'><bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>"
        )
        result = await client.next()
        assert result.get("type") == "result", result.to_string()
        bind = result.find(BIND + "bind")
        client.jid = (bind.findtext(BIND + "jid") if bind is not None else None) or ""
        return client

    async def available(self, priority: int = 0) -> None:
        """Initial presence (RFC 6121 4.2); returns once the server has reflected it back to this resource."""
        self.send(f"<presence><priority>{priority}</priority></presence>")
        while True:
            el = await self.next()
            if el.tag == CLIENT + "presence" and el.get("from") == self.jid:
                return

    async def open(self, text: str = HEADER) -> Element:
        """Send a stream header and return the features that follow the server's header."""
        self.send(text)
        features = await self.next()
        assert features.tag == STREAMS + "features", features.to_string()
        self.features = features
        return features

    def restart(self) -> None:
        self.parser = StreamParser(max_stanza_size=16 * 1048576)
        self.raw = b""

    # --- talking ----------------------------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def _read(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            self.eof = True
            raise Closed()
        self.raw += data
        for item in self.parser.receive_data(data):
            if isinstance(item, ElementParsed):
                self.pending.append(item.element)
            elif isinstance(item, StreamHeader):
                self.headers.append(item)
            elif isinstance(item, StreamFooter):
                self.footer = True

    async def next(self, timeout: float = 5.0) -> Element:
        """The next top-level element from the server."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                if self.footer:
                    raise Closed()
                await self._read()
        return self.pending.pop(0)

    async def ask(self, xml: str, timeout: float = 5.0) -> Element:
        self.send(xml)
        return await self.next(timeout)

    async def silence(self, seconds: float = 0.4) -> None:
        """Nothing arrives for a while (an ignored stanza really is ignored)."""
        with contextlib.suppress(TimeoutError):
            el = await self.next(seconds)
            raise AssertionError(f"expected no answer, got {el.to_string()}")

    async def stream_error(self, timeout: float = 5.0) -> str:
        """The next element is a stream error; the closing tag and the end of the connection follow."""
        el = await self.next(timeout)
        assert el.tag == STREAMS + "error", el.to_string()
        condition = next(el.elements())
        assert condition.tag.startswith(STREAM_ERRORS), condition.tag
        await self.closed(timeout)
        return condition.local

    async def closed(self, timeout: float = 5.0) -> None:
        """The server sends ``</stream:stream>`` and closes the connection."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(Closed, ConnectionError):
                while True:
                    await self._read()
        assert self.footer, f"no closing tag: {self.raw[-200:]!r}"
        assert self.eof
        self.close()

    async def auth_plain(self, authcid: str, password: str, authzid: str = "") -> Element:
        payload = base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()
        return await self.ask(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{payload}</auth>")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def child(el: Element, tag: str) -> Element:
    """The child ``tag`` of ``el``, which must be there."""
    found = el.find(tag)
    assert found is not None, f"no {tag} in {el.to_string()}"
    return found


def condition(el: Element) -> str:
    """The defined condition of a stanza error (``bad-request`` ...)."""
    error = el.find(CLIENT + "error")
    assert error is not None, el.to_string()
    for child in error.elements():
        if child.tag.startswith(STANZAS) and child.local != "text":
            return child.local
    raise AssertionError(f"no defined condition in {el.to_string()}")


def error_type(el: Element) -> str | None:
    error = el.find(CLIENT + "error")
    return None if error is None else error.get("type")
