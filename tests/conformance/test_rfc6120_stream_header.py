"""RFC 6120 section 4: opening, restarting and closing streams, and the response stream header."""

from __future__ import annotations

import re

import pytest
from conformance_kit import HEADER, SASL, STREAMS, TLS, Client, child, header

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

STREAM_NS = "http://etherx.jabber.org/streams"


def response_header(raw: bytes) -> str:
    match = re.search(rb"<stream:stream[^>]*>", raw)
    assert match, raw[:300]
    return match.group(0).decode()


async def test_the_response_header_names_the_server_and_declares_the_namespaces(srv: RunningServer) -> None:
    """4.7: 'from' is the server's domain, 'id' is fresh, 'version' 1.0, 'xml:lang' given; no 'to' when the
    client gave no 'from'; the content namespace is jabber:client and the stream prefix is declared."""
    client = await Client.connect(srv)
    await client.open()
    text = response_header(client.raw)
    assert client.raw.startswith(b"<?xml version='1.0'?>")
    assert 'xmlns="jabber:client"' in text and f'xmlns:stream="{STREAM_NS}"' in text
    attrs = client.headers[-1].attrs
    assert attrs["from"] == "localhost"
    assert attrs["version"] == "1.0"
    assert attrs["{http://www.w3.org/XML/1998/namespace}lang"] == "en"
    assert len(attrs["id"]) >= 16  # RFC 6120 4.7.3: unique and unpredictable (random)
    assert "to" not in attrs
    client.close()


async def test_the_clients_from_is_answered_with_to(srv: RunningServer) -> None:
    """4.7.2: the server's 'to' is the JID in the client's 'from'; xml:lang follows the client's (4.7.4)."""
    client = await Client.connect(srv)
    await client.open(header(to="localhost", version="1.0", **{"from": "Alice@LocalHost"}, xml_lang="de"))
    attrs = client.headers[-1].attrs
    assert attrs["to"] == "alice@localhost"
    assert attrs["{http://www.w3.org/XML/1998/namespace}lang"] == "de"
    client.close()


async def test_every_restart_gets_a_new_stream_id(srv: RunningServer) -> None:
    """4.3.3: after STARTTLS and after SASL the server generates a new stream ID (never the old one)."""
    client = await Client.authenticated(srv)
    ids = [h.attrs["id"] for h in client.headers]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    client.close()


async def test_the_features_at_each_stage(srv: RunningServer) -> None:
    """5.3.1 / 6.3.1 / 7.2: only <starttls><required/></starttls> while TLS is mandatory; SASL mechanisms (no
    STARTTLS) once secured; bind and the optional legacy session (RFC 3921) after SASL."""
    client = await Client.connect(srv)
    features = await client.open()
    assert [el.tag for el in features.elements()] == [TLS + "starttls"]
    assert child(features, TLS + "starttls").find(TLS + "required") is not None
    client.close()

    secured = await Client.secured(srv)
    assert secured.features.find(TLS + "starttls") is None
    mechanisms = [m.text for m in child(secured.features, SASL + "mechanisms").elements()]
    assert "SCRAM-SHA-256" in mechanisms and "PLAIN" in mechanisms
    assert (await secured.auth_plain("alice", srv.users["alice"])).tag == SASL + "success"
    secured.restart()
    after = await secured.open()
    assert after.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    session = after.find("{urn:ietf:params:xml:ns:xmpp-session}session")
    assert session is not None and session.find("{urn:ietf:params:xml:ns:xmpp-session}optional") is not None
    assert after.find(SASL + "mechanisms") is None
    secured.close()

    direct = await Client.connect(srv, direct_tls=True)  # XEP-0368: TLS from the first byte
    features = await direct.open()
    assert features.find(TLS + "starttls") is None and features.find(SASL + "mechanisms") is not None
    direct.close()


async def test_a_header_without_version_is_answered_without_version_and_refused(srv: RunningServer) -> None:
    """4.7.5: no 'version' means 0.9; the reply carries no 'version' and this 1.0-only server says
    <unsupported-version/>."""
    client = await Client.connect(srv)
    client.send(header(to="localhost"))
    assert await client.stream_error() == "unsupported-version"
    assert "version" not in client.headers[-1].attrs


async def test_a_newer_minor_version_is_answered_with_1_0(srv: RunningServer) -> None:
    """4.7.5: the reply carries the highest version both support (1.0); a major version 2 is unsupported."""
    client = await Client.connect(srv)
    await client.open(header(to="localhost", version="1.5"))
    assert client.headers[-1].attrs["version"] == "1.0"
    client.close()
    client = await Client.connect(srv)
    client.send(header(to="localhost", version="2.0"))
    assert await client.stream_error() == "unsupported-version"


async def test_stream_errors_come_after_a_header_then_the_stream_closes(srv: RunningServer) -> None:
    """4.9.1.2: a stream error before the server's header still gets a header first; every stream error is
    followed by </stream:stream> and the end of the TCP connection (checked by stream_error())."""
    cases = [
        (header(to="elsewhere.example", version="1.0"), "host-unknown"),  # 4.9.3.6
        (HEADER.replace("jabber:client", "jabber:server"), "invalid-namespace"),  # 4.9.3.10
        (HEADER.replace(STREAM_NS, "http://example.com/streams"), "invalid-namespace"),
        ("<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>", "bad-namespace-prefix"),
        (HEADER + "<message><body>half", None),
    ]
    for text, expected in cases:
        client = await Client.connect(srv)
        client.send(text)
        if expected is None:
            assert (await client.next()).tag == STREAMS + "features"
            client.send("</message>")
            expected = "not-well-formed"
        assert await client.stream_error() == expected, text
        assert len(client.headers) == 1


async def test_unknown_first_level_elements_get_unsupported_stanza_type(srv: RunningServer) -> None:
    """4.9.3.24: a first-level child the server does not understand, before and after authentication."""
    client = await Client.connect(srv)
    await client.open()
    client.send("<foo xmlns='urn:example:unknown'/>")
    assert await client.stream_error() == "unsupported-stanza-type"

    client = await Client.bound(srv)
    client.send("<message xmlns='jabber:server' to='bob@localhost'><body>wrong namespace</body></message>")
    assert await client.stream_error() == "unsupported-stanza-type"


async def test_whitespace_keepalives_and_the_closing_handshake(srv: RunningServer) -> None:
    """4.6.1: whitespace between stanzas is ignored; 4.4: </stream:stream> is answered with the closing tag,
    then the server closes the TCP connection."""
    client = await Client.bound(srv)
    client.send(" \n\t ")
    await client.silence(0.3)
    pong = await client.ask("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert pong.get("type") == "result"
    client.send("</stream:stream>")
    await client.closed()
    assert client.raw.endswith(b"</stream:stream>")


async def test_stanzas_before_authentication_get_not_authorized(srv: RunningServer) -> None:
    """4.9.3.12: stanzas need an authenticated stream; 7.1: and a bound resource first."""
    client = await Client.secured(srv)
    client.send("<message to='bob@localhost'><body>too early</body></message>")
    assert await client.stream_error() == "not-authorized"

    client = await Client.authenticated(srv)
    client.send("<message to='bob@localhost'><body>not bound yet</body></message>")
    assert await client.stream_error() == "not-authorized"
