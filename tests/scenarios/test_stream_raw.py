"""Misbehaving clients over real TLS sockets: each gets its stream error, nobody else notices.

Also home of :class:`RawClient`, a hand-driven XMPP client (STARTTLS by hand, then any bytes we like);
test_auth and test_register import it from here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from clients import connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.plugin.host import BUILTIN_DIR
from mbeon_chat.stream.events import ElementParsed, StreamFooter, StreamHeader
from mbeon_chat.stream.parser import StreamParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

DEFAULT_PLUGINS = ("ping", "disco", "version", "roster", "presence", "offline", "register", "time")
STREAMS = f"{{{ns.STREAMS}}}"
SASL = f"{{{ns.SASL}}}"
TLS = f"{{{ns.TLS}}}"


def available_plugins() -> list[str]:
    """The default plugins present in this tree (others land in parallel work)."""
    return [p for p in DEFAULT_PLUGINS if (BUILTIN_DIR / f"{p}.py").is_file() or (BUILTIN_DIR / p).is_dir()]


def overrides(**sections: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"plugins": {"enabled": available_plugins()}}
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


def client_options() -> dict[str, Any]:
    """Keyword arguments for clients.connect that work with whatever plugins exist."""
    return {"get_roster": "roster" in available_plugins()}


class ServerClosed(Exception):
    pass


class RawClient:
    """Speak XMPP by hand over a real socket and read the server's answers as elements."""

    def __init__(
        self, srv: RunningServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.srv = srv
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(max_stanza_size=16 * 1048576)
        self.pending: list[Element] = []
        self.headers: list[StreamHeader] = []
        self.footer = False
        self.features: Element | None = None

    @classmethod
    async def open(cls, srv: RunningServer, *, starttls: bool = True, direct_tls: bool = False) -> RawClient:
        if direct_tls:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.direct_tls_port, ssl=srv.client_ssl()
            )
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.starttls_port)
        client = cls(srv, reader, writer)
        if starttls and not direct_tls:
            await client.starttls()
        return client

    async def starttls(self) -> Element:
        """Open the stream, STARTTLS, open again; returns the features offered over TLS."""
        features = await self.open_stream()
        assert features.find(TLS + "starttls") is not None
        self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = await self.next()
        assert proceed.tag == TLS + "proceed", proceed
        await self.writer.start_tls(self.srv.client_ssl())
        self.restart()
        return await self.open_stream()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def restart(self) -> None:
        self.parser = StreamParser(max_stanza_size=16 * 1048576)

    async def open_stream(self) -> Element:
        self.send(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>"
            % self.srv.domain.encode()
        )
        features = await self.next()
        assert features.tag == STREAMS + "features", features
        self.features = features
        return features

    async def next(self, timeout: float = 10.0) -> Element:
        """The next element the server sends; raises ServerClosed at the end of the stream."""
        async with asyncio.timeout(timeout):
            while not self.pending:
                if self.footer:
                    raise ServerClosed()
                data = await self.reader.read(65536)
                if not data:
                    self.footer = True
                    raise ServerClosed()
                for item in self.parser.receive_data(data):
                    if isinstance(item, ElementParsed):
                        self.pending.append(item.element)
                    elif isinstance(item, StreamHeader):
                        self.headers.append(item)
                    elif isinstance(item, StreamFooter):
                        self.footer = True
        return self.pending.pop(0)

    async def stream_error(self, timeout: float = 10.0) -> str:
        """Read until the stream error; returns its condition and checks the server closes the stream."""
        while True:
            el = await self.next(timeout)
            if el.tag == STREAMS + "error":
                condition = next(el.elements()).local
                break
        await self.closed(timeout)
        return condition

    async def closed(self, timeout: float = 10.0) -> None:
        """Wait for the closing tag and the end of the connection."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(ConnectionError):
                    data = await self.reader.read(65536)
                    if data:
                        continue
                break
        self.close()

    async def auth_plain(self, username: str, password: str) -> Element:
        """Send a PLAIN auth and return the server's answer (success or failure)."""
        payload = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{payload}</auth>".encode())
        return await self.next()

    async def login(self, username: str, password: str, resource: str = "raw") -> str:
        answer = await self.auth_plain(username, password)
        assert answer.tag == SASL + "success", answer
        self.restart()
        await self.open_stream()
        bind = f"<bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind>"
        self.send(f"<iq type='set' id='bind1'>{bind}</iq>".encode())
        result = await self.next()
        assert result.get("type") == "result", result
        jid = result.find(f"{{{ns.BIND}}}bind").findtext(f"{{{ns.BIND}}}jid")
        assert jid
        return jid

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def conversation_still_works(srv: RunningServer, alice: Any, bob: Any, text: str) -> None:
    """Alice's message reaches Bob (to his full JID: no presence plugin needed)."""
    alice.send_message(mto=f"{srv.jid('bob')}/test", mbody=text, mtype="chat")
    msg = await bob.next_message()
    assert msg["body"] == text
    assert str(msg["from"]) == f"{srv.jid('alice')}/test"


