"""XMPP over WebSocket (RFC 7395) against the real server; XEP-0156 discovery documents."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat.config import ConfigError, load_config
from mbeon_chat.plugin.host import BUILTIN_DIR
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import make_message

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAMS = "http://etherx.jabber.org/streams"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
CLIENT = "jabber:client"
DEFAULT_PLUGINS = ("ping", "disco", "version", "roster", "presence", "offline", "register", "time")


def available_plugins() -> list[str]:
    """The default plugins that exist in this tree (roster/presence/offline land separately)."""
    return [p for p in DEFAULT_PLUGINS if (BUILTIN_DIR / f"{p}.py").is_file() or (BUILTIN_DIR / p).is_dir()]


def server_overrides(**extra: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {"plugins": {"enabled": available_plugins()}}
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return overrides


def q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


class WsClient:
    """A hand-written RFC 7395 client: one element per text message, SCRAM-SHA-1/256 done here."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, domain: str) -> None:
        self.ws = ws
        self.domain = domain
        self.jid = ""

    @classmethod
    async def open(
        cls,
        http: aiohttp.ClientSession,
        srv: RunningServer,
        *,
        origin: str | None = None,
        secure: bool = False,
    ) -> WsClient:
        scheme = "wss" if secure else "ws"
        url = f"{scheme}://127.0.0.1:{srv.http_port}/xmpp-websocket"
        headers = {"Origin": origin} if origin else {}
        ssl_ctx: Any = srv.client_ssl() if secure else True
        ws = await http.ws_connect(url, protocols=("xmpp",), headers=headers, ssl=ssl_ctx)
        assert ws.protocol == "xmpp"
        return cls(ws, srv.domain)

    async def send(self, xml: str) -> None:
        await self.ws.send_str(xml)

    async def recv(self, timeout: float = 10.0) -> ET.Element:
        msg = await self.ws.receive(timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text message, got {msg.type} {msg.data!r}"
        return ET.fromstring(msg.data)

    async def recv_until(self, tag: str, timeout: float = 10.0) -> ET.Element:
        """The next element with ``tag``, skipping others (presence, iq pushes ...)."""
        async with asyncio.timeout(timeout):
            while True:
                el = await self.recv(timeout)
                if el.tag == tag:
                    return el

    async def open_stream(self) -> ET.Element:
        await self.send(f'<open xmlns="{FRAMING}" to="{self.domain}" version="1.0"/>')
        opened = await self.recv()
        assert opened.tag == q(FRAMING, "open"), opened.tag
        features = await self.recv()
        assert features.tag == q(STREAMS, "features"), features.tag
        return features

    async def login(
        self, user: str, password: str, mechanism: str = "SCRAM-SHA-256", resource: str = "ws"
    ) -> str:
        features = await self.open_stream()
        offered = [m.text for m in features.iter(q(SASL, "mechanism"))]
        assert mechanism in offered, offered
        if mechanism == "PLAIN":
            await self.sasl("PLAIN", f"\0{user}\0{password}".encode())
        else:
            await self.scram(mechanism, user, password)
        features = await self.open_stream()
        assert features.find(q(BIND, "bind")) is not None
        await self.send(
            f'<iq xmlns="{CLIENT}" type="set" id="bind1"><bind xmlns="{BIND}"><resource>{resource}</resource>'
            "</bind></iq>"
        )
        result = await self.recv_until(q(CLIENT, "iq"))
        assert result.get("type") == "result", ET.tostring(result)
        self.jid = result.findtext(f"{q(BIND, 'bind')}/{q(BIND, 'jid')}") or ""
        return self.jid

    async def sasl(self, mechanism: str, initial: bytes) -> ET.Element:
        payload = base64.b64encode(initial).decode()
        await self.send(f'<auth xmlns="{SASL}" mechanism="{mechanism}">{payload}</auth>')
        reply = await self.recv()
        assert reply.tag == q(SASL, "success"), ET.tostring(reply)
        return reply

    async def scram(self, mechanism: str, user: str, password: str) -> None:
        algo = "sha256" if mechanism == "SCRAM-SHA-256" else "sha1"
        cnonce = secrets.token_urlsafe(18)
        first_bare = f"n={user},r={cnonce}"
        await self.send(
            f'<auth xmlns="{SASL}" mechanism="{mechanism}">'
            f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>"
        )
        challenge = await self.recv()
        assert challenge.tag == q(SASL, "challenge"), ET.tostring(challenge)
        server_first = base64.b64decode(challenge.text or "").decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        assert attrs["r"].startswith(cnonce)
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        stored_key = hashlib.new(algo, client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, algo).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        await self.send(f'<response xmlns="{SASL}">{base64.b64encode(final.encode()).decode()}</response>')
        success = await self.recv()
        assert success.tag == q(SASL, "success"), ET.tostring(success)
        server_key = hmac.new(salted, b"Server Key", algo).digest()
        expected = hmac.new(server_key, auth_message, algo).digest()
        verifier = dict(p.split("=", 1) for p in base64.b64decode(success.text or "").decode().split(","))
        assert base64.b64decode(verifier["v"]) == expected, "the server proved it knows the password"

    async def close(self) -> None:
        if not self.ws.closed:
            await self.send(f'<close xmlns="{FRAMING}"/>')
            await self.ws.close()


async def tcp_client(srv: RunningServer, user: str) -> Client:
    loaded = srv.app.plugins.loaded
    client = await connect(srv, user, get_roster="roster" in loaded, send_presence=True)
    return client


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_websocket_client_and_tcp_client_chat_both_ways(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        bob = await tcp_client(srv, "bob")
        alice = await WsClient.open(http, srv)
        alice_jid = await alice.login("alice", srv.users["alice"], "SCRAM-SHA-256")
        assert alice_jid == f"{srv.jid('alice')}/ws"

        await alice.send(
            f'<message xmlns="{CLIENT}" to="{bob.boundjid.full}" type="chat" id="m1">'
            "<body>hello from a browser tab</body></message>"
        )
        got = await bob.next_message()
        assert got["body"] == "hello from a browser tab"
        assert got["from"].full == alice_jid

        bob.send_message(mto=alice_jid, mbody="hello back over TCP", mtype="chat")
        reply = await alice.recv_until(q(CLIENT, "message"))
        assert reply.findtext(q(CLIENT, "body")) == "hello back over TCP"
        assert reply.get("from") == bob.boundjid.full

        await alice.close()
        await disconnect(bob)


async def test_scram_sha1_login_over_websocket(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        carol = await WsClient.open(http, srv)
        assert await carol.login("carol", srv.users["carol"], "SCRAM-SHA-1", resource="sha1")
        await carol.close()


async def test_plain_websocket_does_not_offer_plain_but_tls_listener_does(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        ws = await WsClient.open(http, srv)
        features = await ws.open_stream()
        mechanisms = [m.text for m in features.iter(q(SASL, "mechanism"))]
        assert "PLAIN" not in mechanisms and "SCRAM-SHA-256" in mechanisms
        assert features.find(q("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None
        await ws.close()
    async with running_server(tmp_path / "tls", server_overrides(listeners={"http_tls": True})) as srv:
        ws = await WsClient.open(http, srv, secure=True)
        assert await ws.login("alice", srv.users["alice"], "PLAIN")
        await ws.close()


async def test_trusted_tls_proxy_counts_as_tls(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides(websocket={"trust_proxy_tls": True})) as srv:
        ws = await WsClient.open(http, srv)
        features = await ws.open_stream()
        assert "PLAIN" in [m.text for m in features.iter(q(SASL, "mechanism"))]
        await ws.close()


async def test_stream_restart_needs_a_new_open(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        ws = await WsClient.open(http, srv)
        await ws.open_stream()
        await ws.scram("SCRAM-SHA-256", "bob", srv.users["bob"])
        # After <success/> the old stream is gone: a stanza before the new <open/> is a stream error.
        await ws.send(f'<iq xmlns="{CLIENT}" type="get" id="x"><ping xmlns="urn:xmpp:ping"/></iq>')
        header = await ws.recv()
        assert header.tag == q(FRAMING, "open")
        error = await ws.recv()
        assert error.tag == q(STREAMS, "error")
        assert (await ws.recv()).tag == q(FRAMING, "close")


async def test_wrong_subprotocol_is_refused(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        url = f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket"
        for protocols in ((), ("chat",)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, protocols=protocols)
            assert refused.value.status == 400
        async with http.get(url) as plain_get:
            assert plain_get.status == 400
        async with http.get(url, headers={"Sec-WebSocket-Protocol": "xmpp"}) as no_upgrade:
            assert no_upgrade.status == 426
        assert 'mbeon_websocket_refused_total{reason="subprotocol"} 3.0' in srv.app.metrics.render().decode()


async def test_foreign_origin_is_refused_and_same_origin_allowed(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        for origin in ("https://evil.example", "null", f"https://127.0.0.1:{srv.http_port}.evil.example"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await WsClient.open(http, srv, origin=origin)
            assert refused.value.status == 403, origin
        for origin in (f"http://127.0.0.1:{srv.http_port}", None):  # this server's own page, an app
            ok = await WsClient.open(http, srv, origin=origin)
            await ok.open_stream()
            await ok.close()
        assert 'mbeon_websocket_refused_total{reason="origin"} 3.0' in srv.app.metrics.render().decode()
    allowed = {"allowed_origins": ["https://chat.example.org", "null"]}
    async with running_server(tmp_path / "list", server_overrides(websocket=allowed)) as srv:
        for origin in ("https://chat.example.org", "null", f"http://127.0.0.1:{srv.http_port}", None):
            ok = await WsClient.open(http, srv, origin=origin)
            await ok.open_stream()
            await ok.close()
        for origin in ("https://other.example.org", "http://chat.example.org"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await WsClient.open(http, srv, origin=origin)
            assert refused.value.status == 403, origin


async def test_malformed_frame_gets_a_stream_error_while_others_continue(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        bob = await tcp_client(srv, "bob")
        alice = await WsClient.open(http, srv)
        await alice.login("alice", srv.users["alice"])
        carol = await WsClient.open(http, srv)
        await carol.login("carol", srv.users["carol"])

        await carol.send(f'<message xmlns="{CLIENT}" to="{bob.boundjid.full}"><body>unfinished')
        error = await carol.recv()
        assert error.tag == q(STREAMS, "error")
        assert error.find(q("urn:ietf:params:xml:ns:xmpp-streams", "not-well-formed")) is not None
        assert (await carol.recv()).tag == q(FRAMING, "close")
        closing = await carol.ws.receive(5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

        await alice.send(
            f'<message xmlns="{CLIENT}" to="{bob.boundjid.full}" type="chat">'
            "<body>still here</body></message>"
        )
        assert (await bob.next_message())["body"] == "still here"
        assert (
            'mbeon_stream_errors_total{condition="not-well-formed"} 1.0' in srv.app.metrics.render().decode()
        )
        await alice.close()
        await disconnect(bob)


async def test_oversized_message_is_a_policy_violation(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides(limits={"max_stanza_size": 4096})) as srv:
        alice = await WsClient.open(http, srv)
        await alice.login("alice", srv.users["alice"])
        await alice.send(
            f'<message xmlns="{CLIENT}" to="{srv.jid("bob")}"><body>{"x" * 5000}</body></message>'
        )
        error = await alice.recv()
        assert error.find(q("urn:ietf:params:xml:ns:xmpp-streams", "policy-violation")) is not None
        assert (await alice.recv()).tag == q(FRAMING, "close")


async def test_client_close_is_answered_with_close(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        alice = await WsClient.open(http, srv)
        await alice.login("alice", srv.users["alice"])
        await alice.send(f'<close xmlns="{FRAMING}"/>')
        assert (await alice.recv()).tag == q(FRAMING, "close")
        assert (await alice.ws.receive(5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        for _ in range(50):
            if not srv.app.registry.resources(JID.parse(srv.jid("alice"))):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the session was not unbound")


async def test_server_pings_and_closes_a_dead_connection(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides(websocket={"ping_interval": 1})) as srv:
        url = f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket"
        # autoping=False: this client never answers pings, like a peer that vanished behind a NAT.
        ws = await http.ws_connect(url, protocols=("xmpp",), autoping=False)
        first = await ws.receive(5)
        assert first.type is aiohttp.WSMsgType.PING
        while True:
            msg = await ws.receive(5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
        live = await http.ws_connect(url, protocols=("xmpp",))  # answers pings: stays open
        await asyncio.sleep(2.5)
        assert not live.closed
        await live.close()


async def test_host_meta_announces_the_websocket_url(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_server(tmp_path, server_overrides()) as srv:
        base = f"http://127.0.0.1:{srv.http_port}"
        expected = f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket"
        async with http.get(f"{base}/.well-known/host-meta") as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            xrd = ET.fromstring(await resp.text())
        link = xrd.find("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")
        assert link is not None
        assert link.get("rel") == "urn:xmpp:alt-connections:websocket"
        assert link.get("href") == expected
        async with http.get(f"{base}/.well-known/host-meta.json") as resp:
            doc = json.loads(await resp.text())
        assert doc == {"links": [{"rel": "urn:xmpp:alt-connections:websocket", "href": expected}]}
    public = {"public_url": "wss://chat.example.org/xmpp-websocket"}
    async with running_server(tmp_path / "public", server_overrides(websocket=public)) as srv:
        async with http.get(f"http://127.0.0.1:{srv.http_port}/.well-known/host-meta.json") as resp:
            doc = await resp.json()
        assert doc["links"][0]["href"] == "wss://chat.example.org/xmpp-websocket"


async def test_websocket_client_that_stops_reading_is_closed(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    limits = {"write_buffer": 262144}
    async with running_server(tmp_path, server_overrides(limits=limits)) as srv:
        slow = await WsClient.open(http, srv)
        jid = await slow.login("alice", srv.users["alice"], resource="slow")
        fast = await WsClient.open(http, srv)
        await fast.login("bob", srv.users["bob"], resource="fast")
        session = srv.app.registry.get(JID.parse(jid))
        assert session is not None
        conn = session.conn
        # The slow client reads nothing more; the server keeps sending until its buffers fill up.
        body = "x" * 100_000
        for _ in range(400):
            if conn.closed:
                break
            session.send(make_message(jid, body, from_=srv.jid("bob")))
            await asyncio.sleep(0.005)
        assert conn.closed, "the server gave up on a client that does not read"
        assert (
            'mbeon_stream_errors_total{condition="policy-violation"} 1.0' in srv.app.metrics.render().decode()
        )
        await fast.send(
            f'<iq xmlns="{CLIENT}" type="get" to="{srv.domain}" id="p1"><ping xmlns="urn:xmpp:ping"/></iq>'
        )
        pong = await fast.recv_until(q(CLIENT, "iq"))
        assert pong.get("type") == "result", "other sessions are unaffected"
        await fast.close()
        for _ in range(100):
            if srv.app.registry.get(JID.parse(jid)) is None:
                break
            await asyncio.sleep(0.1)
        assert srv.app.registry.get(JID.parse(jid)) is None


@pytest.mark.parametrize(
    ("websocket", "message"),
    [
        ({"ping_interval": 60}, "websocket.ping_interval: must be between 1 and 50 seconds"),
        ({"allowed_origins": ["chat.example.org"]}, "websocket.allowed_origins[0]: must look like"),
        ({"path": "xmpp-websocket"}, "websocket.path: must start with '/'"),
    ],
)
def test_websocket_options_are_checked(websocket: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, {"websocket": websocket})
    assert str(error.value).startswith(message)