# --- the tests ------------------------------------------------------------------------------------
async def test_malformed_xml_gets_not_well_formed_and_others_carry_on(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice, bob = (
            await connect(srv, "alice", **client_options()),
            await connect(srv, "bob", **client_options()),
        )
        try:
            await conversation_still_works(srv, alice, bob, "before")
            bad = await RawClient.open(srv)
            bad.send(b"<message><body>unclosed</message>")
            assert await bad.stream_error() == "not-well-formed"
            await conversation_still_works(srv, alice, bob, "after the broken client")
        finally:
            await disconnect(alice, bob)


async def test_malformed_xml_after_login_ends_only_that_session(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        alice, bob = (
            await connect(srv, "alice", **client_options()),
            await connect(srv, "bob", **client_options()),
        )
        try:
            bad = await RawClient.open(srv)
            await bad.login("carol", srv.users["carol"])
            bad.send(b"<presence><<<</presence>")
            assert await bad.stream_error() == "not-well-formed"
            await conversation_still_works(srv, alice, bob, "still here")
            assert srv.app.registry.resources(_bare(srv, "carol")) == []
        finally:
            await disconnect(alice, bob)


async def test_an_oversize_stanza_gets_policy_violation_and_others_carry_on(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(limits={"max_stanza_size": 8192})) as srv:
        alice, bob = (
            await connect(srv, "alice", **client_options()),
            await connect(srv, "bob", **client_options()),
        )
        try:
            big = await RawClient.open(srv)
            await big.login("carol", srv.users["carol"])
            big.send(b"<message to='bob@localhost/test'><body>" + b"A" * 20000 + b"</body></message>")
            assert await big.stream_error() == "policy-violation"
            with contextlib.suppress(asyncio.TimeoutError):
                msg = await bob.next_message(timeout=0.3)
                raise AssertionError(f"the oversize message was delivered: {msg}")
            await conversation_still_works(srv, alice, bob, "undisturbed")
        finally:
            await disconnect(alice, bob)


async def test_an_oversize_stanza_that_never_ends_is_cut_off(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(limits={"max_stanza_size": 8192})) as srv:
        big = await RawClient.open(srv)
        big.send(b"<message><body>")
        for _ in range(10):
            big.send(b"B" * 4096)  # never closed
        assert await big.stream_error() == "policy-violation"


async def test_billion_laughs_gets_restricted_xml(tmp_path: Any) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        b"to='localhost' version='1.0'><message><body>&lol3;</body></message>"
    )
    async with running_server(tmp_path, overrides()) as srv:
        before_tls = await RawClient.open(srv, starttls=False)
        before_tls.send(laughs)
        assert await before_tls.stream_error() == "restricted-xml"

        after_tls = await RawClient.open(srv, starttls=False)
        await after_tls.open_stream()
        after_tls.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert (await after_tls.next()).tag == TLS + "proceed"
        await after_tls.writer.start_tls(srv.client_ssl())
        after_tls.restart()
        after_tls.send(laughs)
        assert await after_tls.stream_error() == "restricted-xml"


async def test_comments_and_processing_instructions_get_restricted_xml(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        for bad in (b"<!-- hello -->", b"<?pi x?>", b"<message><body>&custom;</body></message>"):
            client = await RawClient.open(srv)
            client.send(bad)
            assert await client.stream_error() == "restricted-xml", bad


async def test_text_at_stream_level_gets_not_well_formed(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv)
        client.send(b"hello there")
        assert await client.stream_error() == "not-well-formed"


async def test_not_authenticating_in_time_gets_connection_timeout(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(limits={"auth_timeout": 1.0})) as srv:
        loop = asyncio.get_running_loop()
        idle = await RawClient.open(srv, starttls=False)
        started = loop.time()
        await idle.open_stream()
        assert await idle.stream_error(timeout=10) == "connection-timeout"
        assert 0.9 <= loop.time() - started < 8

        # the same after TLS, and while a session is open elsewhere
        alice = await connect(srv, "alice", **client_options())
        try:
            after_tls = await RawClient.open(srv)
            assert await after_tls.stream_error(timeout=10) == "connection-timeout"
            assert alice.is_connected()
        finally:
            await disconnect(alice)


async def test_a_bound_session_is_not_timed_out(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides(limits={"auth_timeout": 1.0})) as srv:
        client = await RawClient.open(srv)
        await client.login("alice", srv.users["alice"])
        await asyncio.sleep(1.5)
        client.send(b"<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await client.next()
        assert (pong.get("type"), pong.get("id")) == ("result", "p1")
        client.close()


async def test_a_wrong_stream_namespace_gets_invalid_namespace(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv, starttls=False)
        client.send(
            b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='localhost' version='1.0'>"
        )
        assert await client.stream_error() == "invalid-namespace"


async def test_an_unknown_domain_gets_host_unknown(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv, starttls=False)
        client.send(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
            b"to='elsewhere.example' version='1.0'>"
        )
        assert await client.stream_error() == "host-unknown"


async def test_stanzas_before_login_get_not_authorized(tmp_path: Any) -> None:
    async with running_server(tmp_path, overrides()) as srv:
        client = await RawClient.open(srv)
        client.send(b"<message to='bob@localhost'><body>sneaky</body></message>")
        assert await client.stream_error() == "not-authorized"


def _bare(srv: RunningServer, user: str) -> Any:
    from mbeon_chat.xmpp.jid import JID

    return JID(user, srv.domain, None)
